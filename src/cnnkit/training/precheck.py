"""Checks before training starts: the short data check (``cnnkit check`` without
decoding or near-copies, its warnings one line each; ``--no-check`` skips it) and the
memory one batch needs."""

from __future__ import annotations

from cnnkit.base import log
from cnnkit.base.device import require_memory
from cnnkit.models.layerspec import plan_stack
from cnnkit.training.recipe import Plan

BATCH_COPIES = 4  # float copies of a batch alive at once: input, augmented, normalised, grad
# float copies of every parameter while training: weights, gradients, two AdamW moments
TRAIN_COPIES = 4


def check_data(plan: Plan) -> None:
    """Warn about copies across labels or splits, leakage, links that loop, tiny images
    and imbalance in folder and CSV data; built-in sets are known and skipped.

    Problems (an empty class, one class) are left to loading, which stops with them.
    """
    if not plan.config.check or plan.source.root is None:
        return
    result = plan.source.audit(img_size=plan.pre.img_size, decode=False, progress=False)
    warnings = result.warnings
    for finding in warnings:
        example = f" (e.g. {log.quoted(finding.files[0])})" if finding.files else ""
        log.warn(f"data check: {finding.what}{example}")
    if warnings:
        log.warn(f"data check: run `cnnkit check {plan.source.spec}` for every file name and "
                 "advice (--no-check skips this check)")


def check_memory(plan: Plan) -> None:
    """Refuse a batch whose input alone would not fit in memory (a lower bound: the
    network's activations come on top), before anything of that size is allocated."""
    cfg, pre = plan.config, plan.pre
    if cfg.batch_size is None:
        return
    require_memory(cfg.batch_size * pre.channels * pre.img_size ** 2 * 4 * BATCH_COPIES,
                   f"A batch of {cfg.batch_size} images at {pre.img_size}x{pre.img_size}",
                   "Use a smaller --img-size or --batch-size.")


def check_model_size(plan: Plan) -> None:
    """Refuse a layer stack whose parameters alone (weights, gradients, optimizer moments)
    would not fit in memory, before the data is loaded or anything is allocated."""
    layers = plan.arch.layers
    if layers is None:
        return  # a registered or pretrained architecture: its size is known and sane

    planned, _ = plan_stack(list(layers), plan.pre.channels, plan.pre.img_size)
    params = sum(p.params for p in planned)
    copies = TRAIN_COPIES + (1 if plan.config.ema else 0)
    require_memory(params * 4 * copies,
                   f"Training {plan.arch.name[:60]} ({params:,} parameters before its "
                   "classifier, at {0}x{0})".format(plan.pre.img_size),
                   "Use fewer filters or units, or pool (or gap) before the dense layers.")
