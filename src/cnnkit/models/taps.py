"""The features mode's backbone: a head that reads several depths of a network at once."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from cnnkit.models.interface import GroupMatcher, TimmStyleModel, evaluating


class TappedBackbone(TimmStyleModel):
    """A backbone whose head reads the average and maximum of several depths' maps.

    ``forward_features`` returns the last map as usual (so Grad-CAM and summaries work
    unchanged); forward hooks keep the tapped blocks' outputs for ``forward_head``.
    """

    def __init__(self, net: nn.Module, taps: str, num_classes: int) -> None:
        super().__init__()
        net.reset_classifier(0, global_pool="")
        self.net = net
        self.taps = tuple(t for t in taps.split(",") if t)
        self._kept: dict[str, torch.Tensor] = {}
        modules = dict(net.named_modules())
        for name in self.taps:
            modules[name].register_forward_hook(partial(_keep, self._kept, name))
        with torch.no_grad(), evaluating(net):
            probe = self.forward_head(self.forward_features(torch.zeros(1, 3, 64, 64)), True)
        self.num_features = probe.shape[1]
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._kept.clear()
        return self.net.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        maps = [self._kept[t] for t in self.taps] + [x]
        codes = torch.cat([torch.cat([m.mean((2, 3)), m.amax((2, 3))], 1) for m in maps], 1)
        return codes if pre_logits else self.classifier(codes)

    def group_matcher(self, coarse: bool = False) -> GroupMatcher:
        """The wrapped network's groups (its names under ``net.``), the classifier last."""
        from timm.models import group_parameters

        order = group_parameters(self.net, self.net.group_matcher(coarse), reverse=True)
        return lambda name: order.get(name.removeprefix("net."), float("inf"))


def _keep(store: dict[str, torch.Tensor], name: str, _m: nn.Module, _i: Any,
          out: torch.Tensor) -> None:
    store[name] = out
