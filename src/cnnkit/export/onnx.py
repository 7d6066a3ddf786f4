"""``cnnkit export``: a run (or pretrained model) to an ONNX file, checked on real images."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnkit.backends import PARITY_TOLERANCE, OnnxBackend, TorchBackend
from cnnkit.data.imageset import ImageSet
from cnnkit.errors import CnnkitError
from cnnkit.export.images import check_images
from cnnkit.inference import log_probs
from cnnkit.modelfile import find_sidecar
from cnnkit.onnxfile import OPSET, OnnxMeta, export_onnx
from cnnkit.predict import Classifier, load_predictor

FORMATS = ("onnx",)


@dataclass
class ExportResult:
    path: Path
    checked_on: str
    max_prob_diff: float
    extra: dict = field(default_factory=dict)  # int8: accuracies and speeds


def default_out(model: str) -> Path:
    """``model.onnx`` beside the run's model.json; ``<name>.onnx`` here for a model name."""
    if os.path.exists(model):
        return find_sidecar(model).parent / "model.onnx"
    return Path(re.sub(r"[^A-Za-z0-9._-]+", "-", model) + ".onnx")


def probabilities(clf: Classifier, backend: TorchBackend | OnnxBackend, data: ImageSet
                  ) -> torch.Tensor:
    """Probabilities ``(N, classes)`` of ``data`` through ``backend``, as predict computes them."""
    pre = clf.card.preprocess
    return log_probs(backend, data, pre, backend.device,
                     batch_size=backend.batch_size(pre.img_size, 64),
                     channels_last=backend.channels_last, split=False).exp()


def export_model(model: str, *, fmt: str = "onnx", out: str | os.PathLike | None = None,
                 check: list[str] | None = None, opset: int = OPSET) -> ExportResult:
    """Export ``model`` (run folder, model file or pretrained name) and check the file
    against torch on real images; a difference above 1e-4 removes the file and fails."""
    if fmt not in FORMATS:
        raise CnnkitError(f"--format must be one of {', '.join(FORMATS)}. Received: {fmt!r}")
    if opset < 17:
        raise CnnkitError(f"--opset must be 17 or newer. Received: {opset}")
    path = Path(out) if out is not None else default_out(model)
    if path.suffix.lower() != ".onnx":
        raise CnnkitError(f"--out must end in .onnx. Received: {path}")
    clf = load_predictor(model, "cpu", backend="torch")
    card = clf.card
    data, where = check_images(model, clf, check)
    info = {"architecture": card.architecture.name, "model": str(model),
            **({"weights_sha256": card.sha256} if card.sha256 else {}),
            **{k: v for k, v in card.info.items() if isinstance(v, (str, int, float))}}
    export_onnx(clf.model, OnnxMeta(card.classes, card.preprocess, info), path, opset)
    onnx_backend = OnnxBackend(path)
    diff = float((probabilities(clf, onnx_backend, data)
                  - probabilities(clf, clf.backend, data)).abs().max())
    if not diff <= PARITY_TOLERANCE:
        path.unlink(missing_ok=True)
        raise CnnkitError(f"The exported file disagrees with PyTorch on {where}: "
                          f"probabilities differ by up to {diff:.2e} (limit "
                          f"{PARITY_TOLERANCE:g}); nothing was written. Please report this "
                          "with the model's architecture.")
    return ExportResult(path, where, diff)
