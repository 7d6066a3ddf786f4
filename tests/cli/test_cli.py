"""The command line: predict and evaluate output, and one-line messages for mistakes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnkit
from cnnkit.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return cnnkit.train("shapes:count=60,size=16", model="conv8k3-pool2-dense16", epochs=1,
                        out=str(out), plots=False, device="cpu").run_dir


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for sub in ("a", "b"):
        (root / sub).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
                root / sub / f"{i}.png")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._0.png").write_bytes(b"resource fork")
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_json_has_one_row_per_file_with_its_path(run: Path, photos: Path,
                                                         capsys) -> None:
    code, out, _ = _run(capsys, "predict", str(run), str(photos / "a" / "0.png"),
                        str(photos / "b"), "--format", "json", "--top-k", "2", "--device", "cpu")
    assert code == 0
    rows = json.loads(out)
    assert [Path(r["path"]).name for r in rows] == ["0.png", "0.png", "1.png"]
    assert all(len(r["top"]) == 2 and r["label"] in ("circle", "square", "triangle")
               for r in rows)
    assert all(abs(sum(t["probability"] for t in r["top"]) - 1) < 1 for r in rows)


def test_predict_csv_and_globs_skip_hidden_files(run: Path, photos: Path, capsys) -> None:
    code, out, _ = _run(capsys, "predict", str(run), str(photos / "**" / "*.png"),
                        "--format", "csv", "--device", "cpu")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:5] == ["path", "label", "probability", "label1", "prob1"]
    assert len(rows) == 1 + 4  # the __MACOSX file is not an image of the set
    assert not any("__MACOSX" in r[0] for r in rows)


def test_predict_table(run: Path, photos: Path, capsys) -> None:
    code, out, _ = _run(capsys, "predict", str(run), str(photos / "a"), "--device", "cpu")
    assert code == 0 and "0.png" in out and "%" in out


def test_evaluate_prints_every_metric(run: Path, capsys) -> None:
    code, out, _ = _run(capsys, "evaluate", str(run), "shapes:count=60,size=16",
                        "--device", "cpu")
    assert code == 0
    for word in ("accuracy", "precision", "recall", "f1", "circle", "triangle"):
        assert word in out, word
    assert "top-3" not in out  # of 3 classes: 100% whatever the model


MISTAKES = [
    (["train", "no/such/folder"], "Data not found"),
    (["train", "shapes", "--model", "resnet-9000"], "Unknown model"),
    (["train", "shapes", "--epochs", "0"], "--epochs must be positive"),
    (["train", "shapes", "--config", "missing.yaml"], "Config file not found"),
    (["evaluate", "."], "is not a cnnkit run"),
    (["predict", "no-such-run", "x.png"], "Image not found"),
    (["predict", "efficientnet_lite0", "missing.png"], "Image not found"),
    (["train", "shapes", "--bogus-option"], "No such option"),
    (["predict"], "Missing argument"),
]


@pytest.mark.parametrize(("argv", "words"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_mistakes_get_one_line_and_a_nonzero_exit(argv: list[str], words: str, capsys,
                                                  tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0
    assert len(lines) == 1, err
    assert words in lines[0]
    assert "Traceback" not in err + out


def test_folder_mistakes(tmp_path: Path, capsys) -> None:
    (tmp_path / "one" / "cats").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "cats" / "a.png")
    code, _, err = _run(capsys, "train", str(tmp_path / "one"))
    assert code == 2 and "only one class" in err
    (tmp_path / "one" / "dogs").mkdir()
    code, _, err = _run(capsys, "train", str(tmp_path / "one"))
    assert code == 2 and "dogs" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.png").write_bytes(b"not an image")
    code, _, err = _run(capsys, "predict", "efficientnet_lite0", str(tmp_path / "bad.png"))
    assert code == 2 and "bad.png" in err and "Traceback" not in err


def test_the_installed_command_exits_cleanly_on_a_mistake(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cnnkit", "evaluate", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "not a cnnkit run" in out.stderr
