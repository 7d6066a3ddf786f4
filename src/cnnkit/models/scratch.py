"""CNNs written out plainly, trained from random weights; each adapts to any input."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from cnnkit.models.layers import build_sequential, parse_spec
from cnnkit.models.registry import ModelInfo, register_model
from cnnkit.models.resnet import small_resnet


def _from_spec(spec: str | list[dict[str, Any]]):
    layers = parse_spec(spec) if isinstance(spec, str) else spec

    def builder(num_classes: int, in_chans: int, img_size: int, **_: Any) -> nn.Module:
        return build_sequential(layers, num_classes, in_chans, img_size)

    builder.layers = layers  # type: ignore[attr-defined]
    return builder


def _resnet(num_classes: int, in_chans: int, img_size: int, **kwargs: Any) -> nn.Module:
    kwargs.pop("pretrained", None)
    return small_resnet(num_classes, in_chans, img_size, **kwargs)


_LENET5 = [
    {"type": "conv", "filters": 6, "kernel": 5, "stride": 1, "padding": "same",
     "batchnorm": False, "activation": "tanh"},
    {"type": "pool", "kind": "avg", "size": 2, "stride": 2},
    {"type": "conv", "filters": 16, "kernel": 5, "stride": 1, "padding": "valid",
     "batchnorm": False, "activation": "tanh"},
    {"type": "pool", "kind": "avg", "size": 2, "stride": 2},
    {"type": "dense", "units": 120, "batchnorm": False, "activation": "tanh"},
    {"type": "dense", "units": 84, "batchnorm": False, "activation": "tanh"},
]

for _info in (
    ModelInfo("seed-cnn", _from_spec("conv32k3-pool2-conv64k3-pool2-dense128"),
              "the tutorials' Keras Sequential CNN: conv32-pool-conv64-pool-dense128 "
              "(225,034 parameters at 28x28x1, 10 classes)"),
    ModelInfo("lenet5", _from_spec(_LENET5),
              "LeNet-5 (LeCun et al. 1998): conv6 5x5-avgpool-conv16 5x5-avgpool-"
              "dense120-dense84, tanh"),
    ModelInfo("vgg-bn", _from_spec(
        "conv32k3samebn-conv32k3samebn-pool2-conv64k3samebn-conv64k3samebn-pool2-"
        "conv128k3samebn-conv128k3samebn-pool2-gap-drop0.2"),
              "VGG-style: three stages of two 3x3 conv + batch norm, max pooling, "
              "global average pooling"),
    ModelInfo("fast-cnn", _from_spec(
        "conv32k3same:linear-pool2-bn-relu-conv64k3same:linear-pool2-bn-relu-"
        "conv128k3same:linear-pool2-bn-relu-flatten-drop0.3-dense128bn"),
              "a fast VGG-style net for small images: three stages of 3x3 conv, max pool, "
              "then batch norm and ReLU on the pooled map (a quarter of the elements); "
              "cnnkit's default for Fashion-MNIST"),
    ModelInfo("fast-cnn-small", _from_spec(
        "conv16k3same:linear-pool2-bn-relu-conv32k3same:linear-pool2-bn-relu-"
        "conv64k3same:linear-pool2-bn-relu-flatten-drop0.2-dense128bn"),
              "fast-cnn at half the width (a quarter of the work): the quickest to a good "
              "accuracy in a few epochs on a CPU"),
    ModelInfo("resnet-small", partial(_resnet, widths=(32, 64, 128), depths=(1, 1, 1)),
              "a small ResNet for small images: 3x3 stem, three residual stages "
              "(32/64/128 channels), global average pooling"),
):
    register_model(_info)
