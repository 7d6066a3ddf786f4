"""--ema: the weight average is what is validated, saved, tested and resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import cnnkit
from cnnkit.errors import CnnkitError
from cnnkit.training.ema import WeightAverage, ramped_decay

OPTIONS = {"model": "conv4k3-pool2-drop0.3-dense8", "epochs": 3, "batch_size": 16,
           "augment": "flip", "plots": False, "device": "cpu", "ema": 0.9}
DATA = "shapes:size=12,count=60"


def test_the_decay_ramps_from_a_copy_to_the_exponential_average() -> None:
    assert ramped_decay(0.999, 1) == 0.0  # the first step's weights, not a blend with the start
    assert ramped_decay(0.999, 4) == 0.75  # the plain mean of the 4 steps so far
    assert ramped_decay(0.999, 1000) == 0.999
    assert ramped_decay(0.999, 50_000) == 0.999


def test_the_average_is_the_mean_then_the_exponential_average() -> None:
    model = nn.Linear(1, 1, bias=False)
    average = WeightAverage(model, decay=0.5)
    seen = []
    for value in (4.0, 2.0, 6.0):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update(model)
        seen.append(value)
    # steps 1-2: the mean of (4, 2) = 3; step 3 at decay 0.5: 0.5 * 3 + 0.5 * 6 = 4.5
    assert average.module.weight.item() == pytest.approx(4.5)
    assert average.steps == 3
    assert model.weight.item() == 6.0  # the trained weights are untouched


def _train(tmp_path: Path, name: str, **extra) -> cnnkit.TrainResult:
    return cnnkit.train(DATA, out=str(tmp_path / "runs"), name=name, **{**OPTIONS, **extra})


def test_the_saved_model_is_the_average_and_the_checkpoint_keeps_both(tmp_path: Path) -> None:
    result = _train(tmp_path, "ema")
    saved = load_file(result.run_dir / "model.safetensors")
    ckpt = load_file(result.run_dir / "checkpoints" / "last.safetensors")
    weight = next(k for k in saved if k.endswith("weight"))
    assert torch.equal(saved[weight], ckpt[f"ema.{weight}"])
    assert not torch.equal(saved[weight], ckpt[f"model.{weight}"])  # averaged, not the last step
    plain = _train(tmp_path, "plain", ema=0.0)
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
