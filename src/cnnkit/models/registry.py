"""One registry maps model names to builders and the facts needed to feed them.

Variants are data (``kwargs``), not new classes; registering a name twice is an error.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cnnkit.errors import CnnkitError

Builder = Callable[..., nn.Module]


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
    # Importing the model modules registers their models.
    from cnnkit.models import pretrained, scratch  # noqa: F401


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
