"""What a DATA argument names, told without torch or reading an image: the built-in sets'
names, and the line for a DATA that names nothing here. The command's quick check says it
before it loads torch or starts processes; describing the data says the same later."""

from __future__ import annotations

import os
from pathlib import Path

# The built-in sets, as cnnkit.data.builtin.BUILTINS holds them (a test keeps the two equal).
BUILTIN_NAMES = ("fashion-mnist", "digits", "shapes", "fashion-mnist-mosaic")


def missing(data: str) -> str | None:
    """Why ``data`` names no data here (a missing CSV file or path), or None when it
    names a built-in set or something that exists."""
    if data.partition(":")[0] in BUILTIN_NAMES:
        return None
    path = Path(os.path.expanduser(data))
    if path.exists():
        return None
    if data.lower().endswith(".csv"):
        return f"CSV file not found: {data}."
    return (f"Data not found: {data!r} is neither a folder, a CSV file nor a built-in set "
            f"({', '.join(BUILTIN_NAMES)}). Check the path.")
