"""A run whose loss stops being a number stops there, says where and why, and keeps the
last model saved before it (never a NaN one)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.training.divergence import finite_weights

TINY = "shapes:size=12,count=60"
OPTIONS = {"model": "conv4k3-pool2-dense8", "batch_size": 16, "plots": False,
           "device": "cpu", "keep": "last"}


def test_a_rate_that_diverges_stops_at_its_step_with_one_line(tmp_path: Path, capsys) -> None:
    """--lr 1000 trained on to chance accuracy and ended as if fine."""
    code = main(["train", TINY, "-m", OPTIONS["model"], "-b", "16", "-e", "3", "--lr", "1000",
                 "--schedule", "constant", "--device", "cpu", "--no-plots",
                 "--out", str(tmp_path), "--name", "r"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert re.match(r"error: The training loss became (nan|inf) at epoch [123], step [123] of "
                    r"3: the learning rate 1000 is likely too high; lower --lr \(now 1000\): "
                    r"try --lr find, or a rate 10x smaller \(--lr 100\)\. Training stopped; ",
                    err), err
    model = tmp_path / "r" / "model.safetensors"
    assert model.exists() == (f"is kept ({model})" in err)
    if model.exists():  # never a model with NaN weights
        assert all(torch.isfinite(t).all() for t in load_file(str(model)).values())


def test_a_run_that_diverges_in_its_first_epoch_saves_no_model(tmp_path: Path,
                                                              monkeypatch) -> None:
    from cnnkit.training import loop
    from cnnkit.training.step import TrainStep

    class Overflows(TrainStep):  # the second step's loss is nan
        calls = 0

        def __call__(self, x, y, lr=None):
            logits, loss = super().__call__(x, y, lr)
            Overflows.calls += 1
            return logits, loss * math.nan if Overflows.calls == 2 else loss

    monkeypatch.setattr(loop, "TrainStep", Overflows)
    with pytest.raises(CnnkitError) as caught:
        cnnkit.train(TINY, epochs=2, out=str(tmp_path), name="r", **OPTIONS)
    assert str(caught.value).startswith("The training loss became nan at epoch 1, step 2 of 3: "
                                        "the learning rate ")
    assert str(caught.value).endswith("Training stopped; no epoch had finished, so no model "
                                      "was saved.")
    assert Overflows.calls == 2  # stopped at once, not at the end of the epoch
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_a_run_that_diverges_later_keeps_the_last_good_model(tmp_path: Path) -> None:
    saved: dict[str, torch.Tensor] = {}

    def blow_up(trainer, row) -> None:  # after epoch 1 is saved: its next step overflows
        if row["epoch"] == 1:
            saved.update(load_file(str(trainer.run.model_path)))
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(1e38)

    with pytest.raises(CnnkitError) as caught:
        cnnkit.train(TINY, epochs=3, out=str(tmp_path), name="r", callbacks=[blow_up],
                     **OPTIONS)
    message = str(caught.value)
    assert " at epoch 2, step 1 of 3: " in message
    model = tmp_path / "r" / "model.safetensors"
    assert f"the model of epoch 1 is kept ({model})" in message
    kept = load_file(str(model))
    assert kept.keys() == saved.keys()
    assert all(torch.equal(kept[k], saved[k]) for k in kept)
    assert all(torch.isfinite(t).all() for t in kept.values())


def test_non_finite_weights_are_seen() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert finite_weights(model)
    model[1].running_var.fill_(math.nan)  # a buffer: normalisation goes wrong too
    assert not finite_weights(model)
