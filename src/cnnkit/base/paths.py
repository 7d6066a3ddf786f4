"""Where cnnkit keeps downloaded data sets, decoded-image caches and weights."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder (``$CNNKIT_CACHE`` or ``~/.cache/cnnkit``), created on demand."""
    root = os.environ.get("CNNKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cnnkit"
    )
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
