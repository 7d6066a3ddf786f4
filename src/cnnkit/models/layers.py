"""Build a layer stack (:mod:`cnnkit.models.layerspec` reads the spec) as a torch
:class:`ConvNet` with timm's model surface."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.base.device import require_memory
from cnnkit.models.interface import TimmStyleModel
from cnnkit.models.layerspec import (  # noqa: F401  (the spec API, also importable here)
    Layer,
    UnknownTokenError,
    check_layer,
    load_yaml,
    looks_like_spec,
    parse_spec,
    plan_stack,
)


class ConvNet(TimmStyleModel):
    """A feature extractor, a head and a classifier, with timm's model surface.

    ``features`` maps images to feature maps, ``head`` maps those to the
    pre-logits vector (pooling or flattening, hidden dense layers, dropout), and
    ``classifier`` is the final dense layer that :meth:`reset_classifier` replaces.
    Softmax is applied when predicting; the network itself returns logits.
    """

    def __init__(self, features: nn.Sequential, head: nn.Sequential, num_features: int,
                 num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.num_features = num_features
        self.num_classes = num_classes
        self.classifier = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head(x)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int, *args: Any, **kwargs: Any) -> None:
        self.num_classes = num_classes
        super().reset_classifier(num_classes)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups from input to output, as timm's layer-wise tools expect."""
        return {"stem": r"^features\.0\.", "blocks": r"^features\.(\d+)", "head": r"^head\."}


def build_stack(num_classes: int, in_chans: int, img_size: int, *, layers: list[Layer],
                **_: Any) -> ConvNet:
    """A registered layer stack's builder: the stack, once its parameters are known to
    fit in memory."""
    planned, units = plan_stack(layers, in_chans, img_size)
    params = sum(p.params for p in planned) + (units + 1) * num_classes
    require_memory(params * 4, f"A layer stack of {params:,} parameters",
                   "Use fewer filters or units, or pool (or gap) before the dense layers.")
    return build_sequential(layers, num_classes, in_chans, img_size)


def build_sequential(layers: list[Layer], num_classes: int, in_chans: int,
                     img_size: int) -> ConvNet:
    """Build a :class:`ConvNet` from layer dicts as :func:`plan_stack` plans it (which
    checks that the image is large enough)."""
    planned, units = plan_stack(layers, in_chans, img_size)
    parts: dict[str, list[nn.Module]] = {"features": [], "head": []}
    for p in planned:
        parts[p.part].append(getattr(nn, p.type)(*p.args, **p.kwargs))
    return ConvNet(nn.Sequential(*parts["features"]), nn.Sequential(*parts["head"]), units,
                   num_classes)
