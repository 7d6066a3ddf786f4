"""Decoded images held in memory as one uint8 tensor, with their labels and class names.

Labels are class indices ``(N,)`` (int64: single-label data) or a multi-hot matrix
``(N, classes)`` (float32: multi-label data, where a row of zeros is an image with no
label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cnnkit.data.labelsets import iterative_split, take_per_label


@dataclass(frozen=True)
class ImageSet:
    """A labelled set of decoded images.

    ``images`` is uint8 ``(N, C, H, W)``: four times smaller than float and the form
    in which a whole small data set can stay resident on the training device.
    ``labels`` are what the run's task makes of them (:mod:`cnnkit.tasks`): class
    indices ``(N,)`` for one class per image, or per-class targets ``(N, classes)``.
    ``crop_fraction`` is the centre crop that evaluation takes (timm's ``crop_pct``
    when the images were decoded with a margin around the model's input size).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    paths: tuple[str, ...] | None = None
    crop_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W); got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if len(self.labels) != len(self.images):
            raise ValueError("images and labels differ in length")
        if self.labels.ndim == 2 and self.labels.shape[1] != len(self.classes):
            raise ValueError(f"multi-hot labels have {self.labels.shape[1]} columns for "
                             f"{len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, index: Sequence[int] | torch.Tensor) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        paths = None if self.paths is None else tuple(self.paths[i] for i in index.tolist())
        return ImageSet(self.images[index], self.labels[index], self.classes, paths,
                        self.crop_fraction)

    @property
    def multilabel(self) -> bool:
        """Whether the labels are label sets (a multi-hot matrix) rather than one class."""
        return self.labels.ndim == 2

    def class_counts(self) -> list[int]:
        """Images per class (multi-label: images that have each label)."""
        if self.multilabel:
            return [int(v) for v in (self.labels > 0.5).sum(0).tolist()]
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def unlabelled(self) -> int:
        """Images with no label (only multi-label data has them)."""
        if not self.multilabel or not len(self):
            return 0
        return int(((self.labels > 0.5).sum(1) == 0).sum())


def stratified_split(
    labels: torch.Tensor, fractions: Sequence[float], seed: int
) -> list[torch.Tensor]:
    """Split indices per class into ``1 - sum(fractions)`` and each fraction, seeded.

    Every class with at least ``len(fractions) + 1`` images keeps at least one image in
    each part, so a small class is never missing from validation or test. Multi-hot
    labels are split by iterative stratification
    (:func:`cnnkit.data.labelsets.iterative_split`).
    """
    if labels.ndim == 2:
        return iterative_split(labels, fractions, seed)
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n = len(idx)
        start = 0
        for k, frac in enumerate(fractions):
            take = round(n * frac) if frac > 0 else 0
            if frac > 0 and n > len(fractions):
                take = max(1, take)
            parts[k + 1].append(idx[start:start + take])
            start += take
        parts[0].append(idx[start:])
    return [torch.sort(torch.cat(p))[0] if p else torch.empty(0, dtype=torch.long)
            for p in parts]


def take_per_class(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of a seeded subset with at most ``per_class`` images of each class
    (multi-hot labels: about ``per_class`` images with each label)."""
    if labels.ndim == 2:
        return take_per_label(labels, per_class, seed)
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.sort(torch.cat(keep))[0]
