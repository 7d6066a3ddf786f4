"""What an augmentation spec does to real images: a grid of the original beside random
draws, made by the training pipeline itself (``train_batch``), so what it shows is what
training sees."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.base.config import augment_tokens
from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import decode, is_image_file
from cnnkit.data.pipeline import Preprocess, eval_batch, train_batch
from cnnkit.data.probe import default_augment
from cnnkit.inspect.figures import new_figure, save, show_image

FILE_SIZE = 160  # pictures from image files: large enough to see a rotation's corners


def preview_images(data: str, img_size: int | None = None, images: int = 4, seed: int = 0
                   ) -> tuple[torch.Tensor, list[str], int, str]:
    """uint8 ``(N, C, H, W)`` images to preview, their names, the size to show them at and
    the augmentation ``cnnkit train`` would use on them by default: one image file, or the
    first training image of each of up to ``images`` classes."""
    if is_image_file(data) and Path(data).is_file():
        size = img_size or FILE_SIZE
        arr = np.array(decode(data, channels=3, size=size))
        return (torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous(), [Path(data).name],
                size, default_augment(()))
    if os.path.isfile(data) and not data.lower().endswith(".csv"):
        raise CnnkitError(f"{data} is not an image cnnkit can read; pass an image file, a "
                          "folder, a CSV or a built-in set.")
    from cnnkit.data.sources import describe, load_splits

    source = describe(data)
    channels = source.builtin.channels if source.builtin else 3
    decode_size = img_size or (source.native_size or (source.builtin.default_img_size
                                                     if source.builtin else 128))
    pre = Preprocess(decode_size, channels, (0.0,) * channels, (1.0,) * channels)
    splits = load_splits(source, pre, val_fraction=None, test_fraction=None, seed=seed)
    train = splits.train
    picks: list[int] = []
    for label in range(len(train.classes)):
        has = train.labels[:, label] > 0.5 if train.multilabel else train.labels == label
        hits = [int(i) for i in torch.nonzero(has).flatten()]
        fresh = [i for i in hits if i not in picks]  # a label set may hold several
        if hits:
            picks.append((fresh or hits)[0])
        if len(picks) == images:
            break
    x = train.images[picks]
    size = img_size or max(x.shape[-2:])
    auto = default_augment(train.classes, source.builtin.augment if source.builtin else None)
    return x, [_name(train, i) for i in picks], size, auto


def _name(train: Any, i: int) -> str:
    """An image's class, or a multi-label image's label set (``cat|dog``)."""
    if not train.multilabel:
        return train.classes[int(train.labels[i])]
    return "|".join(train.classes[int(j)] for j in torch.nonzero(train.labels[i] > 0.5))


def _shown(x: torch.Tensor) -> np.ndarray:
    """A 0..1-normalised batch as ``(N, H, W, C)`` pictures."""
    return x.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def augment_grid(data: str, augment: str, out: str | os.PathLike, *, images: int = 4,
                 samples: int = 6, each: bool = False, img_size: int | None = None,
                 seed: int = 0) -> Path:
    """Write a PNG grid: per image (or, with ``each``, per token of the spec on the first
    image, then all of them together) the original and ``samples`` random draws.
    ``augment`` "auto": what ``cnnkit train`` uses on this data by default."""
    if augment != "auto" and not augment_tokens(augment):
        raise CnnkitError(f"--augment {augment!r} does nothing to preview; name transforms, "
                          "e.g. flip+rotate15+zoom0.2.")
    if samples < 1 or images < 1:
        raise CnnkitError("--samples and --images must be at least 1.")
    x, names, size, auto = preview_images(data, img_size, images, seed)
    shown = f"{auto} (train's default for this data)" if augment == "auto" else augment
    augment = auto if augment == "auto" else augment
    tokens = augment_tokens(augment)
    if not tokens:
        raise CnnkitError(f"cnnkit train augments this data with nothing ({shown}); name "
                          "transforms to preview with --augment, e.g. crop+rotate15.")
    c = x.shape[1]
    pre = Preprocess(size, c, (0.0,) * c, (1.0,) * c)
    gen = torch.Generator().manual_seed(seed)
    rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    if each:
        specs = [(t,) for t in tokens] + ([tokens] if len(tokens) > 1 else [])
        for spec in specs:
            batch = x[:1].repeat(samples, 1, 1, 1)
            label = spec[0] if len(spec) == 1 else "all together"
            rows.append((label, _shown(eval_batch(x[:1], pre))[0],
                         _shown(train_batch(batch, pre, spec, gen))))
    else:
        for i, name in enumerate(names):
            batch = x[i:i + 1].repeat(samples, 1, 1, 1)
            rows.append((name, _shown(eval_batch(x[i:i + 1], pre))[0],
                         _shown(train_batch(batch, pre, tokens, gen))))
    cell = 1.6
    fig = new_figure(cell * (samples + 1), cell * len(rows) + 0.6)
    axes = np.asarray(fig.subplots(len(rows), samples + 1, squeeze=False))
    for r, (label, original, drawn) in enumerate(rows):
        show_image(axes[r, 0], original)
        axes[r, 0].set_ylabel(label, fontsize=9)
        if r == 0:
            axes[r, 0].set_title("original", fontsize=9)
        for j in range(samples):
            show_image(axes[r, j + 1], drawn[j])
            if r == 0:
                axes[r, j + 1].set_title(f"draw {j + 1}", fontsize=9)
    fig.suptitle(f"--augment {shown}" + (": each transform alone, then together"
                                           if each else ""), fontsize=11)
    return save(fig, out)
