"""What a registered model is: its builder and the facts needed to feed it.

Plain data, without torch: the catalog (:mod:`cnnkit.models.catalog`) is made of these,
and the registry (:mod:`cnnkit.models.registry`) holds them by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
