"""Batched preprocessing and augmentation as tensor ops on the training device.

Images stay uint8 until a batch is drawn. Small images are shifted and mirrored as
uint8 (one indexing into shifted views), large ones, and any batch with rotation,
zoom, translation, shear or a RandAugment/TrivialAugment preset, get one affine
resample for all of them (:mod:`cnnkit.data.augment`); then a single float allocation
takes the batch to the model's channels and normalisation. The same code runs on the
CPU and on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.data.augment import (
    PRESETS,
    Geometry,
    apply_colour,
    draw_preset,
    flips,
    geometry,
    random_geometry,
    resized_crop,
    scaling,
    warp,
)
from cnnkit.data.preprocess import Preprocess, centre_crop

SMALL_IMAGE = 64  # at or below this size, "crop" means pad-and-crop translation


def _model_input(x: torch.Tensor, pre: Preprocess, owned: bool = False) -> torch.Tensor:
    """A 0..255 batch at the model's size -> normalised float32 with the model's channels.

    ``owned``: ``x`` is a float tensor made for this batch, so it may be written in place.
    """
    c = x.shape[1]
    if c == pre.channels:
        out = x if owned and x.dtype == torch.float32 else x.to(torch.float32, copy=True)
    elif c == 1 and pre.channels == 3:
        out = torch.empty((x.shape[0], 3, *x.shape[2:]), device=x.device)
        out.copy_(x.expand(-1, 3, -1, -1))
    elif c == 3 and pre.channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        out = (x.float() * weights).sum(1, keepdim=True)
    else:
        raise ValueError(f"cannot turn {c} channels into {pre.channels}")
    return _normalise(out, pre)


def _normalise(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """0..255 values -> ``(x / 255 - mean) / std`` as one multiply-add per element.

    Writes in place when ``x`` is a fresh float tensor (``owned``), so a batch costs one
    float allocation, not four: allocation, not arithmetic, dominated the cached epoch.
    """
    scale, shift = pre.scale_shift()
    if len(set(scale)) == 1 and len(set(shift)) == 1:
        return x.mul_(scale[0]).add_(shift[0])
    dims = (1, -1, 1, 1)
    return x.mul_(torch.tensor(scale, device=x.device).view(dims)).add_(
        torch.tensor(shift, device=x.device).view(dims))


def _interp_mode(name: str) -> str:
    return "bicubic" if name in ("bicubic", "lanczos") else "nearest" if name == "nearest" \
        else "bilinear"


def eval_batch(x: torch.Tensor, pre: Preprocess, crop_fraction: float = 1.0) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> normalised float at the model's size (centre crop)."""
    if crop_fraction < 1.0:
        top, left, ch, cw = centre_crop(*x.shape[-2:], crop_fraction)
        x = x[..., top:top + ch, left:left + cw]
    if tuple(x.shape[-2:]) == (pre.img_size, pre.img_size):
        return _model_input(x, pre)
    mode = _interp_mode(pre.interpolation)
    down = x.shape[-1] > pre.img_size
    x = F.interpolate(x.float(), size=(pre.img_size, pre.img_size), mode=mode,
                      align_corners=False if mode != "nearest" else None,
                      antialias=down and mode != "nearest")
    if mode == "bicubic":
        x = x.clamp_(0, 255)
    return _model_input(x, pre, owned=True)


def train_batch(
    x: torch.Tensor,
    pre: Preprocess,
    augment: tuple[str, ...],
    gen: torch.Generator,
    crop_fraction: float = 1.0,
) -> torch.Tensor:
    """uint8 batch -> augmented, normalised float batch; random draws from ``gen`` (CPU)."""
    _, _, h, w = x.shape
    small = max(h, w) <= SMALL_IMAGE
    geo = geometry(augment)
    preset = next((p for p in PRESETS if p in augment), None)
    affine = geo.any or preset is not None or ("crop" in augment and not small)
    if affine:
        out = _affine_batch(x, pre, augment, geo, preset, gen, crop_fraction, small)
    elif "crop" not in augment:
        # Flips only: exactly the evaluation resize, then mirror. Resampling the same way
        # as at test time matters when upsampling a lot (28 -> 224 px for a pretrained
        # backbone; docs/design-notes.md, "Training resamples exactly as testing does").
        out = eval_batch(x, pre, crop_fraction)
        if "flip" in augment:
            out = _mirror(out, -1, gen)
    else:
        out = eval_batch(_shift_and_flip(x, "flip" in augment, gen), pre, crop_fraction)
    if "vflip" in augment and not affine:
        out = _mirror(out, -2, gen)  # the affine path flips inside its maps
    if "color" in augment:
        out = _jitter(out, gen)
    if "erase" in augment:
        out = _erase(out, gen)
    return out


