"""Validation while training: the loss and the task's figure of the model being trained
(or its weight average) on the validation split, after every epoch and for a trained
start; in a distributed run each process validates its own slice and the sums are
reduced, so every process gets the whole split's figures.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.data.imageset import ImageSet
from cnnkit.data.pipeline import Preprocess
from cnnkit.runtime.inference import log_probs
from cnnkit.training import distributed
from cnnkit.training.recipe import Plan


def _sums(kept: nn.Module, data: ImageSet, pre: Preprocess, plan: Plan
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed loss, hits, labels) of ``kept`` on ``data``."""
    cfg, task = plan.config, plan.task
    scores = log_probs(kept, data, pre, plan.device, task=task,
                       batch_size=max(256, cfg.batch_size),
                       precision=cfg.precision, channels_last=plan.channels_last)
    labels = data.labels.cpu()
    return (*task.validation_sums(scores, labels), labels)


def validate(kept: nn.Module, data: ImageSet, pre: Preprocess, plan: Plan) -> dict[str, float]:
    """Validation loss and the task's figure of ``kept`` on ``data`` (one process)."""
    task = plan.task
    nll, hits, labels = _sums(kept, data, pre, plan)
    return {"val_loss": nll.item() / max(len(labels), 1),
            f"val_{task.figure}": hits.item() / max(task.units(labels), 1)}


def validate_shards(kept: nn.Module, part: ImageSet, pre: Preprocess, plan: Plan
                    ) -> dict[str, float]:
    """Validation loss and the task's figure over every rank's slice (``part``: this
    rank's), summed across ranks."""
    task = plan.task
    nll, hits, labels = _sums(kept, part, pre, plan)
    nll, hits, n, units = distributed.all_sum(
        plan.cluster, nll, hits, torch.tensor(len(labels)), torch.tensor(task.units(labels)))
    return {"val_loss": (nll / n).item(), f"val_{task.figure}": (hits / units).item()}
