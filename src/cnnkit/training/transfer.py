"""Transfer learning: which parameters train in which phase, and at what learning rate.

Fine-tuning first fits the new head to the frozen base's features (a linear probe by
L-BFGS, :func:`cnnkit.training.features.probe`, and/or ``--head-epochs`` of SGD with
the base frozen; batch norm stays in eval mode throughout, so ImageNet statistics are
not overwritten by a few noisy batches), then
unfreezes the base, all of it or its top N blocks, with learning rates that shrink
by ``lr_decay`` per block going down (the layers nearest the input change least).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.models.interface import classifier_params
from cnnkit.training.optim import param_groups


@dataclass(frozen=True)
class Phase:
    """Epochs that train one set of parameters under one learning-rate schedule."""


    name: str
    epochs: int
    lr: float
    prepare: Callable[[nn.Module], list[dict]]  # freeze/unfreeze; returns param groups
    bn_eval: bool = False  # every batch norm keeps its running statistics (fine-tuning)


@dataclass(frozen=True)
class Block:
    """Parameters that freeze and unfreeze together, numbered from the input."""

    depth: int
    names: tuple[str, ...]


def classifier_names(model: nn.Module) -> set[str]:
    return {n for n, _ in classifier_params(model)}


def blocks(model: nn.Module) -> list[Block]:
    """The base's blocks from input to output (timm's coarse groups), classifier excluded."""
    head = classifier_names(model)
    names = [n for n, _ in model.named_parameters() if n not in head]
    groups: dict[int, list[str]] = {}
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        for depth, members in group_parameters(model, model.group_matcher(coarse=True)).items():
            kept = [n for n in members if n not in head]
            if kept:
                groups[int(depth)] = kept
    if not groups:  # no matcher: each top-level child is a block
        order = {name.split(".")[0]: i for i, name in enumerate(dict.fromkeys(
            n.split(".")[0] for n in names))}
        for n in names:
            groups.setdefault(order[n.split(".")[0]], []).append(n)
    return [Block(i, tuple(groups[d])) for i, d in enumerate(sorted(groups))]


def check_unfreeze(model: nn.Module, cfg: TrainConfig, name: str) -> None:
    """--unfreeze N beyond the model's blocks would unfreeze them all without a word,
    which is --unfreeze all, not the partial fine-tune the number asked for."""
    if cfg.mode != "fine-tune" or cfg.unfreeze == "all":
        return
    count = len(blocks(model))
    if int(cfg.unfreeze) > count:
        raise CnnkitError(f"--unfreeze {cfg.unfreeze}: {name} has {count} blocks below its "
                          f"head. Pass 1 to {count} to train the top ones, or --unfreeze all.")


def _head_only(weight_decay: float) -> Callable[[nn.Module], list[dict]]:
    def prepare(model: nn.Module) -> list[dict]:
        names = classifier_names(model)
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        return param_groups(model.named_parameters(), weight_decay)
    return prepare


def _unfrozen(weight_decay: float, top: int | None, lr_decay: float
              ) -> Callable[[nn.Module], list[dict]]:
    """The head at the full rate; each block below it at ``lr_decay`` times the one above."""
    def prepare(model: nn.Module) -> list[dict]:
        params = dict(model.named_parameters())
        base = blocks(model)
        trainable = base if top is None else base[max(0, len(base) - top):]
        for p in params.values():
            p.requires_grad_(False)
        head = sorted(classifier_names(model))
        groups = param_groups(((n, params[n].requires_grad_(True)) for n in head), weight_decay)
        for rank, block in enumerate(reversed(trainable), start=1):
            scale = lr_decay ** rank
            members = [(n, params[n].requires_grad_(True)) for n in block.names]
            groups += param_groups(members, weight_decay, lr_scale=scale)
        return groups
    return prepare


def _everything(weight_decay: float) -> Callable[[nn.Module], list[dict]]:
    def prepare(model: nn.Module) -> list[dict]:
        for p in model.parameters():
            p.requires_grad_(True)
        return param_groups(model.named_parameters(), weight_decay)
    return prepare


def phases(cfg: TrainConfig) -> tuple[Phase, ...]:
    """The phases a resolved config trains in (a plan's ``phases``)."""
    if cfg.mode == "fine-tune":
        head = cfg.head_epochs or 0
        top = None if cfg.unfreeze == "all" else int(cfg.unfreeze)
        # By default batch norm keeps ImageNet's running statistics in both phases (as
        # Keras's transfer-learning guide advises): re-estimating them from small batches
        # of unlike images undoes the pretrained features in the first fine-tuning steps.
        # ``--bn-stats update`` normalises the unfrozen blocks by batch statistics instead
        # (a plain training loop's model.train()); the frozen head phase never does.
        tune = Phase("fine-tune", cfg.epochs - head, cfg.lr,
                     _unfrozen(cfg.weight_decay, top, cfg.lr_decay),
                     bn_eval=cfg.bn_stats != "update")
        if not head:
            return (tune,)
        return (Phase("head", head, cfg.lr * 4, _head_only(cfg.weight_decay), bn_eval=True), tune)
    return (Phase("train", cfg.epochs, cfg.lr, _everything(cfg.weight_decay)),)


def describe_phase(model: nn.Module, phase: Phase, groups: list[dict]) -> dict:
    """What the run's report says about a phase: what trained, what stayed frozen."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    params = dict(model.named_parameters())
    base = blocks(model)
    frozen_blocks = [b.depth for b in base if not any(params[n].requires_grad for n in b.names)]
    scales = sorted({round(g.get("lr_scale", 1.0), 6) for g in groups})
    return {"name": phase.name, "epochs": phase.epochs, "lr": phase.lr,
            "trainable_params": trainable, "frozen_params": frozen,
            "frozen_blocks": len(frozen_blocks), "blocks": len(base),
            "frozen": "base" if len(frozen_blocks) == len(base) and base else
            "none" if not frozen_blocks else f"bottom {len(frozen_blocks)} of {len(base)} blocks",
            "lr_scales": [scales[0], scales[-1]] if scales else [1.0, 1.0],
            "batch_norm": "running statistics kept" if phase.bn_eval else
            "batch statistics (trainable blocks)"}
