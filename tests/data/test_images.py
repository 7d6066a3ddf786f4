"""Image files: formats, colour modes, EXIF, hidden files, corrupt files, the decode cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import cache
from cnnkit.data.decode import CorruptImageError, decode
from cnnkit.data.folders import list_class_folders
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.sources import load_splits


def _rgb(size: int = 20) -> Image.Image:
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[:, : size // 2] = (200, 40, 10)  # red left half
    return Image.fromarray(arr)


@pytest.mark.parametrize("suffix", ["jpg", "png", "bmp", "webp", "gif", "tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_format_arrives_with_the_models_channels(tmp_path: Path, suffix: str,
                                                       channels: int) -> None:
    path = tmp_path / f"x.{suffix}"
    _rgb().save(path)
    arr = decode(str(path), channels, 16)
    assert arr.shape == (16, 16, channels) and arr.dtype == np.uint8
    if channels == 3:
        assert arr[8, 2, 0] > 150 and arr[8, 13, 0] < 60  # left half still red


def test_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    arr = decode(str(tmp_path / "a.gif"), 3, 8)
    assert arr[..., 0].mean() > 200 and arr[..., 2].mean() < 50


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_every_colour_mode(tmp_path: Path, mode: str) -> None:
    img = _rgb().convert("RGBA" if mode in ("RGBA", "LA") else "RGB")
    if mode == "I;16":
        grey = (np.asarray(img.convert("L")).astype(np.uint16) * 257)  # full 16-bit range
        img = Image.fromarray(grey)  # uint16 -> mode I;16
    else:
        img = img.convert(mode)
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    img.save(path)
    for channels in (1, 3):
        arr = decode(str(path), channels, 20)
        assert arr.shape == (20, 20, channels)
        if mode != "1":
            # The red half is brighter than the black half, in every mode.
            assert arr[:, :10].mean() > arr[:, 10:].mean() + 20


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr16 = np.full((8, 8), 32768, dtype=np.uint16)  # half of the 16-bit range
    Image.fromarray(arr16).save(tmp_path / "h.png")
    out = decode(str(tmp_path / "h.png"), 1, 8)
    assert 120 <= int(out.mean()) <= 135


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # white left square
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    arr = decode(str(tmp_path / "r.jpg"), 1, 20)
    # After rotation the image is portrait; squashed to a square, the white half is on top.
    assert arr[:8].mean() > 200 and arr[-8:].mean() < 50


def test_hidden_files_and_folders_are_never_classes(tmp_path: Path) -> None:
    for cls in ("cat", "dog", ".hidden", "__MACOSX", ".ipynb_checkpoints"):
        (tmp_path / cls).mkdir()
        _rgb().save(tmp_path / cls / "a.png")
    _rgb().save(tmp_path / "cat" / ".b.png")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0\0")
    listing = list_class_folders(tmp_path)
    assert listing.classes == ("cat", "dog")
    assert sorted(Path(p).name for p in listing.paths) == ["a.png", "a.png"]


def _tree(root: Path, per_class: int) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            _rgb().save(root / cls / f"{i}.png")
    return root


def _digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_corrupt_images_are_skipped_named_and_left_alone(tmp_path: Path, capsys) -> None:
    root = _tree(tmp_path / "d", 4)
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    before = _digest(root)
    pre = Preprocess(16, 3, (0.5,) * 3, (0.5,) * 3)
    splits = load_splits(str(root), pre, val_fraction=0.0, test_fraction=0.0)
    assert len(splits.train) == 8
    out = capsys.readouterr()
    text = out.out + out.err
    assert "broken.jpg" in text and "empty.png" in text
    assert _digest(root) == before  # nothing written, renamed or touched
    with pytest.raises(CorruptImageError, match=r"broken\.jpg"):
        decode(str(root / "a" / "broken.jpg"), 3, 16)


def test_a_refused_image_is_not_called_corrupt(tmp_path: Path, capsys) -> None:
    root = _tree(tmp_path / "d", 4)
    Image.new("L", (6400, 20)).save(root / "a" / "strip.png")  # 320:1, past the 64:1 limit
    pre = Preprocess(16, 3, (0.5,) * 3, (0.5,) * 3)
    splits = load_splits(str(root), pre, val_fraction=0.0, test_fraction=0.0)
    assert len(splits.train) == 8
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "strip.png" in x)
    assert "refused" in line and "corrupt" not in line, line


def test_later_loads_open_no_image_file(tmp_path: Path, monkeypatch) -> None:
    root = _tree(tmp_path / "d", 5)
    pre = Preprocess(16, 3, (0.5,) * 3, (0.5,) * 3)
    first = load_splits(str(root), pre, val_fraction=0.0, test_fraction=0.0)
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    second = load_splits(str(root), pre, val_fraction=0.0, test_fraction=0.0)
    assert opened == []
    assert (first.train.images == second.train.images).all()
    # A changed file is decoded again.
    os.utime(root / "a" / "0.png", ns=(1, 1))
    load_splits(str(root), pre, val_fraction=0.0, test_fraction=0.0)
    assert opened
    assert cache.clear() > 0
