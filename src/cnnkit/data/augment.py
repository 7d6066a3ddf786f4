"""Geometric and photometric augmentation of whole batches, as Keras's preprocessing
layers and torchvision's RandAugment / TrivialAugment do per image.

Every geometric change (random-resized crop, flips, rotation, zoom, translation, shear
and the presets' geometric operations) is one 3x3 matrix per image; their product
becomes the ``theta`` of a single ``affine_grid`` + ``grid_sample``, so a batch is
resampled once however many of them are on. The presets' photometric operations then
act on the resampled 0..255 batch, each on the images that drew it.

Matrices map output coordinates to input coordinates in ``[-1, 1]`` (``affine_grid``'s
convention, ``align_corners=False``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PRESETS = ("randaugment", "trivialaugment")
# RandAugment as torchvision's defaults: 2 operations per image at magnitude 9 of 30.
RANDAUGMENT_OPS, RANDAUGMENT_MAGNITUDE = 2, 9 / 30
_PARAMETRIC = re.compile(r"^(rotate|zoom|shift|shear)(\d+(?:\.\d+)?|\.\d+)$")


@dataclass(frozen=True)
class Geometry:
    """The affine tokens of a spec: the largest rotation and shear (degrees), zoom and
    translation (fractions of the side); 0 is off."""

    rotate: float = 0.0
    zoom: float = 0.0
    shift: float = 0.0
    shear: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.rotate or self.zoom or self.shift or self.shear)


def geometry(augment: tuple[str, ...]) -> Geometry:
    """``("rotate15", "zoom0.2")`` -> ``Geometry(rotate=15, zoom=0.2)``."""
    values: dict[str, float] = {}
    for token in augment:
        match = _PARAMETRIC.match(token)
        if match:
            values[match.group(1)] = float(match.group(2))
    return Geometry(**values)


def parametric(token: str) -> tuple[str, float] | None:
    """``"rotate15"`` -> ``("rotate", 15.0)``; None for other tokens."""
    match = _PARAMETRIC.match(token)
    return (match.group(1), float(match.group(2))) if match else None


def _eye(b: int) -> torch.Tensor:
    return torch.eye(3).repeat(b, 1, 1)


def rotation(degrees: torch.Tensor) -> torch.Tensor:
    """Per-image rotation matrices (output -> input) turning the picture by ``degrees``
    counter-clockwise as it is displayed (rows grow downwards)."""
    a = torch.deg2rad(degrees)
    m = _eye(len(a))
    # the picture turns by +a when each output point samples the input point turned by
    # -a; in display axes (y down) a counter-clockwise turn by a is [[c, s], [-s, c]],
    # so its inverse is [[c, -s], [s, c]]
    m[:, 0, 0], m[:, 0, 1] = torch.cos(a), -torch.sin(a)
    m[:, 1, 0], m[:, 1, 1] = torch.sin(a), torch.cos(a)
    return m


def scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(len(sx))
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(len(tx))
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def shearing(x_degrees: torch.Tensor, y_degrees: torch.Tensor) -> torch.Tensor:
    m = _eye(len(x_degrees))
    m[:, 0, 1] = torch.tan(torch.deg2rad(x_degrees))
    m[:, 1, 0] = torch.tan(torch.deg2rad(y_degrees))
    return m


def _uniform(b: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.empty(b).uniform_(low, high, generator=gen)


def _signs(b: int, gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)


def random_geometry(b: int, geo: Geometry, gen: torch.Generator) -> torch.Tensor:
    """Each image's rotation, shear, zoom and translation as one matrix (identity parts
    where a token is off): zoom ``1 +- zoom`` (below 1 magnifies), translation up to
    ``shift`` of the side either way, rotation and shear up to their degrees either way."""
    m = _eye(b)
    if geo.shift:
        m = m @ translation(_uniform(b, -2 * geo.shift, 2 * geo.shift, gen),
                            _uniform(b, -2 * geo.shift, 2 * geo.shift, gen))
    if geo.rotate:
        m = m @ rotation(_uniform(b, -geo.rotate, geo.rotate, gen))
    if geo.shear:
        m = m @ shearing(_uniform(b, -geo.shear, geo.shear, gen), torch.zeros(b))
    if geo.zoom:
        s = _uniform(b, 1 - geo.zoom, 1 + geo.zoom, gen)
        m = m @ scaling(s, s)
    return m


def flips(b: int, horizontal: bool, vertical: bool, gen: torch.Generator) -> torch.Tensor:
    ones = torch.ones(b)
    sx = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if horizontal else ones
    sy = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if vertical else ones
    return scaling(sx, sy)


def resized_crop(b: int, gen: torch.Generator) -> torch.Tensor:
    """A random-resized crop of 25-100% of the area, aspect 3/4..4/3, kept inside."""
    area = _uniform(b, 0.25, 1.0, gen)
    ratio = torch.exp(_uniform(b, math.log(3 / 4), math.log(4 / 3), gen))
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sy)
    return translation(tx, ty) @ scaling(sx, sy)


def warp(x: torch.Tensor, matrices: torch.Tensor, size: int, mode: str = "bilinear",
         padding: str = "reflection") -> torch.Tensor:
    """One resample of the batch ``x`` (any dtype) through per-image matrices, to
    ``size`` x ``size`` float 0..255; outside the image is mirrored (Keras's default
    fill) or zero (``padding="zeros"``)."""
    theta = matrices[:, :2, :].to(device=x.device, dtype=torch.float32)
    grid = F.affine_grid(theta, [len(x), x.shape[1], size, size], align_corners=False)
    out = F.grid_sample(x.float(), grid, mode=mode, padding_mode=padding, align_corners=False)
    return out.clamp_(0, 255) if mode == "bicubic" else out


# ---------------------------------------------------------------- RandAugment, TrivialAugment

GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
COLOUR_OPS = ("identity", "brightness", "color", "contrast", "sharpness", "posterize",
              "solarize", "autocontrast", "equalize")
OPS = GEOMETRIC_OPS + COLOUR_OPS
ENHANCE_OPS = ("brightness", "color", "contrast", "sharpness")


@dataclass(frozen=True)
class PresetDraw:
    """What a preset drew for a batch: the geometric part as matrices, and per colour
    operation the images that drew it with their magnitudes (0..1)."""

    matrices: torch.Tensor
    colour: tuple[tuple[str, torch.Tensor, torch.Tensor], ...]


def draw_preset(b: int, kind: str, gen: torch.Generator) -> PresetDraw:
    """RandAugment: two operations per image at a fixed magnitude; TrivialAugment
    (its "wide" ranges): one operation per image at a uniformly random magnitude."""
    count = RANDAUGMENT_OPS if kind == "randaugment" else 1
    m = _eye(b)
    colour: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    wide = kind == "trivialaugment"
    for _ in range(count):
        op = torch.randint(len(OPS), (b,), generator=gen)
        mag = torch.rand(b, generator=gen) if wide else torch.full((b,), RANDAUGMENT_MAGNITUDE)
        sign = _signs(b, gen)
        # torchvision's ranges at full magnitude: (RandAugment, TrivialAugmentWide)
        rot = torch.where(op == OPS.index("rotate"), sign * mag * (135.0 if wide else 30.0), 0.0)
        shear_limit = math.degrees(math.atan(0.99 if wide else 0.3))
        sx = torch.where(op == OPS.index("shear_x"), sign * mag * shear_limit, 0.0)
        sy = torch.where(op == OPS.index("shear_y"), sign * mag * shear_limit, 0.0)
        move = 2 * (32 / 224 if wide else 150 / 331)  # of the side, in [-1, 1] units
        tx = torch.where(op == OPS.index("translate_x"), sign * mag * move, 0.0)
        ty = torch.where(op == OPS.index("translate_y"), sign * mag * move, 0.0)
        m = m @ translation(tx, ty) @ rotation(rot) @ shearing(sx, sy)
        for name in COLOUR_OPS[1:]:
            idx = torch.nonzero(op == OPS.index(name)).flatten()
            if not len(idx):
                continue
            value = mag[idx]
            if name in ENHANCE_OPS:  # a factor 1 +- up to 0.9 (wide: 0.99)
                value = value * sign[idx] * (0.99 if wide else 0.9)
            elif name in ("posterize", "solarize") and wide:
                value = value * 1.5 if name == "posterize" else value  # wide: 8 -> 2 bits
            colour.append((name, idx, value))
    return PresetDraw(m, tuple(colour))


def apply_colour(x: torch.Tensor, draw: PresetDraw) -> torch.Tensor:
    """The colour operations of a preset draw on a float 0..255 batch, image by image
    group (each operation runs once, on the images that drew it)."""
    for name, idx, mag in draw.colour:
        idx = idx.to(x.device)
        part = x[idx]
        m = mag.to(x.device).view(-1, 1, 1, 1)
        x[idx] = _colour_op(name, part, m).clamp_(0, 255)
    return x


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: ``b + factor * (a - b)``; factor 1 keeps ``a``."""
    return b + factor * (a - b)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _colour_op(name: str, x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    if name == "brightness":
        return _blend(x, torch.zeros_like(x), 1 + mag)
    if name == "color":
        return _blend(x, _grey(x).expand_as(x), 1 + mag)
    if name == "contrast":
        mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
        return _blend(x, mean.expand_as(x), 1 + mag)
    if name == "sharpness":
        c = x.shape[1]
        k = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device) / 13
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"),
                           k.expand(c, 1, 3, 3).contiguous(), groups=c)
        return _blend(x, blurred, 1 + mag)
    if name == "posterize":
        bits = (8 - (mag * 4).round()).clamp(2, 8)  # 8 bits at 0, 4 at full magnitude
        step = 2.0 ** (8 - bits)
        return torch.floor(x / step) * step
    if name == "solarize":
        threshold = 255.0 * (1 - mag)
        return torch.where(x >= threshold, 255.0 - x, x)
    if name == "autocontrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        scale = torch.where(hi > lo, 255.0 / (hi - lo).clamp(min=1e-6), 1.0)
        return torch.where(hi > lo, (x - lo) * scale, x)
    if name == "equalize":
        return _equalize(x)
    raise ValueError(name)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel (PIL's ImageOps.equalize)."""
    b, c, h, w = x.shape
    flat = x.round().clamp(0, 255).long().view(b * c, -1)
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float32))
    cdf = hist.cumsum(1)
    first = torch.gather(cdf, 1, (hist > 0).float().argmax(1, keepdim=True))
    lut = ((cdf - first) / (h * w - first).clamp(min=1) * 255).clamp(0, 255)
    return torch.gather(lut, 1, flat).view(b, c, h, w)
