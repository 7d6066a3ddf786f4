"""The short data check at the start of `train`: warnings one line each, --no-check off."""

from __future__ import annotations

from pathlib import Path

import pytest

import cnnkit

OPTIONS = {"model": "conv4k3-pool2-dense8", "img_size": 16, "epochs": 1, "batch_size": 8,
           "plots": False, "device": "cpu"}


def test_train_warns_about_an_image_under_two_labels(make_tree, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = make_tree(tmp_path / "data", per_class=6, size=16)
    (data / "square" / "stray.png").write_bytes((data / "circle" / "001.png").read_bytes())
    cnnkit.train(str(data), out=str(tmp_path / "runs"), **OPTIONS)
    err = capsys.readouterr().err
    assert "data check: 1 image(s) appear under two or more labels" in err
    assert f"cnnkit check {data}" in " ".join(err.split())
    cnnkit.train(str(data), out=str(tmp_path / "runs"), check=False, **OPTIONS)
    assert "data check" not in capsys.readouterr().err
