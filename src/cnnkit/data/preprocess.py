"""What a model expects of its input, and that input made with NumPy alone.

:class:`Preprocess` is stored in every sidecar and ONNX file. :func:`model_input` turns
decoded uint8 images into the normalised float32 batch a model reads without torch, so
that prediction through onnxruntime never imports it (``cnnkit.data.pipeline`` does
the same on tensors, with resizing and augmentation, for training and evaluation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Preprocess:
    """What a model expects of its input; stored in every model's sidecar."""

    img_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(int(d["img_size"]), int(d["channels"]), tuple(d["mean"]), tuple(d["std"]),
                   d.get("interpolation", "bilinear"), float(d.get("crop_pct", 1.0)))

    @property
    def decode_size(self) -> int:
        """Side of the square that decoded images are cached at (crop margin included)."""
        return max(self.img_size, round(self.img_size / self.crop_pct))

    def scale_shift(self) -> tuple[list[float], list[float]]:
        """Per channel, ``(x / 255 - mean) / std`` as ``x * scale + shift``."""
        return ([1.0 / (255.0 * s) for s in self.std],
                [-m / s for m, s in zip(self.mean, self.std)])


def centre_crop(h: int, w: int, crop_fraction: float) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the centre crop that evaluation takes."""
    if crop_fraction >= 1.0:
        return 0, 0, h, w
    ch, cw = round(h * crop_fraction), round(w * crop_fraction)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def prepares(shape: tuple[int, ...], pre: Preprocess, crop_fraction: float = 1.0) -> bool:
    """Whether :func:`model_input` takes images of ``shape`` ``(B, C, H, W)``: the model's
    channels, and a centre crop of exactly the model's size."""
    _, c, h, w = shape
    _, _, ch, cw = centre_crop(h, w, crop_fraction)
    return c == pre.channels and (ch, cw) == (pre.img_size, pre.img_size)


def model_input(images: np.ndarray, pre: Preprocess, crop_fraction: float = 1.0, *,
                flip: bool = False, out: np.ndarray | None = None) -> np.ndarray | None:
    """uint8 ``(B, C, H, W)`` -> normalised float32 ``(B, C, img_size, img_size)``, as
    ``cnnkit.data.pipeline.eval_batch`` makes it; ``flip`` mirrors it horizontally.

    ``out``: a float32 buffer of at least ``B`` images to write into (no allocation per
    batch). None when the images need a resize or another number of channels first,
    which only the tensor pipeline does.
    """
    if not prepares(images.shape, pre, crop_fraction):
        return None
    b, c, h, w = images.shape
    top, left, ch, cw = centre_crop(h, w, crop_fraction)
    x = images[:, :, top:top + ch, left:left + cw]
    if flip:
        x = x[..., ::-1]
    shape = (b, c, ch, cw)
    if out is None or out.shape[1:] != shape[1:] or len(out) < b or out.dtype != np.float32:
        out = np.empty(shape, dtype=np.float32)
    y = out[:b]
    scale, shift = pre.scale_shift()
    # Two float32 roundings per element, as the tensor pipeline's multiply and add.
    if len(set(scale)) == 1 and len(set(shift)) == 1:
        np.multiply(x, np.float32(scale[0]), out=y, dtype=np.float32)
        y += np.float32(shift[0])
    else:
        for i in range(c):
            np.multiply(x[:, i], np.float32(scale[i]), out=y[:, i], dtype=np.float32)
            y[:, i] += np.float32(shift[i])
    return y
