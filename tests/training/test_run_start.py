"""A new run's folder: made under --out with the name asked for, or a line says why not."""

from __future__ import annotations

from pathlib import Path

import pytest

import cnnkit

TINY = {"model": "lenet5", "epochs": 1, "plots": False, "device": "cpu", "img_size": 16}


def test_a_name_that_is_taken_is_said(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """--name exp1 twice: the second run went to exp1-2 with only 'run: .../exp1-2' to
    say so, and a script's `cnnkit evaluate runs/exp1` then measured the first run."""
    data = "shapes:count=30,size=16"
    first = cnnkit.train(data, out=str(tmp_path), name="exp1", **TINY)
    capsys.readouterr()
    second = cnnkit.train(data, out=str(tmp_path), name="exp1", **TINY)
    assert (first.run_dir.name, second.run_dir.name) == ("exp1", "exp1-2")
    err = capsys.readouterr().err
    assert f"--name 'exp1' is taken in {tmp_path}: this run is {second.run_dir}" in err
    third = cnnkit.train(data, out=str(tmp_path), name="a/b", **TINY)
    assert third.run_dir.name == "a-b"
    assert f"--name 'a/b' is not a plain folder name: this run is {third.run_dir}" in \
        capsys.readouterr().err
