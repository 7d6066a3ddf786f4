"""A folder with every kind of bad file the issue names, generated here, through `check`,
`train`, `evaluate` and `predict`: each behaves as a user would want, none prints a
traceback, each skipped file is named on its own line."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli import main

TRAIN = ["--model", "conv4k3-pool2-dense8", "--img-size", "16", "--epochs", "1",
         "--batch-size", "8", "--no-plots", "--device", "cpu", "--val-fraction", "0.2",
         "--test-fraction", "0.2"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _noise(rng: np.random.Generator, size: int = 16) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _corpus(root: Path) -> dict[str, str]:
    """Good images in two classes, plus each hostile kind; returns name -> what it is."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            _noise(rng).save(root / cls / f"good{i}.png")
    cat, dog = root / "cat", root / "dog"
    (cat / "empty.png").write_bytes(b"")
    good = (cat / "good0.png").read_bytes()
    (cat / "cut.png").write_bytes(good[: len(good) // 2])
    (cat / "noise.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (cat / "huge.png").write_bytes(_png_header(30000, 30000))
    (cat / "big.png").write_bytes(_png_header(10000, 9000))  # Pillow warns, under 2x its limit
    Image.new("L", (1, 100_000)).save(dog / "long.png")  # 277 bytes; 3.2 Mpx at 32 px
    (cat / "self").symlink_to(".")
    (cat / "loop.png").symlink_to("loop.png")
    (dog / "gone.png").symlink_to("nowhere.png")
    with open(os.path.join(os.fsencode(cat), b"caf\xe9.png"), "wb") as fh:
        _noise(rng).save(fh, format="PNG")
    _noise(rng).save(dog / "really_png.jpg", format="PNG")  # wrong extension: still decodes
    Image.new("CMYK", (16, 16), (0, 128, 128, 0)).save(dog / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65536, (16, 16))).astype(np.uint16)).save(dog / "deep.png")
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(dog / "palette.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    _noise(rng, 16).resize((24, 16)).save(dog / "rotated.jpg", exif=exif)
    frames = [_noise(rng) for _ in range(3)]
    frames[0].save(dog / "anim.gif", save_all=True, append_images=frames[1:])
    _noise(rng).save(dog / "two\nlines.png")
    return {"empty.png": "empty file", "cut.png": "cannot decode", "noise.png": "not an image",
            "huge.png": "too many pixels", "big.png": "too many pixels",
            "long.png": "too elongated", "loop.png": "loops", "gone.png": "points nowhere",
            "caf\udce9.png": "not valid UTF-8"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("hostile") / "data"
    return root, _corpus(root)


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err and "Error:" not in err.replace("error:", "")
    assert "DecompressionBombWarning" not in err  # Pillow's own warning, raw


def test_check_names_every_bad_file_and_keeps_the_good(corpus, capsys) -> None:
    root, bad = corpus
    assert main(["check", str(root), "--img-size", "16", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    reasons = {Path(u["path"]).name: u["reason"] for u in doc["unreadable"]}
    assert set(reasons) == set(bad)
    for name, why in bad.items():
        assert why in reasons[name], (name, reasons[name])
    assert doc["counts"] == {"all": {"cat": 10, "dog": 17}}
    links = [f for f in doc["findings"] if "folder link" in f["what"]]
    assert [Path(p).name for p in links[0]["files"]] == ["self"]
    assert {"CMYK", "I;16", "P", "RGB"} <= set(doc["modes"])


def test_train_evaluate_and_predict_skip_each_bad_file_with_one_line(corpus, tmp_path: Path,
                                                                     capsys) -> None:
    root, bad = corpus
    out = tmp_path / "runs"
    assert main(["train", str(root), *TRAIN, "--out", str(out), "--name", "r"]) == 0
    err = capsys.readouterr().err
    _no_traceback(err)
    for name in bad:
        shown = repr(name)[1:-1]  # as quoted in messages: caf\udce9.png, escapes visible
        assert sum(shown in line for line in err.splitlines()) >= 1, (name, err)
    assert "two\\nlines.png" in err or "two\nlines" not in err  # a newline never splits a line
    split = json.loads((out / "r" / "split.json").read_text())
    used = [Path(p) for part in ("train", "val", "test") for p, _ in split.get(part, [])]
    assert len(set(used)) == 27 and not {p.name for p in used} & set(bad)
    assert "two\nlines.png" in {p.name for p in used}  # an odd name is still a good image

    assert main(["evaluate", str(out / "r"), str(root)]) == 0
    _no_traceback(capsys.readouterr().err)

    assert main(["predict", str(out / "r"), str(root), "--format", "json"]) == 0
    captured = capsys.readouterr()
    _no_traceback(captured.err)
    answers = json.loads(captured.out)
    predicted = {Path(p["path"]) for p in answers if "error" not in p}
    assert len(predicted) == 27 and not {p.name for p in predicted} & set(bad)
    refused = {Path(p["path"]).name: p["error"] for p in answers if "error" in p}
    assert refused and set(refused) <= set(bad)  # each bad file that was read: its own error
    assert all(p["error"] and "label" not in p for p in answers if "error" in p)


def test_data_info_counts_the_usable_images(corpus, capsys) -> None:
    root, bad = corpus
    assert main(["data", "info", str(root)]) == 0
    captured = capsys.readouterr()
    _no_traceback(captured.err)
    assert "27" in captured.out.split("total")[-1]
    for name in bad:  # each named on a warning line
        assert repr(name)[1:-1] in captured.err, (name, captured.err)


def test_a_tree_1100_folders_deep_is_checked_and_trained_on(tmp_path: Path, nested_folders,
                                                            capsys) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for cls in ("cat", "dog"):
        for i in range(5):
            (root / cls).mkdir(parents=True, exist_ok=True)
            _noise(rng).save(root / cls / f"{i}.png")
    _noise(rng).save(nested_folders(root / "cat", 1100) / "deep.png")
    assert main(["check", str(root), "--img-size", "16", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"all": {"cat": 6, "dog": 5}}
    assert main(["train", str(root), *TRAIN, "--out", str(tmp_path / "runs"), "--name",
                 "r"]) == 0
    _no_traceback(capsys.readouterr().err)
    split = json.loads((tmp_path / "runs" / "r" / "split.json").read_text())
    assert "deep.png" in {Path(p).name for part in ("train", "val", "test")
                          for p, _ in split.get(part, [])}


def test_check_calls_links_within_the_data_folder_inside_it(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "data"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            _noise(rng).save(root / cls / f"{i}.png")
    (root / "cat" / "dogs").symlink_to("../dog")
    (root / "cat" / "all").symlink_to("..")
    assert main(["check", str(root), "--img-size", "16", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert not [f for f in doc["findings"] if "outside" in f["what"]]
    assert doc["counts"] == {"all": {"cat": 3, "dog": 3}}
