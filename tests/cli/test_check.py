"""`cnnkit check` through the real command: verdict, exit status, JSON."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from cnnkit.cli import main


def _tree(root: Path) -> Path:
    for split in ("train", "test"):
        for c, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (c * 100 + i * 10, i, 7 if split == "test" else 0)
                          ).save(root / split / cls / f"{i}.png")
    return root


def test_check_finds_a_planted_leak_and_exits_0(tmp_path: Path, capsys) -> None:
    root = _tree(tmp_path)
    (root / "test" / "cat" / "leak.png").write_bytes((root / "train" / "cat" / "1.png")
                                                     .read_bytes())
    assert main(["check", str(root), "--img-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "more than one of train/val/test" in out and "leak.png" in out
    assert "verdict: can be trained on" in out
    assert main(["check", str(root), "--img-size", "32", "--strict"]) == 2


def test_check_json_and_exit_2_when_it_cannot_be_trained_on(tmp_path: Path, capsys) -> None:
    root = _tree(tmp_path)
    for f in (root / "train" / "dog").iterdir():
        f.write_bytes(b"garbage")
    assert main(["check", str(root), "--format", "json", "--img-size", "32"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["trainable"] is False and doc["counts"]["train"] == {"cat": 3, "dog": 0}
    assert any(f["level"] == "problem" and "'dog'" in f["what"] for f in doc["findings"])
    assert len(doc["unreadable"]) == 3


def test_check_of_a_missing_folder_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: Data not found")


def test_a_negative_examples_is_refused(tmp_path: Path, capsys) -> None:
    """--examples -1 showed no file and said '... and 2 more' of a finding with one."""
    root = _tree(tmp_path)
    assert main(["check", str(root), "--img-size", "32", "--examples", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --examples is how many file names") and "-1" in err
    assert err.count("\n") == 1


def test_labels_and_near_refuse_multi_label_data_before_reading_it(tmp_path: Path, capsys,
                                                                    monkeypatch) -> None:
    """check fashion-mnist-mosaic --labels audited every image, printed nothing of it, then
    said the data was multi-label."""
    import cnnkit.data.audit

    def no_audit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was read")

    monkeypatch.setattr(cnnkit.data.audit, "audit", no_audit)
    folder = tmp_path / "tags"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(folder / f"{i}.png")
    (folder / "labels.csv").write_text("path,labels\n0.png,a|b\n1.png,a\n2.png,b\n3.png,\n")
    for data, flag in ((str(folder), "--labels"), ("fashion-mnist-mosaic:count=40", "--near")):
        assert main(["check", data, flag]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {data} is multi-label data") and flag in err
        assert err.count("\n") == 1
