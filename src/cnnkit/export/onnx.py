"""``cnnkit export``: a run (or pretrained model) to an ONNX file (or an ExecuTorch
program), checked on real images;
optionally an int8 copy, measured on the run's whole test split and refused when it
loses more accuracy than allowed."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnkit.artifacts import derived
from cnnkit.artifacts.modelfile import find_sidecar
from cnnkit.artifacts.onnxfile import (
    OPSET,
    OnnxMeta,
    export_onnx,
    read_meta,
    rewrite_meta,
)
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.errors import CnnkitError
from cnnkit.data.imageset import ImageSet
from cnnkit.export import card as modelcard
from cnnkit.export.card import CardPaths
from cnnkit.export.executorch import OPTIONS as EXECUTORCH_OPTIONS
from cnnkit.export.executorch import ExecutorchBackend, export_pte, require_executorch
from cnnkit.export.images import check_images, run_folder, run_images
from cnnkit.export.parity import Parity
from cnnkit.export.quantize import (
    CALIBRATION_IMAGES,
    RULE_IMAGES,
    Comparison,
    compare,
    model_inputs,
    own_rule,
    quantize_int8,
)
from cnnkit.runtime.backends import PARITY_TOLERANCE, Backend, OnnxBackend
from cnnkit.runtime.exports import check_parity, export_options, weights_key
from cnnkit.runtime.inference import log_probs
from cnnkit.runtime.predict import Classifier, load_predictor

FORMATS = ("onnx", "executorch")
SUFFIXES = {"onnx": ".onnx", "executorch": ".pte"}
QUANTIZE = ("int8",)
# Points of test accuracy the int8 file may lose against the float one before it is
# refused (--max-accuracy-drop); a fine-tuned Lite0 loses none (docs/benchmarks.md).
MAX_ACCURACY_DROP = 1.0


@dataclass
class ExportResult:
    path: Path
    checked_on: str
    max_prob_diff: float
    int8: Path | None = None
    comparison: Comparison | None = None  # int8 against float on the run's test split
    parities: list[Parity] = field(default_factory=list)  # each file against torch
    card: CardPaths | None = None  # the model card beside the files


def default_out(model: str) -> Path:
    """``model.onnx`` beside the run's model.json; ``<name>.onnx`` here for a model name."""
    if os.path.exists(model):
        return find_sidecar(model).parent / "model.onnx"
    return Path(re.sub(r"[^A-Za-z0-9._-]+", "-", model) + ".onnx")


def int8_path(path: Path) -> Path:
    """Where the int8 copy of the float file ``path`` goes: ``model.onnx`` ->
    ``model.int8.onnx`` (the name ``--backend onnx-int8`` looks for in a run folder)."""
    return path.with_suffix(".int8.onnx")


def probabilities(clf: Classifier, backend: Backend, data: ImageSet) -> torch.Tensor:
    """Probabilities ``(N, classes)`` of ``data`` through ``backend``, as predict computes them."""
    pre = clf.card.preprocess
    return log_probs(backend, data, pre, backend.device, task=clf.task,
                     batch_size=backend.batch_size(pre.img_size, 64),
                     channels_last=backend.channels_last, split=False).exp()


def check_options(fmt: str, quantize: str | None, opset: int, max_drop: float) -> None:
    if fmt not in FORMATS:
        raise CnnkitError(f"--format must be one of {', '.join(FORMATS)}. Received: {fmt!r}")
    if quantize is not None and quantize not in QUANTIZE:
        raise CnnkitError(f"--quantize must be one of {', '.join(QUANTIZE)}. Received: "
                          f"{quantize!r}")
    if quantize is not None and fmt != "onnx":
        raise CnnkitError(f"--quantize {quantize} makes an ONNX file (the onnx-int8 "
                          f"backend); export --format {fmt} without it. Received: "
                          f"--format {fmt} --quantize {quantize}")
    if opset < 17:
        raise CnnkitError(f"--opset must be 17 or newer. Received: {opset}")
    if not 0 <= max_drop <= 100:
        raise CnnkitError(f"--max-accuracy-drop is in points of accuracy, 0 to 100. "
                          f"Received: {max_drop:g}")


