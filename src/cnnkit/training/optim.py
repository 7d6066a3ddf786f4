"""Parameter groups and learning-rate schedules (pure functions of the step)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def param_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float,
                 lr_scale: float = 1.0) -> list[dict]:
    """Two groups: weights decay, biases and norm parameters (1-D) do not."""
    decay, no_decay = [], []
    for _, p in named:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale})
    return groups


# A trained start (the linear probe's head, an --init-from run) takes the full peak rate
# only in a run long enough to recover from the shake-up it gives; a shorter run peaks at
# a share of it that grows with its steps (docs/design-notes.md, "Fine-tuning from a
# trained start").
FULL_RATE_STEPS = 400
MIN_START_SHARE = 0.25


def trained_start_share(steps: int) -> float:
    """The share of the default peak rate for a run of ``steps`` from a trained start:
    a quarter up to 100 steps, rising in proportion to all of it at 400."""
    return min(1.0, max(MIN_START_SHARE, steps / FULL_RATE_STEPS))


def warmup_fraction(schedule: str, warmup_epochs: float | None = None, epochs: int = 1
                    ) -> float:
    """Share of a phase's steps spent warming up: ``warmup_epochs`` of its ``epochs`` (at
    most all of them), or by default the schedule's own (onecycle 25%, as PyTorch's
    OneCycleLR; cosine and constant 5%)."""
    if warmup_epochs is None:
        return 0.25 if schedule == "onecycle" else 0.05
    return min(warmup_epochs / max(epochs, 1), 1.0)


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total``.

    onecycle: cosine warm-up from 1/25 to 1 over the first ``warmup`` fraction, then
    cosine annealing to 1/10,000 (PyTorch's OneCycleLR defaults). cosine: linear
    warm-up from 0 (as timm's ``warmup_epochs``), then cosine to 0. constant: linear
    warm-up, then flat.
    """
    total = max(total, 1)
    t = min(step, total) / total
    if schedule == "onecycle":
        if warmup > 0 and t < warmup:
            return _cos(1 / 25, 1.0, t / warmup)
        return _cos(1.0, 1e-4, (t - warmup) / max(1 - warmup, 1e-8))
    if warmup > 0 and t < warmup:
        return t / warmup
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(1 - warmup, 1e-8)))
    return 1.0


def lr_points(epochs: int, lr: float, schedule: str, warmup: float,
              per_epoch: int = 50, limit: int = 500) -> dict[str, list[float]]:
    """A phase's learning rate against (fractional) epochs, as phases.json records it for
    the report's plot: the curve the loop follows, at most ``limit`` points."""
    total = max(1, min(epochs * per_epoch, limit))
    steps = range(total + 1)
    return {"epoch": [round(epochs * s / total, 4) for s in steps],
            "lr": [float(f"{lr * lr_factor(s, total, schedule, warmup):.6g}") for s in steps]}


def _cos(start: float, end: float, frac: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
