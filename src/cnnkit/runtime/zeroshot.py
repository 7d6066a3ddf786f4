"""ImageNet predictions from a pretrained model as it is: no training, 1,000 classes."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.artifacts import derived
from cnnkit.artifacts.modelcard import ModelCard
from cnnkit.artifacts.onnxfile import read_meta
from cnnkit.base.errors import CnnkitError
from cnnkit.data.preprocess import Preprocess
from cnnkit.models.build import Architecture, create_model, resolve
from cnnkit.models.hub import local_weights_file
from cnnkit.models.registry import ModelInfo
from cnnkit.runtime.exports import EXPORT_OPTIONS, export_places

if TYPE_CHECKING:
    from torch import nn


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """Readable names of the 1,000 ImageNet-1k classes, in index order ("tabby cat"...)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def _input(info: ModelInfo) -> Preprocess:
    return Preprocess(info.img_size or 224, 3, tuple(info.mean or (0.485, 0.456, 0.406)),
                      tuple(info.std or (0.229, 0.224, 0.225)), info.interpolation,
                      info.crop_pct)


def weights_id(arch: Architecture, info: ModelInfo, pre: Preprocess) -> str | None:
    """A sha256 naming these pretrained weights at this input, from where they are read
    (file, size, modification time) rather than from the tensors, so an earlier export
    is found without loading them; None when the weights are not here yet."""
    path = local_weights_file(info.weights_from)
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    what = [arch.to_dict(), pre.to_dict(), info.weights_from, str(path.resolve()),
            stat.st_size, stat.st_mtime_ns]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def imagenet_card(model: str) -> ModelCard:
    """The card of a pretrained model with its ImageNet head (timm's class names)."""
    arch, info = resolve(model)
    pre = _input(info)
    return ModelCard(arch, imagenet_classes(), pre, _card_info(info),
                     weights_id(arch, info, pre))


def cached_imagenet_export(model: str) -> tuple[ModelCard, Path] | None:
    """A pretrained model's earlier export in cnnkit's cache (made by the onnx backend)
    and its card, found without torch or timm: the class names are the file's own."""
    arch, info = resolve(model)
    pre = _input(info)
    key = weights_id(arch, info, pre)
    if key is None:
        return None
    for path in export_places(arch.name, key[:16]):
        if not path.is_file():
            continue
        try:
            meta = read_meta(path)
        except CnnkitError:
            continue
        if meta.preprocess == pre and meta.info.get("weights_sha256") == key and \
                derived.check(path, key, EXPORT_OPTIONS) is None:
            return ModelCard(arch, meta.classes, pre, _card_info(info), key), path
    return None


def _card_info(info: ModelInfo) -> dict[str, str | None]:
    return {"mode": "zero-shot", "weights": info.pretrained}


def imagenet_model(model: str) -> tuple[nn.Module, ModelCard]:
    """``cnnkit predict efficientnet_lite0 photo.jpg``: the backbone with its ImageNet head."""
    card = imagenet_card(model)
    net = create_model(card.architecture, card.task.outputs(card.classes), 3,
                       card.preprocess.img_size, pretrained=True)
    if card.sha256 is None:  # downloaded just now: named as every later run will name them
        card = imagenet_card(model)
    return net, card
