"""The learning-rate range test (Smith 2015; fastai's ``lr_find``).

A short run whose learning rate grows exponentially from ``start`` to ``end``, one step
per batch, on the training split with the run's own optimizer, loss and augmentation.
The loss is smoothed (an exponential moving average with bias correction) and the test
stops once it diverges (four times the best smoothed loss). Two suggestions come from
the curve: *steepest*, where the loss falls fastest against log(lr), and *valley*, a
point two thirds into the longest stretch of falling loss (fastai's default since
2.5). The model's weights, the random state and the data cache are left as they were.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.data.loader import BatchLoader
from cnnkit.data.sources import Splits
from cnnkit.runtime.inference import autocast
from cnnkit.training.optim import build_optimizer, set_lr
from cnnkit.training.recipe import Plan
from cnnkit.training.transfer import phases

SUGGESTIONS = ("valley", "steepest")
# Which suggestion ``train --lr find`` takes (chosen by measurement: docs/design-notes.md,
# "The learning-rate finder's suggestion").
TRAIN_PICK = "steepest"


@dataclass(frozen=True)
class LRFinding:
    """What the range test saw: the rates tried, raw and smoothed losses, and suggestions."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    steepest: float
    valley: float
    diverged: bool

    def suggestion(self, which: str = TRAIN_PICK) -> float:
        if which not in SUGGESTIONS:
            raise CnnkitError(f"The finder suggests {' or '.join(SUGGESTIONS)}. "
                              f"Received: {which!r}")
        return self.valley if which == "valley" else self.steepest

    def to_dict(self) -> dict[str, Any]:
        return {"steepest": self.steepest, "valley": self.valley, "diverged": self.diverged,
                "lrs": list(self.lrs), "losses": list(self.losses),
                "smoothed": list(self.smoothed)}


def find_lr(plan: Plan, model: nn.Module, splits: Splits, *, start: float = 1e-7,
            end: float = 10.0, steps: int = 100, beta: float = 0.98,
            class_weights: torch.Tensor | None = None) -> LRFinding:
    """Run the range test on a copy of ``model`` (the original is not touched)."""
    if plan.config.mode == "features":
        raise CnnkitError("--mode features fits its head in one solve, with no learning rate "
                          "to find; use --mode fine-tune or scratch.")
    if not 0 < start < end:
        raise CnnkitError(f"The finder needs 0 < start < end. Received: {start:g}, {end:g}")
    if steps < 10:
        raise CnnkitError(f"The finder needs at least 10 steps. Received: {steps}")
    cfg = plan.config
    device = plan.device
    torch_state = torch.get_rng_state()
    work = copy.deepcopy(model).to(device)
    if plan.channels_last:
        work = work.to(memory_format=torch.channels_last)
    phase = phases(plan)[-1]
    groups = phase.prepare(work)
    from cnnkit.training.loop import set_train_mode

    set_train_mode(work, phase.bn_eval)
    optimizer = build_optimizer(groups, cfg.optimizer, start, device)
    weight = None if class_weights is None else class_weights.to(device)
    loader = BatchLoader(splits.train, plan.pre, cfg.batch_size, device, train=True,
                         augment=plan.augment,
                         generator=torch.Generator().manual_seed(cfg.seed + 7),
                         channels_last=plan.channels_last)
    ratio = (end / start) ** (1 / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    try:
        while len(lrs) < steps and not diverged:
            for x, y in loader:
                lr = start * ratio ** len(lrs)
                set_lr(optimizer, lr)
                optimizer.zero_grad(set_to_none=True)
                with autocast(device, cfg.precision):
                    logits = work(x)
                loss = F.cross_entropy(logits.float(), y, weight=weight,
                                       label_smoothing=cfg.label_smoothing)
                loss.backward()
                optimizer.step()
                value = loss.item()
                if not math.isfinite(value):
                    diverged = True
                    break
                average = beta * average + (1 - beta) * value
                smooth = average / (1 - beta ** (len(lrs) + 1))
                lrs.append(lr)
                losses.append(value)
                smoothed.append(smooth)
                best = min(best, smooth)
                if smooth > 4 * best:
                    diverged = True
                    break
                if len(lrs) >= steps:
                    break
    finally:
        torch.set_rng_state(torch_state)
        del work, optimizer
    if len(lrs) < 10:
        raise CnnkitError(f"The loss diverged after {len(lrs)} steps of the finder, at a "
                          f"rate of {lrs[-1] if lrs else start:.2g}; pass a smaller start.")
    steepest, valley = suggest(lrs, smoothed)
    return LRFinding(tuple(lrs), tuple(losses), tuple(smoothed), steepest, valley, diverged)


def suggest(lrs: list[float], losses: list[float]) -> tuple[float, float]:
    """(steepest, valley) from a smoothed curve, skipping its noisy first tenth and its
    last five points as fastai does."""
    n = len(lrs)
    lo, hi = n // 10, max(n // 10 + 3, n - 5)
    x = np.log(np.asarray(lrs[lo:hi]))
    y = np.asarray(losses[lo:hi])
    grads = np.diff(y) / np.diff(x)
    steepest = float(np.exp(x[int(np.argmin(grads))]))
    # valley: the longest decreasing subsequence; the point 2/3 of the way through it
    m = len(y)
    run = [1] * m
    start_at, end_at = 0, 0
    for i in range(1, m):
        for j in range(i):
            if y[i] < y[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[end_at] < run[i]:
            end_at = i
            start_at = end_at - run[end_at]
    third = (end_at - start_at) / 3
    idx = min(m - 1, max(0, start_at + int(third) + int(third / 2)))
    valley = float(np.exp(x[idx]))
    return steepest, valley


def plot_finding(finding: LRFinding, path: str | Path, title: str = "") -> Path:
    """The smoothed loss against the learning rate (log axis), suggestions marked."""
    from cnnkit.inspect.figures import new_figure, save

    fig = new_figure(7.5, 4.6)
    ax = fig.subplots()
    ax.plot(finding.lrs, finding.losses, color="lightgrey", lw=0.8, label="loss per batch")
    ax.plot(finding.lrs, finding.smoothed, color="tab:blue", label="smoothed loss")
    lrs = np.asarray(finding.lrs)
    for name, lr, colour in (("steepest", finding.steepest, "tab:red"),
                             ("valley", finding.valley, "tab:green")):
        y = float(np.interp(np.log(lr), np.log(lrs), np.asarray(finding.smoothed)))
        ax.plot([lr], [y], "o", color=colour, ms=8, label=f"{name}: {lr:.2g}")
    ax.set_xscale("log")
    top = max(finding.smoothed[: max(1, len(finding.smoothed) // 10)]) * 1.3
    ax.set_ylim(min(finding.smoothed) * 0.9, max(top, min(finding.smoothed) * 1.5))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    stop = "stopped when the loss diverged" if finding.diverged else "full range"
    ax.set_title(title or f"Learning-rate range test ({len(lrs)} steps, {stop})")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def report(finding: LRFinding) -> None:
    log.info(f"lr-find: steepest descent at {finding.steepest:.3g}, valley at "
             f"{finding.valley:.3g} ({len(finding.lrs)} steps"
             + (", stopped at divergence)" if finding.diverged else ")"))
