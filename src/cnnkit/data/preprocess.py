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
    # The data it was trained on was grey: every input is read as grey (luma), then given
    # the model's channels, as training gave them (a colour photo is otherwise an input
    # it never saw: a grey-trained model's unknown rule calls tinted items unknown).
    grey: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.grey:  # absent: as every file made before it existed
            del d["grey"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(int(d["img_size"]), int(d["channels"]), tuple(d["mean"]), tuple(d["std"]),
                   d.get("interpolation", "bilinear"), float(d.get("crop_pct", 1.0)),
                   d.get("grey", False) is True)

    @property
    def decode_channels(self) -> int:
        """Channels images are decoded to: 1 for a model of grey data (its own channels
        are made from that one at its input), else the model's."""
        return 1 if self.grey else self.channels

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
    channels (or one, which it repeats), and a centre crop of exactly the model's size."""
    _, c, h, w = shape
    _, _, ch, cw = centre_crop(h, w, crop_fraction)
    return c in (pre.channels, 1) and (ch, cw) == (pre.img_size, pre.img_size)


def model_input(images: np.ndarray, pre: Preprocess, crop_fraction: float = 1.0, *,
                flip: bool = False, out: np.ndarray | None = None) -> np.ndarray | None:
    """uint8 ``(B, C, H, W)`` -> normalised float32 ``(B, C, img_size, img_size)``, as
    ``cnnkit.data.pipeline.eval_batch`` makes it; ``flip`` mirrors it horizontally.

    ``out``: a float32 buffer of at least ``B`` images to write into (no allocation per
    batch). None when the images need a resize or another number of channels first,
    which only the tensor pipeline does.
    """
    y = _crop_into(images, pre, crop_fraction, flip, out, np.float32)
    if y is None:
        return None
    scale, shift = pre.scale_shift()
    # Two float32 roundings per element, as the tensor pipeline's multiply and add; the
    # uint8 -> float32 conversion first, on its own (a multiply that converts as it goes
    # is slower than a copy and two passes in place).
    if len(set(scale)) == 1 and len(set(shift)) == 1:
        y *= np.float32(scale[0])
        y += np.float32(shift[0])
    else:
        for i in range(y.shape[1]):
            y[:, i] *= np.float32(scale[i])
            y[:, i] += np.float32(shift[i])
    return y


def model_pixels(images: np.ndarray, pre: Preprocess, crop_fraction: float = 1.0, *,
                 flip: bool = False, out: np.ndarray | None = None) -> np.ndarray | None:
    """uint8 ``(B, C, H, W)`` -> the uint8 pixels of :func:`model_input`'s crop, not
    normalised, for a graph that is fed pixels (an int8 file, cnnkit.artifacts.pixel_input);
    ``flip`` and ``out`` (a uint8 buffer) as there."""
    return _crop_into(images, pre, crop_fraction, flip, out, np.uint8)


def _crop_into(images: np.ndarray, pre: Preprocess, crop_fraction: float, flip: bool,
               out: np.ndarray | None, dtype: type) -> np.ndarray | None:
    """The centre crop (mirrored with ``flip``) converted into ``out[:B]`` (or a new
    array of ``dtype``); None when the images need a resize or a channel change."""
    if not prepares(images.shape, pre, crop_fraction):
        return None
    b, _, h, w = images.shape
    top, left, ch, cw = centre_crop(h, w, crop_fraction)
    x = images[:, :, top:top + ch, left:left + cw]
    if flip:
        x = x[..., ::-1]
    shape = (b, pre.channels, ch, cw)  # a grey image's one channel is repeated
    if out is None or out.shape[1:] != shape[1:] or len(out) < b or out.dtype != dtype:
        out = np.empty(shape, dtype=dtype)
    y = out[:b]
    np.copyto(y, x, casting="unsafe")
    return y
