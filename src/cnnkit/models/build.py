"""Build a model from a registered name, a layer spec, a YAML file or a saved record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnkit.base.errors import CnnkitError
from cnnkit.models.layerspec import read_stack, stack_info
from cnnkit.models.registry import ModelInfo, get_model_info, is_registered, unknown_model


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


def resolve(model: str | Architecture, *, reachable: bool = False
            ) -> tuple[Architecture, ModelInfo]:
    """Find what ``model`` names, in one pass: a saved architecture, a registered name, a
    custom stack (a spec or a ``.yaml`` file), else a timm architecture. Unknown names get
    a message with close matches. ``reachable``: for a name that is none of cnnkit's,
    say at once when timm's weights for it can be neither found nor downloaded now, before
    timm is imported to look it up (the command's quick check, seconds sooner offline)."""
    if isinstance(model, Architecture):
        if model.layers is not None:
            return model, stack_info(model.name, model.layers)
        return model, _lookup(model.name)
    if is_registered(model):
        info = get_model_info(model)
        layers = getattr(info.builder, "layers", None)
        return Architecture(model, None if layers is None else tuple(layers)), info
    stack = read_stack(model)  # a bad token in a spec: the message names it
    if stack is not None:
        name, layers = stack
        return Architecture(name, tuple(layers)), stack_info(name, layers)
    bare = model.removeprefix("timm/").removeprefix("timm:")
    if reachable:
        from cnnkit.models.hub import check_timm_name_reachable

        check_timm_name_reachable(bare, unknown_model(model))
    from cnnkit.models.pretrained import timm_info

    info = timm_info(model)
    return Architecture(bare), info if info is not None else get_model_info(model)


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
