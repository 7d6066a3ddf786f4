"""--ema: the weight average is what is validated, saved, tested and resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.training.ema import WeightAverage, ramped_decay

OPTIONS = {"model": "conv4k3-pool2-drop0.3-dense8", "epochs": 3, "batch_size": 16,
           "augment": "flip", "plots": False, "device": "cpu", "ema": 0.9}
DATA = "shapes:size=12,count=60"


def test_the_decay_ramps_up_to_the_one_asked_for() -> None:
    assert ramped_decay(0.999, 0) == pytest.approx(0.1)
    assert ramped_decay(0.999, 90) == pytest.approx(0.91)  # about the last 10 steps of 90
    assert ramped_decay(0.999, 8990) == pytest.approx(0.999)
    assert ramped_decay(0.999, 50_000) == 0.999
    assert ramped_decay(0.5, 3) == pytest.approx(4 / 13) and ramped_decay(0.5, 8) == 0.5


def test_the_average_follows_recent_weights_not_the_start() -> None:
    # A weight moving steadily from 0 to 1 over 100 steps, as a short scratch run does:
    # the average must sit near the recent values (a mean of every step would be 0.5).
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.99)
    for step in range(1, 101):
        with torch.no_grad():
            model.weight.fill_(step / 100)
        average.update(model)
    assert 0.85 < average.module.weight.item() < 0.95
    assert average.steps == 100
    assert model.weight.item() == 1.0  # the trained weights are untouched


def test_one_update_at_a_fixed_decay() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(4.0)
    average = WeightAverage(model, decay=0.5, steps=100)  # past the ramp: decay 0.5
    with torch.no_grad():
        model.weight.fill_(6.0)
    average.update(model)
    assert average.module.weight.item() == pytest.approx(5.0)


def _train(tmp_path: Path, name: str, **extra) -> cnnkit.TrainResult:
    return cnnkit.train(DATA, out=str(tmp_path / "runs"), name=name, **{**OPTIONS, **extra})


def test_the_saved_model_is_the_average_and_the_checkpoint_keeps_both(tmp_path: Path) -> None:
    result = _train(tmp_path, "ema", keep_checkpoint=True)
    saved = load_file(result.run_dir / "model.safetensors")
    ckpt = load_file(result.run_dir / "checkpoints" / "last.safetensors")
    weight = next(k for k in saved if k.endswith("weight"))
    assert torch.equal(saved[weight], ckpt[f"ema.{weight}"])
    assert not torch.equal(saved[weight], ckpt[f"model.{weight}"])  # averaged, not the last step
    plain = _train(tmp_path, "plain", ema=0.0, keep_checkpoint=True)
    plain_ckpt = load_file(plain.run_dir / "checkpoints" / "last.safetensors")
    assert not any(k.startswith("ema.") for k in plain_ckpt)
    # the live weights trained exactly as without --ema: averaging only reads them
    assert torch.equal(plain_ckpt[f"model.{weight}"], ckpt[f"model.{weight}"])


def test_a_resumed_run_continues_the_average(tmp_path: Path) -> None:
    whole = _train(tmp_path, "whole")

    def stop_after_first(trainer, row) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "stopped", callbacks=[stop_after_first])
    resumed = cnnkit.resume(tmp_path / "runs" / "stopped")
    a = load_file(resumed.run_dir / "model.safetensors")
    b = load_file(whole.run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test.to_dict() == whole.test.to_dict()


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_a_decay_outside_zero_to_one_is_refused(decay: float) -> None:
    with pytest.raises(CnnkitError, match="--ema takes the decay"):
        cnnkit.TrainConfig(data="x", ema=decay)


def test_ema_with_the_features_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="--mode features has none"):
        cnnkit.train(DATA, model="efficientnet_lite0", mode="features", ema=0.999,
                     out=str(tmp_path / "runs"), device="cpu", plots=False)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
