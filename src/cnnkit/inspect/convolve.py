"""One convolution layer done by hand on a real image: filter, stride, padding, ReLU, pooling.

The arithmetic is written out with NumPy (every output pixel is the sum of a window
of the padded image times the kernel) so that it can be read and checked; the tests
hold it equal to ``torch.nn.functional.conv2d``, ``max_pool2d`` and ``avg_pool2d``.
As in every deep-learning library, "convolution" here is cross-correlation: the
kernel slides over the image without being flipped.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cnnkit.base.errors import CnnkitError

FILTERS: dict[str, tuple[str, list[list[float]]]] = {
    "vertical-edge": ("responds where brightness changes from left to right",
                      [[1, 0, -1], [1, 0, -1], [1, 0, -1]]),
    "horizontal-edge": ("responds where brightness changes from top to bottom",
                        [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]),
    "sobel-x": ("Sobel's horizontal gradient: vertical edges, centre row weighted",
                [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "sobel-y": ("Sobel's vertical gradient: horizontal edges, centre column weighted",
                [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    "laplacian": ("second derivative: edges in every direction, flat areas go to 0",
                  [[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
    "sharpen": ("the pixel minus its neighbours, added back: crisper edges",
                [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "blur": ("the mean of the 3x3 neighbourhood (box blur)",
             [[1 / 9] * 3, [1 / 9] * 3, [1 / 9] * 3]),
}

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?(/[+-]?\d+(\.\d*)?)?$", re.I)


def parse_kernel(spec: str) -> tuple[str, np.ndarray]:
    """A named filter or rows like ``"1,0,-1;1,0,-1;1,0,-1"`` (fractions such as 1/9 too)."""
    key = spec.strip().lower()
    if key in FILTERS:
        return key, np.array(FILTERS[key][1], dtype=np.float64)
    rows = [r for r in spec.replace(" ", "").split(";") if r]
    if not rows or not any(ch.isdigit() for ch in spec):
        raise CnnkitError(f"Unknown filter {spec!r}. Use {', '.join(FILTERS)}, or a kernel "
                          "written row by row such as '1,0,-1;1,0,-1;1,0,-1'.")
    values: list[list[float]] = []
    for row in rows:
        cells = row.split(",")
        numbers = [_entry(c) for c in cells]
        bad = [c for c, v in zip(cells, numbers) if v is None]
        if bad:
            raise CnnkitError(f"Cannot read {bad[0]!r} in kernel {spec!r}; entries are finite "
                              "numbers such as 1, -0.5 or 1/9, separated by ',' with rows split "
                              "by ';'.")
        values.append([float(v) for v in numbers if v is not None])
    widths = {len(r) for r in values}
    if len(widths) != 1:
        raise CnnkitError(f"Kernel {spec!r} has rows of different lengths "
                          f"({', '.join(str(len(r)) for r in values)}); every row needs as "
                          "many numbers.")
    return "custom", np.array(values, dtype=np.float64)


def _entry(cell: str) -> float | None:
    """One kernel entry, or None where it is no finite number ('1e400', '1/0')."""
    if not _NUMBER.match(cell):
        return None
    try:
        value = float(Fraction(cell)) if "/" in cell else float(cell)
    except (ZeroDivisionError, OverflowError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_padding(padding: str | int, kernel_shape: tuple[int, int]) -> tuple[int, int]:
    """'valid' (no padding), 'same' (output as large as the input at stride 1) or N pixels."""
    text = str(padding).strip().lower()
    if text == "valid":
        return (0, 0)
    if text == "same":
        even = [k for k in kernel_shape if k % 2 == 0]
        if even:
            raise CnnkitError(f"'same' padding needs an odd kernel size (got {kernel_shape[0]}x"
                              f"{kernel_shape[1]}); pass --padding N pixels instead.")
        return ((kernel_shape[0] - 1) // 2, (kernel_shape[1] - 1) // 2)
    if text.isdigit():
        return (int(text), int(text))
    raise CnnkitError(f"--padding takes valid, same or a number of pixels. Received: {padding!r}")


def out_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """floor((W - F + 2P) / S) + 1: the side of a conv or pooling output."""
    return (size - kernel + 2 * padding) // stride + 1


def conv2d(image: np.ndarray, kernel: np.ndarray, stride: int = 1,
           padding: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Slide ``kernel`` over a 2-D ``image`` (zero padding, no flip): the layer's pre-activation."""
    padded = np.pad(image.astype(np.float64), ((padding[0],) * 2, (padding[1],) * 2))
    windows = sliding_window_view(padded, kernel.shape)[::stride, ::stride]
    return np.einsum("ijkl,kl->ij", windows, kernel)


def pool2d(fmap: np.ndarray, size: int, stride: int, kind: str) -> np.ndarray:
    """Max or average over ``size`` x ``size`` windows moved ``stride`` pixels at a time."""
    windows = sliding_window_view(fmap, (size, size))[::stride, ::stride]
    return windows.max(axis=(2, 3)) if kind == "max" else windows.mean(axis=(2, 3))


