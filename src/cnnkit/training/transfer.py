"""Transfer learning: phases for fine-tuning and the frozen-features mode.

Fine-tuning trains the new head with the base frozen (batch norm kept in eval mode),
then unfreezes the base (all of it or its top blocks) at lower learning rates.
"""

from __future__ import annotations

from torch import nn

from cnnkit.training.loop import Phase
from cnnkit.training.optim import param_groups
from cnnkit.training.recipe import Plan


def _classifier_names(model: nn.Module) -> set[str]:
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _head_only(weight_decay: float):
    def prepare(model: nn.Module) -> list[dict]:
        names = _classifier_names(model)
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        return param_groups(model.named_parameters(), weight_decay)
    return prepare


def _everything(weight_decay: float):
    def prepare(model: nn.Module) -> list[dict]:
        for p in model.parameters():
            p.requires_grad_(True)
        return param_groups(model.named_parameters(), weight_decay)
    return prepare


def phases(plan: Plan) -> list[Phase]:
    cfg = plan.config
    if cfg.mode == "fine-tune":
        head = cfg.head_epochs or 1
        return [Phase("head", head, cfg.lr * 4, _head_only(cfg.weight_decay)),
                Phase("fine-tune", cfg.epochs - head, cfg.lr, _everything(cfg.weight_decay))]
    return [Phase("train", cfg.epochs, cfg.lr, _everything(cfg.weight_decay))]
