"""cnnkit: from pixels to predictions with convolutional neural networks.

    import cnnkit
    result = cnnkit.train("fashion-mnist", model="seed-cnn", epochs=3)
    clf = cnnkit.load(result.run_dir)
    clf.predict(["shoe.png"], top_k=3)

Names are imported on first use, so ``import cnnkit.data.decode`` (in decoding
worker processes, say) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnkit._version import __version__

_LAZY = {
    "TrainConfig": "cnnkit.base.config",
    "CnnkitError": "cnnkit.base.errors",
    "Events": "cnnkit.training.events",
    "ImageClassifier": "cnnkit.estimator",
    "create_model": "cnnkit.models",
    "list_models": "cnnkit.models",
    "lr_find": "cnnkit.training.session",
    "register_model": "cnnkit.models",
    "Classifier": "cnnkit.runtime.predict",
    "Prediction": "cnnkit.runtime.predict",
    "TrainResult": "cnnkit.training.session",
    "resume": "cnnkit.training.session",
    "train": "cnnkit.training.session",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def load(path: str, device: str = "auto", backend: str = "auto") -> Any:
    """Load a run folder (or model.json / model.safetensors) as a :class:`Classifier`.

    ``backend``: ``auto`` (onnxruntime on a CPU, exported once and cached in the run
    folder; torch on a GPU), ``torch`` or ``onnx``.
    """
    from cnnkit.runtime.predict import Classifier

    return Classifier.load(path, device, backend)


def evaluate(run: str, data: str | None = None, *, tta: bool = False,
             backend: str = "auto", threshold: float | None = None,
             include_seen: bool = False) -> Any:
    """Evaluate a run on DATA, or on the run's own held-out test split when DATA is None;
    ``threshold``: a multi-label model's answers at this probability for every label;
    ``include_seen``: count the images of DATA the run trained or validated on (left
    out by default, with a warning)."""
    from cnnkit.evaluation import evaluate_run
    from cnnkit.tasks.threshold import check_threshold

    return evaluate_run(run, data, tta=tta, backend=backend,
                        threshold=check_threshold(threshold), include_seen=include_seen)


__all__ = [
    "Classifier", "CnnkitError", "Events", "ImageClassifier", "Prediction", "TrainConfig",
    "TrainResult", "__version__", "create_model", "evaluate", "list_models", "load", "lr_find",
    "register_model", "resume", "train",
]
