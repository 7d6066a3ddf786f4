"""ImageNet predictions from a pretrained model as it is: no training, 1,000 classes."""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from cnnkit.data.pipeline import Preprocess
from cnnkit.modelfile import ModelCard
from cnnkit.models.build import create_model, resolve


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """Readable names of the 1,000 ImageNet-1k classes, in index order ("tabby cat"...)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def imagenet_model(model: str) -> tuple[nn.Module, ModelCard]:
    """``cnnkit predict efficientnet_lite0 photo.jpg``: the backbone with its ImageNet head."""
    arch, info = resolve(model)
    pre = Preprocess(info.img_size or 224, 3, tuple(info.mean or (0.485, 0.456, 0.406)),
                     tuple(info.std or (0.229, 0.224, 0.225)), info.interpolation,
                     info.crop_pct)
    classes = imagenet_classes()
    net = create_model(arch, len(classes), 3, pre.img_size, pretrained=True)
    return net, ModelCard(arch, classes, pre, {"mode": "zero-shot", "weights": info.pretrained})
