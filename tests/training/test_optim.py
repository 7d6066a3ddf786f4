"""Learning-rate schedules and parameter groups: pure functions of the step."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn

from cnnkit.base.errors import CnnkitError
from cnnkit.training.optim import lr_factor, param_groups, warmup_fraction
from cnnkit.training.step import build_optimizer


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_schedules_warm_up_then_settle(schedule: str) -> None:
    warm = warmup_fraction(schedule)
    total = 1000
    factors = [lr_factor(s, total, schedule, warm) for s in range(total + 1)]
    peak = int(warm * total)
    assert max(factors) == pytest.approx(1.0, abs=1e-3)
    assert factors[0] < 0.05  # starts low
    assert all(a <= b + 1e-12 for a, b in pairwise(factors[:peak + 1]))  # warm-up
    if schedule == "constant":
        assert factors[-1] == 1.0
    else:
        assert factors[-1] < 1e-3  # annealed
        after = factors[peak:]
        assert all(a >= b - 1e-12 for a, b in pairwise(after))


def test_onecycle_matches_pytorchs_defaults() -> None:
    assert lr_factor(0, 100, "onecycle", 0.25) == pytest.approx(1 / 25)
    assert lr_factor(25, 100, "onecycle", 0.25) == pytest.approx(1.0)
    assert lr_factor(100, 100, "onecycle", 0.25) == pytest.approx(1e-4)


def test_weights_decay_but_biases_and_norms_do_not() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = param_groups(model.named_parameters(), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4}
    assert {p.ndim for p in no_decay["params"]} == {1}


def test_nothing_to_train_is_a_clear_error() -> None:
    layer = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(CnnkitError, match="Nothing to train"):
        build_optimizer(param_groups(layer.named_parameters(), 0.0), "adamw", 1e-3,
                        torch.device("cpu"))
