"""The learning-rate range test (Smith 2015; fastai's ``lr_find``).

A short run whose learning rate grows exponentially from ``start`` to ``end``, one step
per batch, on the training split with the run's own optimizer, loss and augmentation.
It stops once the loss diverges: its running average (an exponential moving average
over about ten steps) is four times its best, or twice where it started. The model's
weights, the random state and the data cache are left as they were.

The curve is then read without lag (a Gaussian smoothing centred on each point, a
quarter of a decade wide), and only up to its lowest point: the loss's rise begins
there, and no suggestion lies beyond it. The suggestions (docs/design-notes.md, "The
learning-rate finder", says which one ``train --lr find`` takes and why):

- *knee*: the lowest rate at which the smoothed loss has made 80% of its fall;
- *steepest*: where the smoothed loss falls fastest against log(lr);
- *valley*: two thirds into the longest stretch of falling loss (fastai's default);
- *minimum*: a tenth of the rate at the lowest point (fastai's ``minimum``).

A curve that is too short (few steps before its lowest point) or whose fall is small
against the batch-to-batch noise (few images, small batches) suggests nothing: the
finding says why in one line, and ``train --lr find`` keeps the default rate.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.base.errors import CnnkitError
from cnnkit.data.loader import BatchLoader
from cnnkit.data.sources import Splits
from cnnkit.training.distributed import broadcast
from cnnkit.training.recipe import Plan
from cnnkit.training.step import TrainStep

SUGGESTIONS = ("knee", "steepest", "valley", "minimum")
# Which suggestion ``train --lr find`` takes (chosen by measurement: docs/design-notes.md,
# "The learning-rate finder").
TRAIN_PICK = "knee"
BETA = 0.9  # the running average that decides divergence: about the last ten steps
SMOOTH_DECADES = 0.25  # the reading's Gaussian smoothing (its standard deviation)
KNEE_FALL = 0.8  # the knee: where the smoothed loss has made this share of its fall
MIN_POINTS = 20  # points before the lowest one (after the skipped first tenth)
MIN_SIGNAL = 8.0  # the fall against the uncertainty of the smoothed loss
MIN_FALL = 0.05  # the fall as a share of the starting loss


@dataclass(frozen=True)
class LRFinding:
    """What the range test saw: the rates tried, raw and smoothed losses, the rate at the
    lowest point (where the rise begins), the suggestions, and why none is trusted
    (``doubt``; None when the curve is clear)."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestions: dict[str, float]
    bottom: float
    diverged: bool
    doubt: str | None = None
    default: float | None = None  # the rate the run would use without the finder

    @property
    def trusted(self) -> bool:
        return self.doubt is None

    @property
    def steepest(self) -> float:
        return self.suggestions["steepest"]

    @property
    def valley(self) -> float:
        return self.suggestions["valley"]

    @property
    def knee(self) -> float:
        return self.suggestions["knee"]

    def suggestion(self, which: str = TRAIN_PICK) -> float | None:
        """The rate ``which`` suggests, or None when the curve is not to be trusted."""
        if which not in SUGGESTIONS:
            raise CnnkitError(f"The finder suggests {', '.join(SUGGESTIONS)}. "
                              f"Received: {which!r}")
        return self.suggestions[which] if self.trusted else None

    def to_dict(self) -> dict[str, Any]:
        return {**self.suggestions, "bottom": self.bottom, "default": self.default,
                "diverged": self.diverged,
                "trusted": self.trusted, "doubt": self.doubt, "lrs": list(self.lrs),
                "losses": list(self.losses), "smoothed": list(self.smoothed)}


def check_range(start: float, end: float, steps: int) -> None:
    """The test's range and length, checked before any data is loaded."""
    if not (math.isfinite(start) and math.isfinite(end) and 0 < start < end):
        raise CnnkitError("The finder needs finite rates with 0 < start < end (for example "
                          f"--start 1e-7 --end 10). Received: {start:g}, {end:g}")
    if steps < 10:
        raise CnnkitError(f"The finder needs at least 10 steps. Received: {steps}")


