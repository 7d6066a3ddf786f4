"""Pictures of one image going through a CNN: a hand-made convolution, Grad-CAM, feature
maps and first-layer filters.

Figures are built on ``matplotlib.figure.Figure`` and saved through the Agg canvas: no
display, no pyplot state, nothing left open in a notebook or a server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.base import log
from cnnkit.inspect.convolve import Convolution

HEAT = "jet"


def new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG, atomically (a reader never sees half a picture)."""
    from cnnkit.base.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    return path


def hide_ticks(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def number_text(value: float) -> str:
    """Kernel entries as people write them: 1, -0.5, 1/9."""
    if float(value).is_integer():
        return str(int(value))
    frac = Fraction(value).limit_denominator(32)
    if abs(float(frac) - value) < 1e-9:
        return f"{frac.numerator}/{frac.denominator}"
    return f"{value:.3g}"


def draw_kernel(ax: Any, kernel: np.ndarray, title: str, fontsize: float = 12) -> Any:
    """A kernel as coloured cells with its numbers written in them."""
    limit = float(np.abs(kernel).max()) or 1.0
    im = ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    for (i, j), v in np.ndenumerate(kernel):
        colour = "white" if abs(v) > 0.6 * limit else "black"
        ax.text(j, i, number_text(v), ha="center", va="center", color=colour,
                fontsize=fontsize, fontweight="bold")
    ax.set_xticks(range(kernel.shape[1]))
    ax.set_yticks(range(kernel.shape[0]))
    ax.set_title(title)
    return im


def plot_convolution(conv: Convolution, path: str | os.PathLike) -> Path:
    """Input, kernel with its numbers, and each stage's output with its size arithmetic."""
    h, w = conv.image.shape
    aspect = w / h
    steps = [f"s{i}" for i in range(len(conv.steps))]
    if len(steps) <= 2:  # one row: input, kernel, outputs
        mosaic = [["in", "k", *steps]]
        ratios = [aspect, 0.75] + [aspect] * len(steps)
        fig = new_figure(5.0 * (2 + len(steps)), 5.2 if aspect >= 1 else 6.5)
    else:  # two rows: input, kernel, conv / relu, -, pooling
        mosaic = [["in", "k", "s0"], ["s1", ".", "s2"]]
        ratios = [aspect, 0.75, aspect]
        fig = new_figure(16, 10.4 if aspect >= 1 else 13)
    named = fig.subplot_mosaic(mosaic, width_ratios=ratios)
    axes = [named["in"], named["k"]] + [named[s] for s in steps]
    ax = axes[0]
    ax.imshow(conv.image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"input (grey)\n{h} x {w} pixels")
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    kh, kw = conv.kernel.shape
    draw_kernel(axes[1], conv.kernel, f"kernel: {conv.filter_name}\n{kh} x {kw}")
    axes[1].set_xlabel(f"stride {conv.stride}, padding {conv.padding[0]}")
    after_relu = False
    for ax, step in zip(axes[2:], conv.steps):
        out = step.output
        after_relu = after_relu or step.name == "relu"
        lo, hi, scale = display_range(out, after_relu)
        im = ax.imshow(out, cmap="gray", vmin=lo, vmax=hi,
                       interpolation="nearest" if max(out.shape) < 64 else "antialiased")
        label = {"conv": "feature map (conv)", "relu": "after ReLU",
                 "maxpool": "after max pooling", "avgpool": "after average pooling"}[step.name]
        detail = f", {step.detail}" if step.detail else ""
        ax.set_title(f"{label}{detail}\n{out.shape[0]} x {out.shape[1]}"
                     + (f"\n{scale}" if scale else ""), fontsize=11)
        ax.set_xlabel("\n".join(step.arithmetic), fontsize=9, family="monospace")
        fig.colorbar(im, ax=ax, shrink=0.7, label="value (display scaled "
                     + ("to the percentile)" if scale else "min..max)"))
    fig.suptitle("One convolution layer by hand:  output = floor((W - F + 2P) / S) + 1",
                 fontsize=13)
    return save(fig, path)


RELU_PERCENTILE = 99


def display_range(out: np.ndarray, after_relu: bool) -> tuple[float, float, str]:
    """Grey-scale limits for a stage's map and the caption that says how it was scaled.

    After ReLU most values are 0 and a few edges are large, so min..max leaves the
    panel almost black: those maps are shown from 0 to their 99th percentile of the
    positive values, brighter ones clipped to white, and the caption says so.
    """
    lo, hi = float(out.min()), float(out.max())
    if after_relu:
        positive = out[out > 0]
        top = float(np.percentile(positive, RELU_PERCENTILE)) if positive.size else 0.0
        if 0 < top < hi:
            return 0.0, top, (f"shown 0..{top:.3g} (the {RELU_PERCENTILE}th percentile); "
                              f"up to {hi:.3g} clipped to white")
    return lo, hi if hi > lo else lo + 1, ""


def to_display(x: Any, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``(C, H, W)`` tensor back to an ``(H, W, C)`` picture in 0..1."""
    arr = x.detach().float().cpu().numpy()
    arr = arr * np.asarray(std, dtype=np.float32)[:, None, None] + \
        np.asarray(mean, dtype=np.float32)[:, None, None]
    return np.clip(arr.transpose(1, 2, 0), 0, 1)


def show_image(ax: Any, img: np.ndarray) -> None:
    """An ``(H, W, C)`` picture in 0..1; grey ones in grey."""
    if img.shape[2] == 1:
        ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest" if img.shape[0] <= 64 else "antialiased")
    else:
        ax.imshow(img, interpolation="nearest" if img.shape[0] <= 64 else "antialiased")
    hide_ticks(ax)


def overlay(ax: Any, img: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> Any:
    show_image(ax, img)
    return ax.imshow(cam, cmap=HEAT, alpha=alpha, vmin=0, vmax=1, interpolation="bilinear")


def plot_gradcam(img: np.ndarray, cam: np.ndarray, class_name: str, probability: float,
                 top: list[tuple[str, float]], layer: str, layer_shape: tuple[int, ...],
                 path: str | os.PathLike, source: str = "", noun: str = "class") -> Path:
    """Input, heat map, overlay and the top classes (``noun`` "label": a multi-label
    model's labels, each with its own probability), for one image and one class."""
    fig = new_figure(19, 5.0)
    axes = fig.subplots(1, 4, width_ratios=[1, 1, 1, 1.25])
    show_image(axes[0], img)
    axes[0].set_title(f"input as the model sees it\n{img.shape[0]} x {img.shape[1]}"
                      + (f"  ({Path(source).name})" if source else ""))
    im = axes[1].imshow(cam, cmap=HEAT, vmin=0, vmax=1)
    hide_ticks(axes[1])
    shape = "x".join(str(s) for s in layer_shape)
    axes[1].set_title(f"Grad-CAM heat map\nfrom layer {layer} ({shape})")
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="importance for the class (0..1)")
    overlay(axes[2], img, cam)
    axes[2].set_title(f"where the model looks for\n{_short(class_name, 40)!r}")
    names = [_short(c, 28) for c, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    colours = ["tab:orange" if c == class_name else "tab:blue" for c, _ in top][::-1]
    bars = axes[3].barh(range(len(top)), probs, color=colours)
    axes[3].set_yticks(range(len(top)), names)
    axes[3].set_xlim(0, 1.15)
    axes[3].set_xlabel("probability")
    axes[3].set_title(f"top-{len(top)} classes" if noun == "class" else
                      f"top-{len(top)} labels (each its own probability)")
    for bar, p in zip(bars, probs):
        axes[3].text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, log.percent(p),
                     va="center", fontsize=9)
    fig.suptitle(f"Grad-CAM for class {class_name!r} (probability {log.percent(probability)})",
                 fontsize=14)
    return save(fig, path)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_feature_maps(fmap: np.ndarray, layer: str, layer_type: str, img: np.ndarray,
                      path: str | os.PathLike, max_maps: int = 16) -> Path:
    """The most active channels of one layer's output for one image, beside the image."""
    channels, h, w = fmap.shape
    order = np.argsort(-fmap.reshape(channels, -1).mean(1))[:max_maps]
    order = np.sort(order)
    cols = min(8, len(order))
    rows = -(-len(order) // cols)
    fig = new_figure(2.0 * (cols + 2), 2.2 * rows + 1.2)
    grid = fig.add_gridspec(rows, cols + 2)
    ax = fig.add_subplot(grid[:, :2])
    show_image(ax, img)
    ax.set_title(f"input\n{img.shape[0]} x {img.shape[1]}")
    interp = "nearest" if max(h, w) <= 32 else "antialiased"
    im = None
    for k, c in enumerate(order):
        ax = fig.add_subplot(grid[k // cols, 2 + k % cols])
        m = fmap[c]
        lo, hi = float(m.min()), float(m.max())
        im = ax.imshow(m, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1,
                       interpolation=interp)
        hide_ticks(ax)
        ax.set_title(f"channel {c}", fontsize=9)
    shown = f"the {len(order)} most active" if len(order) < channels else "all"
    fig.suptitle(f"Feature maps of {layer} ({layer_type}): {channels} channels of {h} x {w}, "
                 f"{shown} shown\n(each map scaled to its own range: yellow = strong, "
                 "dark = weak)", fontsize=12)
    del im
    return save(fig, path)


def plot_filters(weight: np.ndarray, layer: str, path: str | os.PathLike,
                 max_filters: int = 64) -> Path:
    """The first convolution's kernels: RGB pictures for colour input, numbers for grey."""
    k, c, kh, kw = weight.shape
    n = min(k, max_filters)
    cols = min(8, n)
    rows = -(-n // cols)
    fig = new_figure(1.6 * cols + 1.5, 1.7 * rows + 1.3)
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(rows, cols)
    limit = float(np.abs(weight[:n]).max()) or 1.0
    annotate = c == 1 and kh * kw <= 25
    im = None
    for i, ax in enumerate(axes.flat):
        hide_ticks(ax)
        if i >= n:
            ax.axis("off")
            continue
        f = weight[i]
        if c == 3:
            lo, hi = f.min(), f.max()
            ax.imshow(((f - lo) / (hi - lo + 1e-12)).transpose(1, 2, 0),
                      interpolation="nearest")
        else:
            im = ax.imshow(f.mean(0), cmap="RdBu_r", vmin=-limit, vmax=limit,
                           interpolation="nearest")
            if annotate:
                for (a, b), v in np.ndenumerate(f[0]):
                    ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(f"filter {i}", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="weight")
    how = ("each filter's three colour channels shown as a colour picture, scaled to its "
           "own range" if c == 3 else "blue = negative, red = positive weight"
           if c == 1 else f"mean over the {c} input channels")
    fig.suptitle(f"Learned filters of the first layer {layer}: {k} filters of {kh} x {kw} x "
                 f"{c}" + (f" ({n} shown)" if n < k else "") + f"\n({how})", fontsize=11)
    return save(fig, path)
