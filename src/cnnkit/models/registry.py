"""One registry maps model names to builders and the facts needed to feed them.

Variants are data (``kwargs``), not new classes; registering a name twice is an error.
The built-in models (:mod:`cnnkit.models.catalog`) are registered here, with builders
that import torch only when called, so listing models and checking names stays fast.
"""

from __future__ import annotations

import difflib

from cnnkit.base.errors import CnnkitError
from cnnkit.models import catalog
from cnnkit.models.info import Builder, LazyBuilder, ModelInfo

__all__ = ["Builder", "LazyBuilder", "ModelInfo", "get_model_info", "is_registered",
           "list_models", "register_model"]

_REGISTRY: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> ModelInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def list_models(family: str | None = None) -> list[ModelInfo]:
    return [m for m in _REGISTRY.values() if family is None or m.family == family]


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def get_model_info(name: str) -> ModelInfo:
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise CnnkitError(unknown_model(name))


def unknown_model(name: str) -> str:
    """What to say of a name that is not registered: the close matches, and the other
    ways to name a model."""
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (f"Unknown model {name!r}.{hint} `cnnkit models` lists the registered models; a "
            "layer spec such as 'conv32k3-pool2-dense128' or a .yaml file builds a custom "
            "stack.")


for _info in catalog.BUILT_IN:
    register_model(_info)
