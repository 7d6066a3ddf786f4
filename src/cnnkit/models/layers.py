"""Build a layer stack (:mod:`cnnkit.models.layerspec` reads the spec) as a torch
:class:`ConvNet` with timm's model surface."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.interface import TimmStyleModel
from cnnkit.models.layerspec import (  # noqa: F401  (the spec API, also importable here)
    Layer,
    UnknownTokenError,
    check_layer,
    load_yaml,
    looks_like_spec,
    parse_spec,
)

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": None}


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


def build_sequential(layers: list[Layer], num_classes: int, in_chans: int,
                     img_size: int) -> ConvNet:
    """Build a :class:`ConvNet` from layer dicts, checking the image is large enough."""
    features: list[nn.Module] = []
    head: list[nn.Module] = []
    channels, size, units = in_chans, img_size, None
    in_head = False
    for i, layer in enumerate(layers):
        kind = layer["type"]
        target = head if in_head else features
        if kind == "conv":
            if in_head:
                raise CnnkitError(f"Layer {i + 1} (conv) comes after the dense part of the spec; "
                                  "put convolutions first.")
            k, s, pad = layer["kernel"], layer["stride"], layer["padding"]
            padding = (k - 1) // 2 if pad == "same" else 0 if pad == "valid" else int(pad)
            if pad == "same" and k % 2 == 0 and s == 1:
                padding = "same"
            bn = layer.get("batchnorm", False)
            features.append(nn.Conv2d(channels, layer["filters"], k, s, padding, bias=not bn))
            if bn:
                features.append(nn.BatchNorm2d(layer["filters"]))
            _activation(features, layer.get("activation", "relu"))
            channels = layer["filters"]
            size = size if padding == "same" else (size + 2 * padding - k) // s + 1
        elif kind == "pool":
            cls = nn.MaxPool2d if layer["kind"] == "max" else nn.AvgPool2d
            features.append(cls(layer["size"], layer["stride"]))
            size = (size - layer["size"]) // layer["stride"] + 1
        elif kind == "global_pool":
            pool = nn.AdaptiveAvgPool2d(1) if layer["kind"] == "avg" else nn.AdaptiveMaxPool2d(1)
            head += [pool, nn.Flatten()]
            in_head, units = True, channels
        elif kind == "flatten":
            head.append(nn.Flatten())
            in_head, units = True, channels * size * size
        elif kind == "dense":
            if not in_head:
                head.append(nn.Flatten())
                in_head, units = True, channels * size * size
            bn = layer.get("batchnorm", False)
            head.append(nn.Linear(units, layer["units"], bias=not bn))
            if bn:
                head.append(nn.BatchNorm1d(layer["units"]))
            _activation(head, layer.get("activation", "relu"))
            units = layer["units"]
        elif kind == "dropout":
            target.append(nn.Dropout(layer["rate"]))
        elif kind == "batchnorm":
            target.append(nn.BatchNorm1d(units) if in_head else nn.BatchNorm2d(channels))
        elif kind == "activation":
            _activation(target, layer["name"])
        else:
            raise CnnkitError(f"Unknown layer type {kind!r}.")
        if size < 1:
            raise CnnkitError(
                f"Images of {img_size}x{img_size} pixels shrink to nothing at layer {i + 1} "
                f"({kind}) of this model. Use a larger --img-size, 'same' padding or fewer "
                "pooling layers."
            )
    if not in_head:
        head.append(nn.Flatten())
        units = channels * size * size
    return ConvNet(nn.Sequential(*features), nn.Sequential(*head), units, num_classes)


def _activation(target: list[nn.Module], name: str) -> None:
    if name not in ACTIVATIONS:
        raise CnnkitError(f"Unknown activation {name!r}; use {', '.join(ACTIVATIONS)}.")
    if ACTIVATIONS[name] is not None:
        target.append(ACTIVATIONS[name]())
