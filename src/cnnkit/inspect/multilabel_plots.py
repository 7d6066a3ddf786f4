"""The pictures of a multi-label run: precision-recall curves per label, how often labels
occur together, sample images with their label sets, and each label's worst answers.

Each function takes plain data and writes one PNG (as :mod:`cnnkit.inspect.plots`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.inspect.figures import hide_ticks, new_figure, overlay, save, show_image

MAX_CURVES = 20  # labels drawn on the precision-recall plot (the most frequent)
MAX_LOSS_LABELS = 10  # labels with a row of top losses


def _short(name: str, n: int = 22) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float | None, int]],
                   path: str | os.PathLike, title: str) -> Path:
    """Each label's precision-recall curve (``curves``: label -> (precision, recall, AP,
    positives)), the most frequent :data:`MAX_CURVES` labels when there are more."""
    import matplotlib.pyplot as plt

    items = sorted(curves.items(), key=lambda kv: -kv[1][3])[:MAX_CURVES]
    fig = new_figure(11, 7)
    ax = fig.subplots()
    colours = plt.get_cmap("tab20")
    for k, (name, (precision, recall, ap, count)) in enumerate(items):
        if not len(precision):
            continue
        ax.step(recall, precision, where="post", color=colours(k % 20), lw=1.6,
                label=f"{_short(name)} (AP {ap:.3f}, {count})")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9,
              title="label (AP, images)")
    if len(curves) > MAX_CURVES:
        title += f" - the {MAX_CURVES} most frequent of {len(curves)} labels"
    ax.set_title(title)
    return save(fig, path)


def plot_cooccurrence(matrix: Sequence[Sequence[int]], classes: Sequence[str],
                      path: str | os.PathLike, title: str) -> Path:
    """Of the images with the row's label, the share that also have the column's (the
    diagonal: how many images have the label)."""
    m = np.asarray(matrix, dtype=np.float64)
    n = len(classes)
    counts = np.diag(m).copy()
    share = m / np.maximum(counts[:, None], 1)
    np.fill_diagonal(share, np.nan)
    fig = new_figure(max(6.0, 0.55 * n + 3), max(5.0, 0.5 * n + 2))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=max(0.01, float(np.nanmax(share, initial=0))))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row's images")
    names = [_short(c, 18) for c in classes]
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(n), [f"{nm} ({int(c)})" for nm, c in zip(names, counts)], fontsize=9)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                if i != j and m[i, j]:
                    ax.text(j, i, f"{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.6 * np.nanmax(share) else "black")
    ax.set_xlabel("also has this label")
    ax.set_ylabel("images with this label (count)")
    ax.set_title(title)
    return save(fig, path)


def plot_label_samples(images: Any, targets: Any, classes: Sequence[str],
                       path: str | os.PathLike, count: int = 24, seed: int = 0) -> Path:
    """A random draw of training images, each captioned with its label set."""
    y = np.asarray(targets.cpu() if hasattr(targets, "cpu") else targets) > 0.5
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(y))[:count]
    cols = min(6, max(1, len(chosen)))
    rows = max(1, -(-len(chosen) // cols))
    fig = new_figure(2.4 * cols, 2.7 * rows + 0.6)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        hide_ticks(ax)
        ax.axis("off")
    for k, i in enumerate(chosen):
        ax = axes[k // cols, k % cols]
        img = images[int(i)]
        arr = (img.cpu().numpy() if hasattr(img, "cpu") else np.asarray(img))
        show_image(ax, arr.transpose(1, 2, 0).astype(np.float32) / 255.0)
        names = [classes[j] for j in np.flatnonzero(y[i])]
        ax.set_title("\n".join(_short(nm, 18) for nm in names[:4])
                     + ("\n…" if len(names) > 4 else "") if names else "(no label)",
                     fontsize=8)
    fig.suptitle(f"Sample training images with their labels ({len(y):,} training images)",
                 fontsize=12)
    return save(fig, path)


@dataclass(frozen=True)
class LabelLoss:
    label: str
    image: np.ndarray  # (H, W, C) in 0..1, as the model saw it
    cam: np.ndarray  # (H, W) Grad-CAM for the label
    truth: bool
    probability: float
    loss: float


def plot_label_top_losses(rows: Sequence[Sequence[LabelLoss]], path: str | os.PathLike,
                          title: str) -> Path:
    """One row per label: its worst answers, each image beside its Grad-CAM for the
    label."""
    per_row = max((len(r) for r in rows), default=1) or 1
    fig = new_figure(3.2 * per_row, 1.9 * max(1, len(rows)) + 0.9)
    axes = np.atleast_2d(fig.subplots(max(1, len(rows)), 2 * per_row, squeeze=False))
    for ax in axes.flat:
        hide_ticks(ax)
        ax.axis("off")
    for r, items in enumerate(rows):
        for c, item in enumerate(items):
            left, right = axes[r, 2 * c], axes[r, 2 * c + 1]
            left.axis("on")
            right.axis("on")
            show_image(left, item.image)
            overlay(right, item.image, item.cam)
            left.set_title(f"{_short(item.label, 16)}: {'yes' if item.truth else 'no'}\n"
                           f"p {item.probability:.0%}, loss {item.loss:.2f}", fontsize=8,
                           loc="left")
    if not rows:
        axes[0, 0].text(0, 0.5, "no images", fontsize=12)
    fig.suptitle(title, fontsize=12)
    return save(fig, path)
