"""See inside a CNN: layer summaries, convolution by hand, Grad-CAM, feature maps, run reports.

    from cnnkit.inspect import summary
    print(summary(model, (1, 28, 28)))

Names are imported on first use (matplotlib is only loaded when a picture is drawn).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Summary": "cnnkit.inspect.summary",
    "LayerRow": "cnnkit.inspect.summary",
    "summary": "cnnkit.inspect.summary",
    "convolve": "cnnkit.inspect.convolve",
    "parse_kernel": "cnnkit.inspect.convolve",
    "FILTERS": "cnnkit.inspect.convolve",
    "grad_cam": "cnnkit.inspect.gradcam",
    "feature_maps": "cnnkit.inspect.gradcam",
    "explain": "cnnkit.inspect.explain",
    "write_run_report": "cnnkit.inspect.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnkit.inspect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = sorted(_LAZY)
