"""``cnnkit export``: a run (or pretrained model) to an ONNX file, checked on real images."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit.artifacts import derived
from cnnkit.artifacts.modelfile import find_sidecar
from cnnkit.artifacts.onnxfile import OPSET, OnnxMeta, export_onnx
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.errors import CnnkitError
from cnnkit.data.imageset import ImageSet
from cnnkit.export.images import check_images, run_folder, run_images
from cnnkit.export.quantize import CALIBRATION_IMAGES, Comparison, compare, quantize_int8
from cnnkit.runtime.backends import PARITY_TOLERANCE, OnnxBackend, TorchBackend, weights_key
from cnnkit.runtime.inference import log_probs
from cnnkit.runtime.predict import Classifier, load_predictor

FORMATS = ("onnx",)
QUANTIZE = ("int8",)


@dataclass
class ExportResult:
    path: Path
    checked_on: str
    max_prob_diff: float
    int8: Path | None = None
    comparison: Comparison | None = None  # int8 against float on the run's test split


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
                 check: list[str] | None = None, opset: int = OPSET,
                 quantize: str | None = None) -> ExportResult:
    """Export ``model`` (run folder, model file or pretrained name) and check the file
    against torch on real images; a difference above 1e-4 removes the file and fails.

    ``quantize="int8"`` also writes ``<out>.int8.onnx``, calibrated on the run's training
    images, and compares it with the float file on the run's test split.
    """
    if fmt not in FORMATS:
        raise CnnkitError(f"--format must be one of {', '.join(FORMATS)}. Received: {fmt!r}")
    if quantize is not None and quantize not in QUANTIZE:
        raise CnnkitError(f"--quantize must be one of {', '.join(QUANTIZE)}. Received: "
                          f"{quantize!r}")
    run = run_folder(model) if quantize else None
    if quantize and run is None:
        raise CnnkitError(f"--quantize int8 calibrates on a run's training images and tests "
                          f"on its test split; {model} is not a run folder (made by "
                          "`cnnkit train`).")
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
    source = card.sha256 or weights_key(clf.model, card)
    derived.bind(path, source, {"precision": "float", "opset": opset})
    if not quantize:
        return ExportResult(path, where, diff)
    return _quantized(ExportResult(path, where, diff), run, clf, source)


def _quantized(result: ExportResult, run: RunDir, clf: Classifier, source: str
               ) -> ExportResult:
    from cnnkit.evaluation import held_out_test

    pre = clf.card.preprocess
    found = run_images(run, clf, ("train",), CALIBRATION_IMAGES)
    if found is None:
        raise CnnkitError(f"{run.root} has no training images to calibrate int8 on.")
    int8 = quantize_int8(result.path, result.path.with_suffix(".int8.onnx"), found[0], pre)
    derived.bind(int8, source, {"precision": "int8", "from": result.path.name,
                                "from_sha256": derived.sha256_of(result.path),
                                "calibration_images": len(found[0])})
    test = held_out_test(run, run.train_config(), clf)
    if test is None:
        raise CnnkitError(f"{run.root} has no held-out test split to compare int8 on; wrote "
                          f"{int8} unmeasured.")
    result.int8, result.comparison = int8, compare(result.path, int8, test, pre)
    return result
