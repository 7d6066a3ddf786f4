"""Models: one registry, scratch CNNs, custom layer specs and pretrained backbones.

Names are imported on first use: listing models (the registry and its catalog) needs
no torch, building one does.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ModelInfo": "cnnkit.models.registry",
    "create_model": "cnnkit.models.build",
    "get_model_info": "cnnkit.models.registry",
    "list_models": "cnnkit.models.registry",
    "register_model": "cnnkit.models.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnkit.models' has no attribute {name!r}")
