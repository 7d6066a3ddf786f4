"""Build a model from a registered name, a layer spec, a YAML file or a saved record."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.base.errors import CnnkitError
from cnnkit.models.layerspec import StackBuilder, load_yaml, looks_like_spec, parse_spec
from cnnkit.models.registry import ModelInfo, get_model_info, is_registered
from cnnkit.models.sidecar_schema import MAX_NAME


@dataclass(frozen=True)
class Architecture:
    """What a sidecar records to rebuild a model: its name and, for stacks, its layers."""

    name: str
    layers: tuple[dict[str, Any], ...] | None = None
    kwargs: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layers": None if self.layers is None else list(self.layers),
                "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Architecture:
        layers = d.get("layers")
        return cls(d["name"], None if layers is None else tuple(layers),
                   tuple(sorted((d.get("kwargs") or {}).items())))


def _stack_info(name: str, layers: list[dict[str, Any]]) -> ModelInfo:
    return ModelInfo(name, StackBuilder(layers), "custom layer stack")


def resolve(model: str | Architecture) -> tuple[Architecture, ModelInfo]:
    """Find what ``model`` names; unknown names get a message with close matches."""
    if isinstance(model, Architecture):
        if model.layers is not None:
            return model, _stack_info(model.name, list(model.layers))
        return model, _lookup(model.name)
    if is_registered(model):
        info = get_model_info(model)
        layers = getattr(info.builder, "layers", None)
        return Architecture(model, None if layers is None else tuple(layers)), info
    if model.lower().endswith((".yaml", ".yml")):
        layers = load_yaml(model)
        name = _file_model_name(Path(model).stem)
        return Architecture(name, tuple(layers)), _stack_info(name, layers)
    if looks_like_spec(model):
        layers = parse_spec(model)  # a bad token in a spec: the message names it
        name = model.strip()
        return Architecture(name, tuple(layers)), _stack_info(name, layers)
    return Architecture(model.removeprefix("timm/").removeprefix("timm:")), _lookup(model)


def _file_model_name(stem: str) -> str:
    """A YAML file's name as a model name a sidecar can hold ('my net (v2)' -> 'my-net-v2')."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", stem).strip("-")[:MAX_NAME] or "custom"


def _lookup(name: str) -> ModelInfo:
    """A registered model, else any timm architecture by name (its weights download once)."""
    if is_registered(name):
        return get_model_info(name)
    from cnnkit.models.pretrained import timm_info

    info = timm_info(name)
    return info if info is not None else get_model_info(name)  # raises with suggestions


def create_model(
    model: str | Architecture,
    num_classes: int,
    in_chans: int = 3,
    img_size: int = 224,
    *,
    pretrained: bool = False,
    weights: str | None = None,
) -> Any:
    """Instantiate a model (a torch ``nn.Module``); pretrained weights only where the
    registry has them."""
    arch, info = resolve(model)
    if num_classes < 1:
        raise CnnkitError(f"num_classes must be at least 1. Received: {num_classes}")
    kwargs: dict[str, Any] = {**dict(info.kwargs), **dict(arch.kwargs)}
    if info.is_pretrained:  # their builders load --weights in place of the download
        kwargs.update(pretrained=pretrained, weights=weights)
    net = info.builder(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    if weights and not info.is_pretrained:  # a scratch stack starts from a saved state
        from cnnkit.models.weights import load_weights_file

        load_weights_file(net, weights)
    return net