def _affine_batch(x: torch.Tensor, pre: Preprocess, augment: tuple[str, ...], geo: Geometry,
                  preset: str | None, gen: torch.Generator, crop_fraction: float,
                  small: bool) -> torch.Tensor:
    """Crop, flips, rotation, zoom, translation, shear and a preset's geometric operations
    as one matrix per image and one resample; then the preset's colour operations."""
    b = len(x)
    if "crop" in augment and not small:
        m = resized_crop(b, gen)
    else:  # the evaluation view: a centre crop of ``crop_fraction``
        m = scaling(torch.full((b,), crop_fraction), torch.full((b,), crop_fraction))
    if "flip" in augment or "vflip" in augment:
        m = m @ flips(b, "flip" in augment, "vflip" in augment, gen)
    if "crop" in augment and small:  # small images: crop means translation by a tenth
        geo = replace(geo, shift=max(geo.shift, 0.1))
    m = m @ random_geometry(b, geo, gen)
    draw = draw_preset(b, preset, gen) if preset else None
    if draw is not None:
        m = m @ draw.matrices
    # a random-resized crop stays inside the image; the rest mirror what they uncover
    padding = "reflection" if geo.any or preset else "zeros"
    out = warp(x, m, pre.img_size, _interp_mode(pre.interpolation), padding)
    if draw is not None:
        out = apply_colour(out, draw)
    return _model_input(out, pre, owned=True)


def _mirror(x: torch.Tensor, dim: int, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch along ``dim``."""
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(dim), x)


def _shift_and_flip(x: torch.Tensor, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Pad-and-crop by whole pixels (up to a tenth of the side) and random mirroring, on
    the uint8 batch (small images only). Every shifted window is a view of the padded
    batch (``unfold``) and one indexing picks each image's window: no resampling, no
    per-pixel index tensors (cheaper than a per-pixel gather: docs/benchmarks.md's log)."""
    b, _, h, w = x.shape
    pad = max(1, round(0.1 * max(h, w)))
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    which = torch.arange(b)
    padded = F.pad(x, (pad, pad, pad, pad))
    if flip:  # the mirrored copies sit after the originals
        padded = torch.cat([padded, padded.flip(-1)])
        which = which + b * (torch.rand(b, generator=gen) < 0.5)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (2b, c, 2pad+1, 2pad+1, h, w)
    dev = x.device
    return windows[which.to(dev), :, dy.to(dev), dx.to(dev)]


def _jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.75, 1.25, generator=gen).to(x.device)
    bright = torch.empty(b, 1, 1, 1).uniform_(-0.25, 0.25, generator=gen).to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean + bright


def _erase(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Random erasing: blank one rectangle (2-25% of the area) in half of the images."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(0.02, 0.25, generator=gen)
    ratio = torch.exp(torch.empty(b).uniform_(math.log(0.3), math.log(3.3), generator=gen))
    eh = (torch.sqrt(area * ratio) * h).round().clamp(1, h)
    ew = (torch.sqrt(area / ratio) * w).round().clamp(1, w)
    top = (torch.rand(b, generator=gen) * (h - eh + 1)).floor()
    left = (torch.rand(b, generator=gen) * (w - ew + 1)).floor()
    on = torch.rand(b, generator=gen) < p
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
            & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1))
            & on.view(b, 1, 1))
    return x.masked_fill(mask.unsqueeze(1).to(x.device), 0.0)


MIX_ALPHA = {"mixup": 0.8, "cutmix": 1.0}  # timm's defaults


def mix_batch(x: torch.Tensor, y: torch.Tensor, classes: int, augment: tuple[str, ...],
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp or CutMix for the whole batch, as timm does per batch: each image is blended
    with (MixUp) or has a box pasted from (CutMix) the image at the mirrored position in
    the batch, and the targets become the same mixture of one-hot labels (of multi-hot
    label sets for multi-label data: a label both images have stays 1). With both
    tokens, each batch picks one at random. Without them, the batch passes unchanged."""
    kinds = [k for k in MIX_ALPHA if k in augment]
    if not kinds:
        return x, y
    kind = kinds[int(torch.randint(len(kinds), (1,), generator=gen))]
    seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(MIX_ALPHA[kind], MIX_ALPHA[kind]))
    other = x.flip(0)
    if kind == "mixup":
        x = x.mul(lam).add_(other, alpha=1.0 - lam)
    else:
        h, w = x.shape[-2:]
        bh, bw = round(h * math.sqrt(1.0 - lam)), round(w * math.sqrt(1.0 - lam))
        cy = int(torch.randint(h, (1,), generator=gen))
        cx = int(torch.randint(w, (1,), generator=gen))
        top, bottom = max(0, cy - bh // 2), min(h, cy + bh - bh // 2)
        left, right = max(0, cx - bw // 2), min(w, cx + bw - bw // 2)
        x = x.clone()
        x[..., top:bottom, left:right] = other[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)  # the box as clipped
    # multi-label targets are multi-hot already: each label's target becomes its share
    target = y.to(x.dtype) if y.ndim == 2 else F.one_hot(y, classes).to(x.dtype)
    return x, target.mul(lam).add_(target.flip(0), alpha=1.0 - lam)
