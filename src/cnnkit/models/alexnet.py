"""torchvision's AlexNet with timm's model surface (there is no AlexNet in timm)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.models.catalog import ALEXNET_URL  # noqa: F401  (re-exported)
from cnnkit.models.interface import TimmStyleModel


class AlexNet(TimmStyleModel):
    """AlexNet's layers under torchvision's names, so its weights load as they are."""

    def __init__(self, num_classes: int = 1000, pretrained: bool = False) -> None:
        super().__init__()
        from torchvision.models import AlexNet_Weights, alexnet

        net = alexnet(weights=AlexNet_Weights.IMAGENET1K_V1 if pretrained else None)
        self.features, self.avgpool, self.classifier = net.features, net.avgpool, net.classifier
        self.num_features = 4096
        if num_classes != 1000:
            self.reset_classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        self.classifier[-1] = nn.Linear(self.num_features, num_classes)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^features\.0\.", "blocks": r"^features\.(\d+)",
                "head": r"^classifier\."}
