"""Batches drawn from a resident :class:`ImageSet`: no worker processes, no file reads."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cnnkit.data.imageset import ImageSet
from cnnkit.data.pipeline import Preprocess, eval_batch, mix_batch, train_batch


def resident(imageset: ImageSet, device: torch.device, budget_bytes: int | None = None) -> ImageSet:
    """Move the uint8 images to ``device`` when they fit, so batches never cross the bus."""
    if device.type == "cpu" or imageset.images.device == device:
        return imageset
    size = imageset.images.numel()
    if budget_bytes is None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget_bytes = free // 4
    if budget_bytes is not None and size > budget_bytes:
        return imageset
    return ImageSet(imageset.images.to(device), imageset.labels.to(device), imageset.classes,
                    imageset.paths, imageset.crop_fraction)


class BatchLoader:
    """Iterate over (inputs, labels) batches, shuffled and augmented for training."""

    def __init__(
        self,
        imageset: ImageSet,
        pre: Preprocess,
        batch_size: int,
        device: torch.device,
        *,
        train: bool = False,
        augment: tuple[str, ...] = (),
        generator: torch.Generator | None = None,
        sample_weights: torch.Tensor | None = None,
        channels_last: bool = False,
        flip: bool = False,
        shard: tuple[int, int] = (0, 1),
        augment_generator: torch.Generator | None = None,
    ) -> None:
        self.data = imageset
        self.pre = pre
        self.batch_size = batch_size
        self.device = device
        self.train = train
        self.augment = augment
        self.generator = generator if generator is not None else torch.Generator()
        self.sample_weights = sample_weights
        self.channels_last = channels_last
        self.flip = flip  # evaluation only: return horizontally flipped inputs
        # Distributed training: (rank, world). Every rank draws the same order from
        # ``generator`` and takes its share of each global batch of ``batch_size``, so
        # the ranks' shards of a step are that step's batch in one process.
        self.rank, self.world = shard
        self.augment_generator = augment_generator or self.generator
        self.drawn: list[torch.Tensor] = []  # the indices this rank drew, batch by batch

    def __len__(self) -> int:
        n = len(self.data)
        if self.train and n > self.batch_size:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def order(self) -> torch.Tensor:
        n = len(self.data)
        if not self.train:
            return torch.arange(n)
        if self.sample_weights is not None:
            return torch.multinomial(self.sample_weights, n, replacement=True,
                                     generator=self.generator)
        return torch.randperm(n, generator=self.generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.world > 1:
                idx = idx.tensor_split(self.world)[self.rank]
            if len(idx) == 0:
                break
            self.drawn.append(idx)
            if self.data.images.device.type != "cpu":
                idx = idx.to(self.data.images.device)
            x = self.data.images[idx].to(self.device, non_blocking=True)
            y = self.data.labels[idx].to(self.device, non_blocking=True)
            if self.train:
                x = train_batch(x, self.pre, self.augment, self.augment_generator,
                                self.data.crop_fraction)
                # MixUp/CutMix: y becomes (B, classes) probabilities
                x, y = mix_batch(x, y, len(self.data.classes), self.augment,
                                 self.augment_generator)
            else:
                x = eval_batch(x, self.pre, self.data.crop_fraction)
                if self.flip:
                    x = x.flip(-1)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
