"""Batched forward passes over image sets: the task's scores, with optional flip
test-time augmentation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from cnnkit.data.imageset import ImageSet
from cnnkit.data.loader import BatchLoader
from cnnkit.data.pipeline import Preprocess
from cnnkit.models.interface import evaluating
from cnnkit.tasks.base import Task

# On a CPU, forward passes over a few large images at a time keep each layer's
# activations in cache, which is faster than one pass over the whole batch. The budget
# is in pixels (6 images at 224 px for training, 4 for inference), so small images are
# never split; the measurements behind it are in docs/design-notes.md ("On a CPU, large
# images go through the network a few at a time").
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
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    data: ImageSet,
    pre: Preprocess,
    device: torch.device,
    *,
    task: Task,
    batch_size: int = 256,
    tta: bool = False,
    precision: str = "fp32",
    channels_last: bool = False,
    split: bool = True,
) -> torch.Tensor:
    """Per-class log-probabilities ``(N, classes)`` as ``task`` scores the model's
    outputs, float32 on the CPU; ``tta`` merges them with the mirror's.

    ``model`` is a torch module or any callable from a batch to logits (a prediction
    backend); ``split``: cut ``batch_size`` to :func:`chunk_size` (eager torch on a CPU).
    """
    outs = []
    views = (False, True) if tta else (False,)
    if split:
        batch_size = chunk_size(device, pre.img_size, batch_size)
    loaders = [BatchLoader(data, pre, batch_size, device, flip=f, channels_last=channels_last)
               for f in views]
    mode = evaluating(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
    with mode:
        for batches in zip(*loaders):
            scores = []
            for x, _ in batches:
                with autocast(device, precision):
                    logits = model(x)
                scores.append(task.scores(logits))
            outs.append(task.merge_views(scores).cpu())
    return torch.cat(outs) if outs else torch.empty(0, len(data.classes))


@torch.inference_mode()
def view_outputs(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    data: ImageSet,
    pre: Preprocess,
    device: torch.device,
    *,
    batch_size: int = 256,
    tta: bool = False,
    precision: str = "fp32",
    channels_last: bool = False,
    split: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """The raw logits ``(N, K)`` of each view (the images; and their mirrors with
    ``tta``), float32 NumPy arrays: what a task's answers and calibration read beyond the
    scores (arguments as :func:`log_probs`); and each view's feature distances ``(N,)``
    when ``model`` returns ``(logits, distance)``
    (:class:`cnnkit.models.feature_distance.WithDistance`, or a backend over a file with a
    distance output); None otherwise."""
    if split:
        batch_size = chunk_size(device, pre.img_size, batch_size)
    logits, distances, paired = [], [], False
    mode = evaluating(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
    with mode:
        for flip in ((False, True) if tta else (False,)):
            parts, dists = [], []
            for x, _ in BatchLoader(data, pre, batch_size, device, flip=flip,
                                    channels_last=channels_last):
                with autocast(device, precision):
                    out = model(x)
                if isinstance(out, tuple):
                    out, d = out
                    dists.append(d.float().cpu())
                    paired = True
                parts.append(out.float().cpu())
            logits.append(torch.cat(parts).numpy() if parts
                          else np.zeros((0, len(data.classes)), dtype=np.float32))
            distances.append(torch.cat(dists).numpy() if dists
                             else np.zeros(0, dtype=np.float32))
    return logits, (distances if paired else None)
