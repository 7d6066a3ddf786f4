"""Batched forward passes over image sets: logits, with optional flip test-time augmentation."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from cnnkit.data.imageset import ImageSet
from cnnkit.data.loader import BatchLoader
from cnnkit.data.pipeline import Preprocess


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
    loaders = [BatchLoader(data, pre, batch_size, device, flip=f, channels_last=channels_last)
               for f in views]
    for batches in zip(*loaders):
        acc = None
        for x, _ in batches:
            with autocast(device, precision):
                logits = model(x).float()
            acc = logits.log_softmax(1) if acc is None else acc + logits.log_softmax(1)
        # The views' mean log-probability is a geometric mean of their probabilities, which
        # does not sum to 1: renormalise it.
        outs.append(((acc / len(views)).log_softmax(1) if tta else acc).cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, len(data.classes))