@dataclass(frozen=True)
class Step:
    """One stage of the layer and the size arithmetic that goes with it."""

    name: str
    output: np.ndarray
    arithmetic: tuple[str, ...] = field(default=())
    detail: str = ""  # e.g. "2x2 window, stride 2"


@dataclass(frozen=True)
class Convolution:
    image: np.ndarray  # 2-D float input, 0..1
    kernel: np.ndarray
    filter_name: str
    stride: int
    padding: tuple[int, int]
    steps: tuple[Step, ...]

    @property
    def output(self) -> np.ndarray:
        return self.steps[-1].output

    def report(self) -> str:
        h, w = self.image.shape
        kh, kw = self.kernel.shape
        lines = [f"input    {h} x {w} pixels (grey, values 0..1)",
                 f"filter   {self.filter_name}: {kh}x{kw} kernel, stride {self.stride}, "
                 f"padding {self.padding[0]}" + (f",{self.padding[1]}"
                                                  if self.padding[1] != self.padding[0] else "")]
        for step in self.steps:
            out = step.output
            detail = f" {step.detail}" if step.detail else ""
            lines.append(f"{step.name:<8} -> {out.shape[0]} x {out.shape[1]}   "
                         f"(values {out.min():.3g} .. {out.max():.3g}){detail}")
            lines += [f"           {a}" for a in step.arithmetic]
        return "\n".join(lines)


def _arithmetic(h: int, w: int, kh: int, kw: int, stride: int, ph: int, pw: int
                ) -> tuple[str, ...]:
    def one(label: str, size: int, k: int, p: int) -> str:
        return (f"{label}: floor(({size} - {k} + 2*{p}) / {stride}) + 1 = "
                f"{out_size(size, k, stride, p)}")
    return (one("height", h, kh, ph), one("width ", w, kw, pw))


def convolve(image: np.ndarray, kernel: np.ndarray, *, filter_name: str = "custom",
             stride: int = 1, padding: tuple[int, int] = (0, 0), activation: str | None = None,
             pool: str | None = None, pool_size: int = 2, pool_stride: int | None = None
             ) -> Convolution:
    """Convolution, then optionally ReLU, then optionally max or average pooling."""
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (grey); got shape {image.shape}")
    if stride < 1:
        raise CnnkitError(f"--stride must be 1 or more. Received: {stride}")
    h, w = image.shape
    kh, kw = kernel.shape
    ph, pw = padding
    if ph > max(h, kh) or pw > max(w, kw):  # beyond both, padding adds windows of zeros
        raise CnnkitError(f"--padding {max(ph, pw)} is wider than the {h}x{w} image; "
                          f"{max(kh, kw) - 1} already lets the {kh}x{kw} kernel reach every "
                          "pixel.")
    if out_size(h, kh, stride, ph) < 1 or out_size(w, kw, stride, pw) < 1:
        raise CnnkitError(f"A {kh}x{kw} kernel does not fit a {h}x{w} image with padding "
                          f"{ph}; use a larger image or more padding.")
    fmap = conv2d(image, kernel, stride, padding)
    steps = [Step("conv", fmap, _arithmetic(h, w, kh, kw, stride, ph, pw))]
    if activation not in (None, "", "none"):
        if activation != "relu":
            raise CnnkitError(f"--activation takes relu or none. Received: {activation!r}")
        fmap = np.maximum(fmap, 0.0)
        steps.append(Step("relu", fmap, ("max(0, x) for every value; the size is unchanged",)))
    if pool not in (None, "", "none"):
        if pool not in ("max", "avg"):
            raise CnnkitError(f"--pool takes max or avg. Received: {pool!r}")
        pstride = pool_size if pool_stride is None else pool_stride
        if pool_size < 1 or pstride < 1:
            raise CnnkitError(f"--pool-size and --pool-stride must be 1 or more. Received: "
                              f"{pool_size}, {pstride}")
        fh, fw = fmap.shape
        if pool_size > min(fh, fw):
            raise CnnkitError(f"A {pool_size}x{pool_size} pooling window does not fit the "
                              f"{fh}x{fw} feature map; use a smaller --pool-size.")
        fmap = pool2d(fmap, pool_size, pstride, pool)
        steps.append(Step(f"{pool}pool", fmap,
                          _arithmetic(fh, fw, pool_size, pool_size, pstride, 0, 0),
                          f"{pool_size}x{pool_size} window, stride {pstride}"))
    return Convolution(image, kernel, filter_name, stride, (ph, pw), tuple(steps))


def load_grey(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """An image file as a 2-D float array in 0..1 (through cnnkit's one decoder)."""
    from cnnkit.data.decode import CorruptImageError, decode

    if size is not None and size < 1:
        raise CnnkitError(f"--size must be 1 or more. Received: {size}")
    if not os.path.isfile(path):
        raise CnnkitError(f"Image not found: {path}.")
    try:
        arr = decode(path, channels=1, size=size)
    except CorruptImageError as exc:
        raise CnnkitError(str(exc)) from None
    return arr[:, :, 0].astype(np.float64) / 255.0
