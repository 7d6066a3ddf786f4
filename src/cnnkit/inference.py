"""Batched forward passes over image sets: logits, with optional flip test-time augmentation."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from cnnkit.data.imageset import ImageSet
from cnnkit.data.loader import BatchLoader
from cnnkit.data.pipeline import Preprocess

# On a CPU, forward passes over a few large images at a time keep each layer's
# activations in cache. EfficientNet-Lite0 at 224 px on 2 cores: inference 191 images/s
# in chunks of 4, 125 in 8, 67 in 64, 39 in 128; training steps 50 images/s in chunks
# of 8, 22 in one pass of 32. Training at 96 px (batch 128): 149 images/s in chunks of
# 16 or 32, 131 in 43 (the budget of 8 at 224), 91 in one pass; at 224 px chunks of 6
# and 8 train alike (docs/design-notes.md).
CPU_CHUNK_PIXELS = {"train": 6 * 224 * 224, "infer": 4 * 224 * 224}


def chunk_size(device: torch.device, img_size: int, batch_size: int, *,
               training: bool = False) -> int:
    """Images per forward pass: the whole batch on accelerators, a cache-sized chunk on a
    CPU (small images: still the whole batch)."""
    if device.type != "cpu":
        return batch_size
    budget = CPU_CHUNK_PIXELS["train" if training else "infer"]
    return max(1, min(batch_size, budget // (img_size * img_size)))


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision in ("bf16", "fp16") and device.type in ("cuda", "cpu"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


@torch.inference_mode()
def log_probs(
    model: nn.Module,
    data: ImageSet,
    pre: Preprocess,
    device: torch.device,
    *,
    batch_size: int = 256,
    tta: bool = False,
    precision: str = "fp32",
    channels_last: bool = False,
) -> torch.Tensor:
    """Log-probabilities ``(N, classes)``, float32 on the CPU; ``tta`` averages with the mirror."""
    was_training = model.training
    model.eval()
    outs = []
    views = (False, True) if tta else (False,)
    batch_size = chunk_size(device, pre.img_size, batch_size)
    loaders = [BatchLoader(data, pre, batch_size, device, flip=f, channels_last=channels_last)
               for f in views]
    for batches in zip(*loaders):
        acc = None
        for x, _ in batches:
            with autocast(device, precision):
                logits = model(x).float()
            acc = logits.log_softmax(1) if acc is None else acc + logits.log_softmax(1)
        # Averaged log-probabilities, renormalised: the views' geometric mean sums to 1.
        outs.append(((acc / len(views)).log_softmax(1) if tta else acc).cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, len(data.classes))