def export_model(model: str, *, fmt: str = "onnx", out: str | os.PathLike | None = None,
                 check: list[str] | None = None, opset: int = OPSET,
                 quantize: str | None = None,
                 max_accuracy_drop: float = MAX_ACCURACY_DROP) -> ExportResult:
    """Export ``model`` (run folder, model file or pretrained name) and check the file
    against torch on real images; a difference above 1e-4 removes the file and fails.

    ``quantize="int8"`` also writes ``<out>.int8.onnx``, calibrated on the run's training
    images and measured against the float file on the run's whole test split; when it
    loses more than ``max_accuracy_drop`` points it is not kept, and that is an error.
    """
    check_options(fmt, quantize, opset, max_accuracy_drop)
    run = run_folder(model)
    if quantize and run is None:
        raise CnnkitError(f"--quantize int8 calibrates on a run's training images and tests "
                          f"on its test split; {model} is not a run folder (made by "
                          "`cnnkit train`).")
    suffix = SUFFIXES[fmt]
    if fmt == "executorch":
        require_executorch()
    path = Path(out) if out is not None else default_out(model).with_suffix(suffix)
    if path.suffix.lower() != suffix:
        raise CnnkitError(f"--out must end in {suffix} for --format {fmt}. Received: {path}")
    clf = load_predictor(model, "cpu", backend="torch")
    test = (_test_split(run, clf) if quantize else _any_test_split(run, clf)) \
        if run is not None else None
    card = clf.card
    data, where = check_images(model, clf, check)
    info = {"architecture": card.architecture.name, "model": str(model),
            **({"weights_sha256": card.sha256} if card.sha256 else {}),
            **{k: v for k, v in card.info.items() if isinstance(v, (str, int, float))}}
    if fmt == "executorch":
        export_pte(clf.model, card.preprocess, path)
        runtime, options = ExecutorchBackend, EXECUTORCH_OPTIONS
    else:
        stats = getattr(clf.backend, "stats", None)
        export_onnx(clf.model, OnnxMeta(card.classes, card.preprocess, info, card.task), path,
                    opset, stats=stats)
        runtime, options = OnnxBackend, export_options(stats, opset)
        if stats is not None:  # the unknown rule's distance is the file's second output
            x = torch.from_numpy(next(model_inputs(data, card.preprocess, 32)))
            check_parity(clf.model, OnnxBackend(path), card, x=x, stats=stats)
    reference = probabilities(clf, clf.backend, data).numpy()
    parity = Parity.of(fmt, path.name, probabilities(clf, runtime(path), data).numpy(),
                       reference, where, clf.task, card.classes, PARITY_TOLERANCE)
    if not parity.ok:
        path.unlink(missing_ok=True)
        raise CnnkitError(f"The exported file disagrees with PyTorch on {where}: "
                          f"probabilities differ by up to {parity.max_prob_diff:.2e} (limit "
                          f"{PARITY_TOLERANCE:g}); nothing was written. Please report this "
                          "with the model's architecture.")
    source = card.sha256 or weights_key(clf.model, card)
    derived.bind(path, source, options, {"parity": parity.to_dict()})
    result = ExportResult(path, where, parity.max_prob_diff, parities=[parity])
    test_probs = probabilities(clf, runtime(path), test).numpy() if test is not None else None
    if quantize:
        assert run is not None and test is not None
        _quantized(result, run, clf, source, test, data, reference, max_accuracy_drop)
    files = [path] + ([result.int8] if result.int8 is not None else [])
    result.card = modelcard.write(
        modelcard.build(card, str(model), files, result.parities, run, test, test_probs,
                        result.comparison), modelcard.card_paths(path))
    return result


def check_drop(c: Comparison, max_drop: float, where: str) -> None:
    """An error, with the figures, when int8 lost more than ``max_drop`` points."""
    drop = (c.float_accuracy - c.int8_accuracy) * 100
    if drop > max_drop + 1e-9:
        raise CnnkitError(
            f"The int8 model loses {drop:.2f} points of {c.figure} on {where} ({c.images:,} "
            f"images: float {c.float_accuracy:.2%}, int8 {c.int8_accuracy:.2%}), more than "
            f"--max-accuracy-drop {max_drop:g}; it was not kept. Use the float model, or pass "
            f"--max-accuracy-drop {math.ceil(drop * 100) / 100:.2f} to accept it.")


def _test_split(run: RunDir, clf: Classifier) -> ImageSet:
    """The run's held-out test split, which int8 is measured on: an error without one,
    before anything is written."""
    from cnnkit.evaluation import held_out_test

    test = held_out_test(run, run.train_config(), clf)
    if test is None or not len(test):
        raise CnnkitError(f"{run.root} was trained without a held-out test split, so an int8 "
                          "model could not be measured; train with --test-fraction 0.1 (or "
                          "a test/ folder), or export without --quantize.")
    return test


def _any_test_split(run: RunDir, clf: Classifier) -> ImageSet | None:
    """The run's held-out test split for the model card, or None without one."""
    from cnnkit.evaluation import held_out_test

    test = held_out_test(run, run.train_config(), clf)
    return test if test is not None and len(test) else None


def _quantized(result: ExportResult, run: RunDir, clf: Classifier, source: str,
               test: ImageSet, data: ImageSet, reference: np.ndarray, max_drop: float
               ) -> ExportResult:
    pre = clf.card.preprocess
    found = run_images(run, clf, ("train",), CALIBRATION_IMAGES)
    if found is None:
        raise CnnkitError(f"{run.root} has no training images to calibrate int8 on.")
    final = int8_path(result.path)
    trial = final.with_name(f".{final.name}.measuring.onnx")
    try:
        quantize_int8(result.path, trial, found[0], pre)
        val = run_images(run, clf, ("val",), RULE_IMAGES)
        task = own_rule(trial, val[0] if val is not None else None, pre, clf.task)
        c = compare(result.path, trial, test, pre, clf.task, int8_task=task)
        check_drop(c, max_drop, f"{run.root}'s test split")
        meta = read_meta(trial)
        measured = {"test_images": c.images, "float_accuracy": c.float_accuracy,
                    "int8_accuracy": c.int8_accuracy, "max_accuracy_drop": max_drop}
        # the task stays with the file (a multi-label model's per-label thresholds), with
        # an unknown rule drawn on the int8 file's own outputs
        rewrite_meta(trial, OnnxMeta(meta.classes, meta.preprocess, {**meta.info, **measured},
                                     task))
        probs = probabilities(clf, OnnxBackend(trial), data).numpy()
        os.replace(trial, final)
    finally:
        trial.unlink(missing_ok=True)
    parity = Parity.of("onnx-int8", final.name, probs, reference, result.checked_on, clf.task,
                       clf.card.classes)
    derived.bind(final, source, {"precision": "int8", "from": result.path.name,
                                 "from_sha256": derived.sha256_of(result.path),
                                 "calibration_images": len(found[0])},
                 {"parity": parity.to_dict(), "test": {**measured, "float_speed": c.float_speed,
                                                        "int8_speed": c.int8_speed}})
    result.int8, result.comparison = final, c
    result.parities.append(parity)
    return result

