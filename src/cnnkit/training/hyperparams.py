"""The recipe's numbers: epochs, batch size, learning rate, weight decay and head epochs
for a mode, a built-in set and a device; the defaults that follow from how many images
there are; a trained start's smaller rate; and which epoch's model a run keeps.

:func:`cnnkit.training.recipe.resolve_config` and :func:`~cnnkit.training.recipe.finalize`
ask these when they fill in a plan; nothing here reads data or a model.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.builtin import BuiltinSet
from cnnkit.training.optim import trained_start_share

# Peak learning rates for a batch of 256, scaled linearly with the batch size.
PEAK_LR = {"adamw": 8e-3, "sgd": 0.1}
WEIGHT_DECAY = {"adamw": 0.05, "sgd": 5e-4}
# AdamW fine-tuning rate, the same at every batch size: the batch-scaled rates
# under-trained the base at small batches (the sweeps are in docs/design-notes.md,
# "Fine-tuning runs at AdamW 2e-3"). SGD keeps the batch-scaled rate divided by 8.
FINE_TUNE_LR = {"adamw": 2e-3}
# Picking the best of several epochs by fewer validation images than this selects noise:
# the accuracy of 120 images has a standard error of about 3 points (the measurement
# is in docs/design-notes.md, "--keep auto").
MIN_VAL_TO_PICK = 1000


def resolve_numbers(config: TrainConfig, mode: str, builtin: BuiltinSet | None,
                    device: torch.device, world: int = 1) -> dict[str, Any]:
    """Epochs, batch size, learning rate, weight decay and head epochs.

    The batch size is the global batch of all ``world`` processes together, so the
    learning rate and the results do not depend on how many processes share it.
    """
    if config.epochs is not None:
        epochs = config.epochs
    elif builtin is not None:
        epochs = builtin_epochs(builtin.name, mode)
    else:
        epochs = 10 if mode == "fine-tune" else 5 if mode == "features" else 30
    batch_size = config.batch_size or (256 if device.type == "cuda" else 128)
    if batch_size % world:
        if config.batch_size is not None:
            low = max(world, batch_size - batch_size % world)
            raise CnnkitError(f"--batch-size is the global batch, shared evenly by the {world} "
                              f"processes, so it must be a multiple of {world}: use {low} or "
                              f"{low + world}. Received: {batch_size}")
        batch_size = max(world, batch_size - batch_size % world)
    given_lr = None if config.lr == "find" else config.lr  # the finder runs after loading
    lr = given_lr or PEAK_LR[config.optimizer] * batch_size / 256
    if mode == "fine-tune" and given_lr is None:
        lr = FINE_TUNE_LR.get(config.optimizer, lr / 8)
    weight_decay = WEIGHT_DECAY[config.optimizer] if config.weight_decay is None \
        else config.weight_decay
    head_epochs = config.head_epochs
    if mode == "fine-tune" and head_epochs is None:
        # With the linear probe the head starts fitted; without it, train it a while.
        head_epochs = 0 if config.probe else max(1, min(3, epochs // 4))
    if mode == "fine-tune" and head_epochs >= epochs:
        raise CnnkitError(f"--head-epochs ({head_epochs}) must be fewer than --epochs ({epochs}) "
                          "so that fine-tuning gets at least one epoch.")
    return {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "head_epochs": head_epochs if mode == "fine-tune" else None}


def trained_start_rate(asked: TrainConfig, cfg: TrainConfig, n_train: int) -> TrainConfig:
    """A default rate from a trained start (an --init-from run, or fine-tuning after the
    linear probe) shrinks for a short run (:func:`trained_start_share`)."""
    trained = cfg.init_from is not None or (cfg.mode == "fine-tune" and cfg.probe)
    if not trained or asked.lr not in (None, "find") or cfg.mode == "features":
        return cfg
    steps = math.ceil(n_train / cfg.batch_size) * (cfg.epochs - (cfg.head_epochs or 0))
    share = trained_start_share(steps)
    if share == 1.0:
        return cfg
    lr = float(f"{cfg.lr * share:.3g}")
    start = "--init-from" if cfg.init_from else "the linear probe"
    log.info(f"a trained start ({start}) and {steps:,} steps: peak rate {lr:g}, "
             f"{share:.2g} of {cfg.lr:g}, so a short run does not shake off what the start "
             "knows (--lr to choose)")
    return cfg.replace(lr=lr)


def keeps_best(keep: str, val_images: int, patience: int) -> bool:
    """Whether model.safetensors is the best epoch by validation accuracy (else the last)."""
    if keep != "auto":
        return keep == "best"
    return val_images > 0 and (patience > 0 or val_images >= MIN_VAL_TO_PICK)


def small_data_batch(n_train: int, batch_size: int, min_steps: int = 25) -> int:
    """Halve the default batch until an epoch has ``min_steps`` steps (few-image runs)."""
    while batch_size > 16 and n_train / batch_size < min_steps:
        batch_size //= 2
    return batch_size


SMALL_FINE_TUNE = 5_000  # fine-tuning on fewer images gets more epochs (they are cheap)


def small_data_changes(config: TrainConfig, resolved: TrainConfig, n_train: int
                       ) -> dict[str, float]:
    """Defaults that depend on how many images there are, for options the user left open."""
    changes: dict[str, float] = {}
    if config.batch_size is None and resolved.mode != "features":  # features: no batches
        batch = small_data_batch(n_train, resolved.batch_size)
        if batch != resolved.batch_size:
            changes["batch_size"] = batch
    if config.epochs is None and resolved.mode == "fine-tune" and n_train < SMALL_FINE_TUNE \
            and resolved.epochs < 10:
        changes["epochs"] = 10  # few images fit better in more epochs (design-notes.md)
    return changes


def builtin_epochs(name: str, mode: str) -> int:
    if mode == "features":
        return 5
    if mode == "fine-tune":
        return 6
    return {"fashion-mnist": 10, "digits": 30, "shapes": 15}.get(name, 20)
