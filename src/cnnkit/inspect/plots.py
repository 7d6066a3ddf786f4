"""The pictures of a run folder: training curves, confusion matrix, per-class scores,
sample images and top losses.

Each function takes plain data (metrics rows, lists, arrays) and writes one PNG, so the
same plots serve a run that just finished and ``cnnkit report`` on an old one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.inspect.figures import hide_ticks, new_figure, overlay, save, show_image


def _float(row: dict[str, Any], key: str) -> float:
    try:
        return float(row.get(key, "nan") or "nan")
    except ValueError:
        return math.nan


@dataclass(frozen=True)
class PhasePlan:
    name: str
    epochs: int
    lr: float
    curve: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # (epochs, rates)


def phase_plan(rows: list[dict[str, Any]], config: dict[str, Any],
               phases: list[dict[str, Any]] | None = None) -> list[PhasePlan]:
    """The run's phases: from ``phases.json`` when written, else from metrics.csv."""
    # Phases with epochs of SGD only: a linear probe or a features head has no schedule.
    scheduled = [p for p in phases or () if p.get("lr") is not None and p.get("epochs")]
    if scheduled:
        return [PhasePlan(str(p["name"]), int(p["epochs"]), float(p["lr"]), _curve(p))
                for p in scheduled]
    plan: list[PhasePlan] = []
    for row in rows:
        name, lr = str(row.get("phase", "train")), _float(row, "lr")
        if plan and plan[-1].name == name:
            plan[-1] = PhasePlan(name, plan[-1].epochs + 1, plan[-1].lr)
        else:
            plan.append(PhasePlan(name, 1, lr))
    planned = int(config.get("epochs") or 0)
    done = sum(p.epochs for p in plan)
    if plan and planned > done:  # stopped early: the schedule was drawn for the full run
        plan[-1] = PhasePlan(plan[-1].name, plan[-1].epochs + planned - done, plan[-1].lr)
    return plan


