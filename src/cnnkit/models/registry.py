"""One registry maps model names to builders and the facts needed to feed them.

Variants are data (``kwargs``), not new classes; registering a name twice is an error.
The built-in models (:mod:`cnnkit.models.catalog`) register with builders that import
torch only when called, so listing models and checking names stays fast.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnkit.base.errors import CnnkitError

Builder = Callable[..., Any]  # (num_classes=, in_chans=, img_size=, **kwargs) -> nn.Module


class LazyBuilder:
    """``"module:function"`` with fixed keyword arguments, imported on the first call
    (as ``functools.partial``, whose ``func`` and ``keywords`` it mirrors)."""

    def __init__(self, target: str, **keywords: Any) -> None:
        self.target = target
        self.keywords = keywords

    @property
    def func(self) -> Callable[..., Any]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **{**self.keywords, **kwargs})

    def __repr__(self) -> str:
        return f"LazyBuilder({self.target!r}, **{self.keywords!r})"


@dataclass(frozen=True)
class ModelInfo:
    """A registered model.

    ``img_size``/``channels``/``mean``/``std`` of None mean "take them from the data"
    (scratch models adapt to any input); pretrained backbones fix them.
    """

    name: str
    builder: Builder
    description: str
    family: str = "scratch"  # "scratch" | "pretrained"
    img_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    pretrained: str | None = None  # where its pretrained weights come from, in words
    # ... and as a source cnnkit.models.hub reads: "package:MODULE", "hf-hub:REPO", "url:URL"
    weights_from: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_pretrained(self) -> bool:
        return self.family == "pretrained"


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> ModelInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def _load_all() -> None:
    # Importing the catalog registers the built-in models (without importing torch).
    from cnnkit.models import catalog  # noqa: F401


def list_models(family: str | None = None) -> list[ModelInfo]:
    _load_all()
    return [m for m in _REGISTRY.values() if family is None or m.family == family]


def is_registered(name: str) -> bool:
    _load_all()
    return name in _REGISTRY


def get_model_info(name: str) -> ModelInfo:
    _load_all()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise CnnkitError(f"Unknown model {name!r}.{hint} `cnnkit models` lists the registered "
                      "models; a layer spec such as 'conv32k3-pool2-dense128' or a .yaml "
                      "file builds a custom stack.")
