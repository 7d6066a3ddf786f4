"""--init-from RUN: a run starts from a finished run's weights (the features -> fine-tune
recipe), its classes checked against the data's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main

DATA = "shapes:count=60,size=32"
FAST = {"img_size": 32, "plots": False, "device": "cpu", "seed": 0}


def test_features_then_fine_tune_from_it(tmp_path: Path, capsys) -> None:
    first = cnnkit.train(DATA, model="efficientnet_lite0", mode="features", epochs=1,
                         out=str(tmp_path), name="features", **FAST)
    second = cnnkit.train(DATA, mode="fine-tune", init_from=str(first.run_dir), epochs=1,
                          batch_size=16, out=str(tmp_path), name="tuned",
                          **{**FAST, "img_size": None, "plots": True})
    out = capsys.readouterr().out
    assert f"init: the weights of {first.run_dir} (features of efficientnet_lite0)" in out
    config = json.loads((second.run_dir / "config.json").read_text())
    assert config["init_from"] == str(first.run_dir) and config["model"] == "efficientnet_lite0"
    assert config["probe"] is False and config["head_epochs"] == 0  # its head is trained
    phases = json.loads((second.run_dir / "phases.json").read_text())
    assert [p["name"] for p in phases] == ["fine-tune"]
    # same architecture (the features run's tapped backbone), weights moved on from it
    a = load_file(first.run_dir / "model.safetensors")
    b = load_file(second.run_dir / "model.safetensors")
    assert a.keys() == b.keys()
    assert not all(torch.equal(a[k], b[k]) for k in a)
    html = (second.run_dir / "report.html").read_text()
    assert "Started from the weights of the run" in html and str(first.run_dir) in html


def test_a_scratch_run_continues_from_another(tmp_path: Path) -> None:
    first = cnnkit.train(DATA, model="seed-cnn", epochs=1, out=str(tmp_path), name="a", **FAST)
    second = cnnkit.train(DATA, init_from=str(first.run_dir), epochs=1, lr=1e-9,
                          schedule="constant", out=str(tmp_path), name="b", **FAST)
    a = load_file(first.run_dir / "model.safetensors")
    b = load_file(second.run_dir / "model.safetensors")
    # at a rate of 1e-9 one epoch leaves the first run's weights (nearly) as they were
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    card = json.loads((second.run_dir / "model.json").read_text())
    assert card["input"] == json.loads((first.run_dir / "model.json").read_text())["input"]


def test_mistakes_with_init_from(tmp_path: Path, capsys) -> None:
    first = cnnkit.train(DATA, model="seed-cnn", epochs=1, out=str(tmp_path), name="a", **FAST)
    with pytest.raises(CnnkitError, match=r"other classes .*the data adds 0, 1"):
        cnnkit.train("digits", init_from=str(first.run_dir), epochs=1, out=str(tmp_path),
                     **{**FAST, "img_size": None, "channels": None})
    for argv, message in (
            (["--model", "lenet5"], "Drop --model"),
            (["--img-size", "64"], "drop --img-size"),
            (["--mode", "features"], "--weights"),
            (["--weights", str(first.run_dir / "model.safetensors")], "pass one of them")):
        code = main(["train", DATA, "--init-from", str(first.run_dir), "--out",
                     str(tmp_path / "no"), *argv])
        assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    code = main(["train", DATA, "--init-from", str(tmp_path / "nowhere")])
    assert code == 2 and "Not found" in capsys.readouterr().err
