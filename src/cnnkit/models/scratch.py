"""CNNs written out plainly, trained from random weights; each adapts to any input.

Their names and layers are registered in :mod:`cnnkit.models.catalog`; layer stacks
build through :class:`cnnkit.models.layerspec.StackBuilder`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnkit.models.resnet import small_resnet


def build_resnet(num_classes: int, in_chans: int, img_size: int, **kwargs: Any) -> nn.Module:
    kwargs.pop("pretrained", None)
    return small_resnet(num_classes, in_chans, img_size, **kwargs)
