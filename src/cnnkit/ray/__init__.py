"""cnnkit on a Ray cluster: batch prediction with Ray Data, training with Ray Train.

    import cnnkit.ray
    ds = cnnkit.ray.predict("runs/shoes", "s3://bucket/photos/")  # a ray.data.Dataset
    cnnkit.ray.predict_to_folder("runs/shoes", ["photos/"], "preds/")
    cnnkit.ray.train(cnnkit.TrainConfig(data="photos/", epochs=5), workers=4)

An adapter around the prediction runtime and the trainer: the same model files, the
same code, the same answers as on one machine. Ray itself (``pip install
'cnnkit[ray]'``) is imported on first use, never by ``import cnnkit``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "predict": "cnnkit.ray.batch",
    "predict_to_folder": "cnnkit.ray.batch",
    "train": "cnnkit.ray.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnkit.ray' has no attribute {name!r}")


__all__ = ["predict", "predict_to_folder", "train"]