def find_lr(plan: Plan, model: nn.Module, splits: Splits, *, start: float = 1e-7,
            end: float = 10.0, steps: int = 100, class_weights: torch.Tensor | None = None
            ) -> LRFinding:
    """Run the range test on a copy of ``model`` (the original is not touched)."""
    if plan.config.mode == "features":
        raise CnnkitError("--mode features fits its head in one solve, with no learning rate "
                          "to find; use --mode fine-tune or scratch.")
    check_range(start, end, steps)
    cfg = plan.config
    device = plan.device
    torch_state = torch.get_rng_state()
    work = copy.deepcopy(model).to(device)
    if plan.channels_last:
        work = work.to(memory_format=torch.channels_last)
    step = TrainStep(plan, work, plan.phases[-1], class_weights=class_weights, lr=start)
    step.train()
    loader = BatchLoader(splits.train, plan.pre, cfg.batch_size, device, train=True,
                         augment=plan.augment,
                         generator=torch.Generator().manual_seed(cfg.seed + 7),
                         channels_last=plan.channels_last)
    ratio = (end / start) ** (1 / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    average, best, first, diverged = 0.0, math.inf, math.nan, False
    try:
        while len(lrs) < steps and not diverged:
            for x, y in loader:
                lr = start * ratio ** len(lrs)
                _, loss = step(x, y, lr)
                value = loss.item()
                if not math.isfinite(value):
                    diverged = True
                    break
                average = BETA * average + (1 - BETA) * value
                running = average / (1 - BETA ** (len(lrs) + 1))
                lrs.append(lr)
                losses.append(value)
                first = running if len(lrs) == 1 else first
                best = min(best, running)
                if running > min(4 * best, 2 * first):
                    diverged = True
                    break
                if len(lrs) >= steps:
                    break
    finally:
        torch.set_rng_state(torch_state)
        del work, step
    if len(lrs) < 10:
        raise CnnkitError(f"The loss diverged after {len(lrs)} steps of the finder, at a "
                          f"rate of {lrs[-1] if lrs else start:.2g}; pass a smaller start.")
    return replace(read_curve(lrs, losses, diverged), default=float(cfg.lr))


def run_rate(plan: Plan, model: nn.Module, splits: Splits,
             class_weights: torch.Tensor | None = None) -> tuple[Plan, LRFinding | None]:
    """--lr find in a run: rank 0's range test, whose suggestion becomes every rank's peak
    rate (the others get it from rank 0, and no finding); a curve too short or noisy to
    trust leaves the default rate."""
    finding = None
    lr = plan.config.lr
    if plan.cluster.writes:
        finding = find_lr(plan, model, splits, class_weights=class_weights)
        report(finding)
        suggested = finding.suggestion()
        if suggested is not None:
            lr = float(f"{suggested:.3g}")
    lr = broadcast(plan.cluster, lr)
    return replace(plan, config=plan.config.replace(lr=lr)), finding


def read_curve(lrs: list[float], losses: list[float], diverged: bool = False) -> LRFinding:
    """Smooth the curve without lag, find its lowest point, and make the suggestions from
    the part before it (skipping the noisy first tenth, as fastai does)."""
    from scipy.ndimage import gaussian_filter1d

    n = len(lrs)
    x = np.log10(np.asarray(lrs, dtype=float))
    y = np.asarray(losses, dtype=float)
    per_decade = (n - 1) / max(x[-1] - x[0], 1e-12)
    width = max(SMOOTH_DECADES * per_decade, 0.5)  # the Gaussian's deviation, in steps
    smooth = gaussian_filter1d(y, width, mode="nearest")
    lo = n // 10
    low = lo + int(np.argmin(smooth[lo:]))  # the bottom: the rise starts after it
    fall = float(smooth[lo] - smooth[low])
    xs, ys = x[lo:low + 1], smooth[lo:low + 1]
    steepest = float(xs[int(np.argmin(np.diff(ys) / np.diff(xs)))]) if len(ys) > 1 else x[low]
    knee = float(xs[int(np.argmax(ys <= smooth[lo] - KNEE_FALL * fall))])
    suggestions = {"knee": 10 ** knee, "steepest": 10 ** float(steepest),
                   "valley": 10 ** float(x[lo + _valley(ys)]),
                   "minimum": 10 ** float(x[low]) / 10}
    # The noise: how far single batches stray from the smoothed curve near the bottom
    # (median absolute deviation: a few spikes do not count), and the uncertainty it
    # leaves in a smoothed value, which averages about 2 * sqrt(pi) * width batches.
    near = slice(max(lo, low - max(8, round(1.25 * per_decade))), max(low + 1, lo + 9))
    residual = y[near] - smooth[near]
    noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    uncertainty = noise / math.sqrt(2 * math.sqrt(math.pi) * width)
    doubt = None
    if low - lo < MIN_POINTS:
        doubt = (f"too short: {low - lo} step(s) before the loss's lowest point, fewer than "
                 f"{MIN_POINTS}")
    elif fall < MIN_FALL * smooth[lo]:
        doubt = f"too flat: the loss fell by {fall:.3g} from {smooth[lo]:.3g}"
    elif fall < MIN_SIGNAL * uncertainty:
        doubt = (f"too noisy: the loss fell by {fall:.3g}, which its batch-to-batch noise "
                 f"({noise:.3g}) could make")
    return LRFinding(tuple(lrs), tuple(losses), tuple(float(v) for v in smooth),
                     {k: float(f"{v:.6g}") for k, v in suggestions.items()},
                     float(lrs[low]), diverged, doubt)


def _valley(y: np.ndarray) -> int:
    """fastai's valley: the point two thirds into the longest decreasing subsequence."""
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
    return min(m - 1, max(0, start_at + int(third) + int(third / 2)))


def plot_finding(finding: LRFinding, path: str | Path, title: str = "") -> Path:
    """The smoothed loss against the learning rate (log axis), suggestions marked."""
    from cnnkit.inspect.figures import new_figure, save

    fig = new_figure(7.5, 4.6)
    ax = fig.subplots()
    ax.plot(finding.lrs, finding.losses, color="lightgrey", lw=0.8, label="loss per batch")
    ax.plot(finding.lrs, finding.smoothed, color="tab:blue", label="smoothed loss")
    lrs = np.log(np.asarray(finding.lrs))
    smoothed = np.asarray(finding.smoothed)
    ax.axvline(finding.bottom, color="grey", ls=":", label=f"lowest point: {finding.bottom:.2g}")
    colours = {"knee": "tab:red", "steepest": "tab:orange", "valley": "tab:green",
               "minimum": "tab:purple"}
    for name, lr in finding.suggestions.items():
        y = float(np.interp(np.log(lr), lrs, smoothed))
        ax.plot([lr], [y], "o", color=colours[name], ms=8, label=f"{name}: {lr:.2g}")
    ax.set_xscale("log")
    low = float(smoothed.min())
    top = float(smoothed[: max(1, len(smoothed) // 10)].max())
    ax.set_ylim(low - 0.1 * (top - low) - 0.05 * abs(low), top + 0.5 * max(top - low, 0.1))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    stop = "stopped when the loss diverged" if finding.diverged else "full range"
    ax.set_title(title or f"Learning-rate range test ({len(lrs)} steps, {stop})")
    if finding.doubt:
        ax.text(0.02, 0.02, f"no suggestion: the curve is {finding.doubt}",
                transform=ax.transAxes, fontsize=8, color="tab:red")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def report(finding: LRFinding) -> None:
    stop = ", stopped at divergence" if finding.diverged else ""
    if not finding.trusted:
        keep = f"; keep the default rate, {finding.default:g}" if finding.default else ""
        log.info(f"lr-find: no suggestion - the curve is {finding.doubt} "
                 f"({len(finding.lrs)} steps{stop}){keep}")
        return
    log.info(f"lr-find: {TRAIN_PICK} at {finding.suggestion():.3g} ("
             + ", ".join(f"{k} {v:.3g}" for k, v in finding.suggestions.items()
                         if k != TRAIN_PICK)
             + f"; lowest loss at {finding.bottom:.3g}; {len(finding.lrs)} steps{stop})")


def record_finding(finding: LRFinding, run: RunDir) -> None:
    """--lr find's curve in the run folder, and which rate the plan took from it: the
    suggestion, or the default rate for a curve too short or noisy to trust."""
    suggested = finding.suggestion()
    write_json(run.root / "lr_find.json",
               {"picked": TRAIN_PICK if suggested is not None else "default",
                **finding.to_dict()})
    plot_finding(finding, run.plots_dir / "lr_find.png")
    if suggested is None:
        log.info(f"--lr find: the curve is {finding.doubt}; training at the default rate, "
                 f"{finding.default:g} (curve: {run.plots_dir / 'lr_find.png'})")
        return
    log.info(f"--lr find: training at the finder's {TRAIN_PICK} suggestion, "
             f"{float(f'{suggested:.3g}'):g} (the default would be {finding.default:g})")