def _curve(phase: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    curve = phase.get("lr_curve")
    if not isinstance(curve, dict) or len(curve.get("epoch", ())) != len(curve.get("lr", ())):
        return None
    return tuple(map(float, curve["epoch"])), tuple(map(float, curve["lr"]))


def lr_curve(plan: list[PhasePlan]) -> tuple[np.ndarray, np.ndarray]:
    """The learning rate against (fractional) epochs: each phase's curve as the loop
    recorded it in phases.json, or its peak rate held flat when the run has no record."""
    xs: list[float] = []
    ys: list[float] = []
    start = 0
    for phase in plan:
        curve = phase.curve or ((0.0, float(phase.epochs)), (phase.lr, phase.lr))
        xs.extend(start + x for x in curve[0])
        ys.extend(curve[1])
        start += phase.epochs
    return np.array(xs), np.array(ys)


def plot_curves(rows: list[dict[str, Any]], config: dict[str, Any], path: str | os.PathLike,
                phases: list[dict[str, Any]] | None = None, figure: str = "acc",
                figure_name: str = "accuracy") -> Path:
    """Loss, the task's figure (``figure``: the rows' ``train_<figure>`` and
    ``val_<figure>``; accuracy for single-label) and learning rate against epochs."""
    epochs = [int(_float(r, "epoch")) for r in rows]
    fig = new_figure(16, 4.6)
    axes = fig.subplots(1, 3)
    loss_name = "loss (cross-entropy)" if figure == "acc" else "loss (binary cross-entropy)"
    for ax, key, label in ((axes[0], "loss", loss_name), (axes[1], figure, figure_name)):
        for split, style in (("train", "o-"), ("val", "s-")):
            values = [_float(r, f"{split}_{key}") for r in rows]
            if any(not math.isnan(v) for v in values):
                ax.plot(epochs, values, style, label="training" if split == "train"
                        else "validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0].capitalize() + " per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        if epochs:
            ax.set_xticks(_epoch_ticks(max(epochs)))
    key = f"val_{figure}"
    if any(key in r for r in rows):
        best = max(rows, key=lambda r: _float(r, key))
        axes[1].annotate(f"best {_float(best, key):.2%}",
                         (int(_float(best, "epoch")), _float(best, key)),
                         textcoords="offset points", xytext=(0, -16), ha="center", fontsize=9)
    axes[1].yaxis.set_major_formatter(_percent())
    plan = phase_plan(rows, config, phases)
    xs, ys = lr_curve(plan)
    ax = axes[2]
    if len(xs):
        ax.plot(xs, ys, "-", color="tab:green")
        start = 0
        for phase in plan:
            if len(plan) > 1:
                ax.axvline(start, color="grey", lw=0.8, ls=":")
                ax.text(start + 0.05, ax.get_ylim()[1] * 0.97 if start else ys.max() * 0.97,
                        phase.name, fontsize=9, va="top")
            start += phase.epochs
        ax.axvspan(max(epochs, default=0), start, color="grey", alpha=0.1) \
            if epochs and max(epochs) < start else None
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"Learning rate ({config.get('schedule', '?')} schedule, "
                 f"{config.get('optimizer', '?')})")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    fig.suptitle(f"Training curves: {config.get('model', '')} on {config.get('data', '')}",
                 fontsize=13)
    return save(fig, path)


def _epoch_ticks(n: int) -> list[int]:
    step = max(1, math.ceil(n / 12))
    return list(range(1, n + 1, step))


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0)


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str],
                   path: str | os.PathLike, title: str) -> Path:
    """Counts in every cell, coloured by the share of the true class (each row sums to 1)."""
    cm = np.asarray(confusion, dtype=np.int64)
    n = len(classes)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    side = min(max(6.0, 0.55 * n + 3), 30)
    fig = new_figure(side + 1.5, side)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), [_short(c) for c in classes], rotation=45, ha="right",
                      rotation_mode="anchor")
        ax.set_yticks(range(n), [_short(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 30:
        for (i, j), v in np.ndenumerate(cm):
            if v or i == j:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=9 if n <= 15 else 7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class (row)")
    ax.set_title(title)
    return save(fig, path)


def _short(name: str, n: int = 24) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


MAX_BARS = 40


def plot_per_class(per_class: Sequence[dict[str, Any]], path: str | os.PathLike,
                   title: str) -> Path:
    """Precision, recall and F1 of every class as grouped horizontal bars.

    With more than ``MAX_BARS`` classes, the ``MAX_BARS`` with the lowest F1 are shown.
    """
    if len(per_class) > MAX_BARS:  # a class with no image has no F1 to be lowest by
        title += f" - the {MAX_BARS} lowest F1 of {len(per_class)} classes"
        per_class = sorted(per_class, key=lambda r: (not r["support"], float(r["f1"])))
        per_class = per_class[:MAX_BARS]
    names = [_short(str(r["class"]), 28) for r in per_class]
    n = len(names)
    fig = new_figure(12, max(3.5, 0.5 * n + 1.8))
    ax = fig.subplots()
    y = np.arange(n)
    height = 0.27
    from cnnkit.tasks.metrics import class_cells

    cells = [class_cells(r) for r in per_class]  # '-' where the data measures nothing
    for k, (key, colour) in enumerate((("precision", "tab:blue"), ("recall", "tab:orange"),
                                       ("f1", "tab:green"))):
        values = [0.0 if c[k] == "-" else float(r[key]) for r, c in zip(per_class, cells)]
        bars = ax.barh(y + (k - 1) * height, values, height, label=key if key != "f1"
                       else "F1", color=colour)
        if n <= 25:
            for bar, v, c in zip(bars, values, cells):
                if c[k] != "-":
                    ax.text(v + 0.005, bar.get_y() + bar.get_height() / 2, f"{v:.2f}",
                            va="center", fontsize=7)
    for i, c in enumerate(cells):
        if c == ["-", "-", "-"]:
            ax.text(0.01, y[i], "no image in this data", va="center", fontsize=8,
                    color="dimgray")
    ax.set_yticks(y, [f"{nm} ({r['support']})" for nm, r in zip(names, per_class)])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("score")
    ax.set_ylabel("class (number of images)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    return save(fig, path)


def plot_samples(images: Any, labels: Any, classes: Sequence[str], path: str | os.PathLike,
                 per_class: int = 8, seed: int = 0) -> Path:
    """A few training images of every class (a random draw when there are many classes).

    The images are tiled into one picture and drawn once: a grid of 80 small axes
    would cost seconds at the end of every run.
    """
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    rng = np.random.default_rng(seed)
    by_class = len(classes) <= 12
    if by_class:
        grid = [[int(i) for i in rng.permutation(np.flatnonzero(labels == c))[:per_class]]
                for c in range(len(classes))]
        cols = per_class
    else:
        chosen = rng.permutation(len(labels))[:48]
        cols = 8
        grid = [[int(i) for i in chosen[r:r + cols]] for r in range(0, len(chosen), cols)]
    rows = len(grid)
    _, channels, h, w = images.shape
    pad = max(2, h // 14)
    tile = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, channels), np.float32)
    for r, row in enumerate(grid):
        for c, i in enumerate(row):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            tile[top:top + h, left:left + w] = _to_hwc(images[i])
    scale = 1.5 / max(h, w) * (h + pad)  # about 1.5 inches per image
    fig = new_figure(scale * cols + (2.4 if by_class else 0.6), scale * rows + 0.8)
    ax = fig.subplots()
    show_image(ax, tile)
    ax.set_frame_on(False)
    if by_class:
        centres = [pad + r * (h + pad) + h / 2 for r in range(rows)]
        ax.set_yticks(centres, [_short(c, 20) for c in classes], fontsize=11)
        ax.tick_params(axis="y", length=0)
    else:
        for r, row in enumerate(grid):
            for c, i in enumerate(row):
                ax.text(pad + c * (w + pad) + w / 2, r * (h + pad) + pad * 0.9,
                        _short(classes[int(labels[i])], 16), ha="center", va="bottom",
                        fontsize=8, color="black", backgroundcolor="white")
    fig.suptitle(f"Sample training images with their labels ({len(labels):,} training "
                 "images)", fontsize=12)
    return save(fig, path)


def _to_hwc(img: Any) -> np.ndarray:
    arr = img.cpu().numpy() if hasattr(img, "cpu") else np.asarray(img)
    return arr.transpose(1, 2, 0).astype(np.float32) / 255.0


@dataclass(frozen=True)
class TopLoss:
    image: np.ndarray  # (H, W, C) in 0..1, as the model saw it
    cam: np.ndarray  # (H, W) Grad-CAM for the predicted class
    true: str
    predicted: str
    p_true: float
    p_pred: float
    loss: float
    index: int = -1  # its position in the evaluated set


def plot_top_losses(items: Sequence[TopLoss], path: str | os.PathLike, title: str) -> Path:
    """The most confidently wrong images, each beside its Grad-CAM for the predicted class."""
    pairs_per_row = 3
    rows = max(1, -(-len(items) // pairs_per_row))
    fig = new_figure(4.6 * pairs_per_row, 2.9 * rows + 0.9)
    axes = np.atleast_2d(fig.subplots(rows, 2 * pairs_per_row, squeeze=False))
    for ax in axes.flat:
        hide_ticks(ax)
        ax.axis("off")
    for k, item in enumerate(items):
        r, c = divmod(k, pairs_per_row)
        left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
        left.axis("on")
        right.axis("on")
        show_image(left, item.image)
        overlay(right, item.image, item.cam)
        left.set_title(f"true: {_short(item.true, 18)} ({item.p_true:.0%})\n"
                       f"predicted: {_short(item.predicted, 18)} ({item.p_pred:.0%})",
                       fontsize=10, loc="left")
        evidence = "" if item.cam.max() > 0 else "\n(no positive evidence)"
        right.set_title(f"Grad-CAM for\n{_short(item.predicted, 18)}{evidence}", fontsize=10)
        left.set_xlabel(f"loss {item.loss:.2f}", fontsize=9)
    if not items:
        axes[0, 0].text(0, 0.5, "no misclassified images", fontsize=12)
    fig.suptitle(title, fontsize=13)
    return save(fig, path)


def plot_confidence(confidence: Sequence[float], correct: Sequence[bool],
                    path: str | os.PathLike, title: str) -> Path:
    """How sure the model is on labelled images: a histogram of the top probability
    (right and wrong answers stacked) beside a reliability diagram (accuracy per
    confidence bin against the diagonal of a calibrated model)."""
    from cnnkit.tasks.threshold import reliability

    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    rel = reliability(conf, ok)
    edges = np.asarray(rel.edges)
    fig = new_figure(12, 4.6)
    hist, diag = fig.subplots(1, 2)
    hist.hist([conf[ok], conf[~ok]], bins=edges, stacked=True,
              color=["tab:green", "tab:red"], label=["right", "wrong"])
    hist.set_xlim(0, 1)
    hist.set_xlabel("top-class probability")
    hist.set_ylabel("images")
    hist.legend(loc="upper left")
    hist.set_title("Confidence of the top class")
    centres = (edges[:-1] + edges[1:]) / 2
    acc = np.asarray(rel.accuracy)
    have = ~np.isnan(acc)
    diag.bar(centres[have], acc[have], width=edges[1] - edges[0], color="tab:blue",
             edgecolor="white", label="accuracy in the bin")
    diag.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    for x, a, n in zip(centres[have], acc[have], np.asarray(rel.counts)[have]):
        diag.text(x, min(a + 0.02, 1.02), str(n), ha="center", fontsize=7)
    diag.set_xlim(0, 1)
    diag.set_ylim(0, 1.08)
    diag.set_xlabel("top-class probability (bin; number of images above each bar)")
    diag.set_ylabel("accuracy")
    diag.legend(loc="upper left")
    diag.set_title(f"Reliability (expected calibration error {rel.ece:.3f})")
    fig.suptitle(title, fontsize=12)
    return save(fig, path)
