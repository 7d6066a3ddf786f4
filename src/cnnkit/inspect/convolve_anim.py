"""The filter's window sliding over a small crop of a real image, one output value per
frame: the crop with its pixel values and the window, the kernel's numbers, the
products of window and kernel with their sum, and the output map filling in."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cnnkit.base.errors import CnnkitError
from cnnkit.inspect.convolve import conv2d, out_size
from cnnkit.inspect.figures import draw_kernel, new_figure, number_text

MAX_FRAMES = 400


def busiest_crop(image: np.ndarray, kernel: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` crop where the filter responds most
    (the sum of |output| over the crop), so the animation shows something happen."""
    h, w = image.shape
    if size > min(h, w):
        raise CnnkitError(f"--crop {size} is larger than the {h}x{w} image; pick a smaller "
                          "crop or a larger --size.")
    response = np.abs(conv2d(image, kernel, 1, (kernel.shape[0] // 2, kernel.shape[1] // 2)))
    response = response[:h, :w]
    sums = sliding_window_view(response, (size, size)).sum(axis=(2, 3))
    r, c = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(r), int(c)


def animate_convolution(image: np.ndarray, kernel: np.ndarray, path: str | os.PathLike, *,
                        filter_name: str = "custom", stride: int = 1,
                        padding: tuple[int, int] = (0, 0), crop: int = 8,
                        at: tuple[int, int] | None = None, frame_ms: int = 700) -> Path:
    """Write a GIF of the convolution of a ``crop`` x ``crop`` part of ``image`` (2-D,
    0..1) at ``at`` (row, column; default: where the filter responds most)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import Rectangle
    from PIL import Image

    if crop < 2:
        raise CnnkitError(f"--crop must be at least 2 pixels. Received: {crop}")
    h, w = image.shape
    r0, c0 = at if at is not None else busiest_crop(image, kernel, crop)
    if not (0 <= r0 <= h - crop and 0 <= c0 <= w - crop):
        raise CnnkitError(f"--at {r0},{c0} puts the {crop}x{crop} crop outside the {h}x{w} "
                          f"image; rows go 0..{h - crop}, columns 0..{w - crop}.")
    part = image[r0:r0 + crop, c0:c0 + crop]
    kh, kw = kernel.shape
    ph, pw = padding
    oh, ow = out_size(crop, kh, stride, ph), out_size(crop, kw, stride, pw)
    if oh < 1 or ow < 1:
        raise CnnkitError(f"A {kh}x{kw} kernel does not fit a {crop}x{crop} crop with padding "
                          f"{ph}; use a larger --crop or more padding.")
    if oh * ow > MAX_FRAMES:
        raise CnnkitError(f"{oh * ow} output values would make {oh * ow} frames; use a "
                          f"smaller --crop (at most {MAX_FRAMES} frames).")
    padded = np.pad(part, ((ph, ph), (pw, pw)))
    output = conv2d(part, kernel, stride, padding)
    limit = float(np.abs(output).max()) or 1.0

    fig = new_figure(15, 4.6)
    fig.set_layout_engine(None)
    fig.subplots_adjust(left=0.03, right=0.99, top=0.8, bottom=0.06, wspace=0.25)
    canvas = FigureCanvasAgg(fig)
    ax_in, ax_k, ax_p, ax_out = fig.subplots(1, 4, gridspec_kw={
        "width_ratios": [padded.shape[1], kw * 1.3, kw * 1.3, ow]})
    ph_, pw_ = padded.shape
    ax_in.imshow(padded, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    small = 7 if max(ph_, pw_) > 8 else 9
    for (i, j), v in np.ndenumerate(padded):
        pad_cell = i < ph or i >= ph_ - ph or j < pw or j >= pw_ - pw
        ax_in.text(j, i, "0" if pad_cell else f"{v:.2f}", ha="center", va="center",
                   fontsize=small, color="tab:blue" if pad_cell else
                   ("black" if v > 0.5 else "white"))
    ax_in.set_title(f"input: a {crop}x{crop} crop at row {r0}, column {c0}"
                    + (f"\n(+ {ph} px of zero padding)" if ph or pw else "\n(grey, 0..1)"),
                    fontsize=10)
    ax_in.set_xticks([])
    ax_in.set_yticks([])
    window = Rectangle((-0.5, -0.5), kw, kh, fill=False, edgecolor="red", lw=3)
    ax_in.add_patch(window)
    draw_kernel(ax_k, kernel, f"kernel: {filter_name}\n{kh}x{kw}, stride {stride}",
                fontsize=11)
    ax_k.set_xticks([])
    ax_k.set_yticks([])
    blank = np.zeros((kh, kw))
    prod_im = ax_p.imshow(blank, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    prod_txt = [[ax_p.text(j, i, "", ha="center", va="center", fontsize=9)
                 for j in range(kw)] for i in range(kh)]
    ax_p.set_xticks([])
    ax_p.set_yticks([])
    shown = np.full((oh, ow), np.nan)
    out_im = ax_out.imshow(shown, cmap="gray", vmin=-limit, vmax=limit,
                           interpolation="nearest")
    out_txt = [[ax_out.text(j, i, "", ha="center", va="center", fontsize=small)
                for j in range(ow)] for i in range(oh)]
    marker = Rectangle((-0.5, -0.5), 1, 1, fill=False, edgecolor="red", lw=3)
    ax_out.add_patch(marker)
    ax_out.set_xticks([])
    ax_out.set_yticks([])
    ax_out.set_title(f"output: {oh}x{ow}\nfloor(({crop} - {kh} + 2*{ph}) / {stride}) + 1 "
                     f"= {oh}", fontsize=10)
    fig.suptitle("Convolution, one output value at a time: multiply the window by the "
                 "kernel, add the products up", fontsize=12)

    frames: list[Image.Image] = []
    for i in range(oh):
        for j in range(ow):
            top, left = i * stride, j * stride
            win = padded[top:top + kh, left:left + kw]
            products = win * kernel
            value = float(products.sum())
            window.set_xy((left - 0.5, top - 0.5))
            scaled = products / (np.abs(products).max() or 1.0)
            prod_im.set_data(scaled)
            for (a, b), p in np.ndenumerate(products):
                prod_txt[a][b].set_text(f"{win[a, b]:.2f}\u00d7{number_text(kernel[a, b])}"
                                        f"\n= {p:.2f}")
                prod_txt[a][b].set_color("white" if abs(scaled[a, b]) > 0.6 else "black")
            ax_p.set_title(f"window \u00d7 kernel, summed:\n{value:.3f}", fontsize=10)
            shown[i, j] = value
            out_im.set_data(shown)
            out_txt[i][j].set_text(f"{value:.2f}")
            out_txt[i][j].set_color("black" if value > 0 else "white")
            marker.set_xy((j - 0.5, i - 0.5))
            canvas.draw()
            frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
                          .convert("P", palette=Image.Palette.ADAPTIVE, colors=128))
    path = Path(path)
    from cnnkit.base.atomic import atomic_path

    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=[frame_ms] * (len(frames) - 1) + [frame_ms * 4], loop=0)
    return path
