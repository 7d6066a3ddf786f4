"""A run whose training diverged: the loss or the weights stopped being finite numbers.

Training on then only spends time on a model that answers one class for every image, so
the loop stops at the first non-finite loss with one line saying where, the likely cause
and what to try; the model file keeps the last epoch saved before it (a model with NaN
weights is never saved).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError


def finite_weights(model: nn.Module) -> bool:
    """Whether every parameter and buffer (batch norm's running statistics) is finite."""
    checks = [t.isfinite().all() for t in (*model.parameters(), *model.buffers())
              if t.is_floating_point()]
    return bool(torch.stack(checks).all().item()) if checks else True


def diverged(what: str, where: str, config: TrainConfig, asked: TrainConfig,
             saved_epoch: int | None, model_path: str) -> CnnkitError:
    """The error that stops a diverged run: ``what`` became non-finite (``the training
    loss became nan``) ``where`` (``at epoch 2, step 14 of 45``); ``config`` is the
    resolved run's, ``asked`` the options as given (a weight decay the user chose is as
    likely a cause as the rate); ``saved_epoch``: the epoch of the model file kept, if
    any."""
    lr = config.lr if isinstance(config.lr, (int, float)) else None
    decay = asked.weight_decay  # given: a cause as likely as the rate
    if lr is not None and decay:
        cause = (f"the learning rate or the weight decay is likely too high; lower --lr "
                 f"(now {lr:g}) or --weight-decay (now {decay:g})")
    elif lr is not None:
        cause = (f"the learning rate {lr:g} is likely too high; lower --lr (now {lr:g}): "
                 f"try --lr find, or a rate 10x smaller (--lr {lr / 10:g})")
    else:
        cause = "lower --lr: try --lr find"
    if config.precision == "fp16":
        cause += "; fp16 can overflow where --precision bf16 or fp32 does not"
    kept = (f"the model of epoch {saved_epoch} is kept ({model_path})" if saved_epoch
            else "no epoch had finished, so no model was saved")
    return CnnkitError(f"{what} {where}: {cause}. Training stopped; {kept}.")
