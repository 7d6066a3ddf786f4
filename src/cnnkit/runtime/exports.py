"""Which file a model runs from, and on which backend.

``auto`` picks onnxruntime on a CPU, where it is faster (docs/benchmarks.md, "Prediction
speed"), and torch on a GPU. The float ONNX file is exported once and cached, keyed by
the weights' hash and bound to them by a record checked at each use
(:mod:`cnnkit.artifacts.derived`); with an unknown rule that reads a feature distance,
the run's feature statistics go into its graph. The int8 file is made on purpose, by
``cnnkit export --quantize int8`` (calibrated, measured on the run's test split and
refused when it loses too much), and found here by the same record. An exported file
given as the model runs on its own (:func:`onnx_file`).
:data:`~cnnkit.runtime.backend_names.BACKENDS` is the one list of the backends' names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnkit.artifacts import derived
from cnnkit.artifacts.featurestats import load_stats
from cnnkit.artifacts.modelcard import ModelCard, read_card
from cnnkit.artifacts.onnxfile import (
    DISTANCE,
    OPSET,
    OUTPUT,
    OnnxMeta,
    export_onnx,
    float_options,
    read_meta,
)
from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.base.paths import cache_dir
from cnnkit.models.build import Architecture
from cnnkit.runtime.backend_names import ONNX_KINDS, check_backend
from cnnkit.runtime.backends import (
    INT8_NAME,
    PARITY_TOLERANCE,
    Backend,
    OnnxBackend,
    TorchBackend,
)
from cnnkit.tasks.registry import task_from_card

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cnnkit.tasks.ood import FeatureStats

# What a cached export's record binds besides the weights (cnnkit.artifacts.derived).
EXPORT_OPTIONS = float_options()


def weights_key(model: nn.Module, card: ModelCard) -> str:
    """16 hex digits naming these weights: the sidecar's sha256, or a hash of the tensors."""
    if card.sha256:
        return card.sha256[:16]
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_places(architecture: str, key: str, folder: Path | None = None) -> list[Path]:
    """Where the export of weights ``key`` lives: the run folder first, then the cache."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", architecture)[:60] or "model"
    return ([folder / f"model.{key}.onnx"] if folder is not None else []) + [
        cache_dir("onnx") / f"{stem}.{key}.onnx"]


def stats_beside(card: ModelCard, folder: Path | None, *, say: bool = True
                 ) -> FeatureStats | None:
    """The unknown rule's feature statistics from the run ``folder`` when the card's rule
    reads a distance; None when it does not, or (said in one line when ``say``) when they
    are missing or damaged: the rule then answers by the energy alone."""
    rule = getattr(card.task, "unknown", None)
    if not card.task.answers_read_distance or rule is None:
        return None
    try:
        if folder is None:
            raise CnnkitError("The unknown rule's feature statistics are not beside this "
                              "model (no run folder).")
        return load_stats(rule, folder, len(card.classes))
    except CnnkitError as exc:
        if say:
            log.warn(f"{exc} Until then 'unknown' is answered by the energy alone.")
        return None


def export_options(stats: FeatureStats | None, opset: int = OPSET) -> dict[str, object]:
    """A float export's record options: the graph's, and whether it gives the distance."""
    options = float_options(opset)
    return {**options, "outputs": f"{OUTPUT},{DISTANCE}"} if stats is not None else options


def _find(card: ModelCard, key: str, folder: Path | None, source: str | None,
          say: bool = False, options: dict[str, object] = EXPORT_OPTIONS) -> Path | None:
    """An earlier export of these weights with the card's classes and input whose record
    binds it to ``source`` (:mod:`cnnkit.artifacts.derived`); ``say``: warn of one that fails."""
    for path in export_places(card.architecture.name, key, folder):
        if path.is_file():
            try:
                meta = read_meta(path)
            except CnnkitError:
                continue  # damaged or foreign: exported again over it
            if (meta.classes, meta.preprocess, meta.task, meta.info.get("architecture")) != (
                    card.classes, card.preprocess, card.task, card.architecture.name):
                continue
            why = derived.check(path, source, options)
            if why is None:
                return path
            if say:
                log.warn(f"not using {path}: {why}; exporting the model again")
    return None


def find_cached_onnx(card: ModelCard, folder: Path | None = None) -> Path | None:
    """An earlier export of the weights ``card.sha256`` names, with the card's classes and
    input and a record that binds it to them, if there is one; found without torch (None
    when the card has no sha256, or when its unknown rule reads feature statistics that
    cannot be read: the full load then says so)."""
    if not card.sha256:
        return None
    stats = stats_beside(card, folder, say=False)
    if stats is None and card.task.answers_read_distance:
        return None  # the full load says why the rule answers by the energy alone
    return _find(card, card.sha256[:16], folder, card.sha256, options=export_options(stats))


def cached_onnx(model: nn.Module, card: ModelCard, folder: Path | None = None,
                stats: FeatureStats | None = None) -> Path:
    """The ONNX export of ``model``, made once: ``model.<weights hash>.onnx`` in the run
    ``folder`` (or cnnkit's cache when there is none or it is read-only); with ``stats``,
    its feature distance as a second output. A new file is checked against torch before
    it is used, then bound to the weights (its record); an old one is used only while its
    record holds."""
    key = weights_key(model, card)
    source = card.sha256 or key
    options = export_options(stats)
    found = _find(card, key, folder, source, say=True, options=options)
    if found is not None:
        return found
    places = export_places(card.architecture.name, key, folder)
    info = {"architecture": card.architecture.name, "weights_sha256": source,
            **{k: v for k, v in card.info.items() if isinstance(v, (str, int, float))}}
    meta = OnnxMeta(card.classes, card.preprocess, info, card.task)
    for i, path in enumerate(places):
        try:
            export_onnx(model, meta, path, stats=stats)
            break
        except PermissionError:  # a read-only run folder: the cache instead
            if i == len(places) - 1:
                raise
    try:
        check_parity(model, OnnxBackend(path, threads=1), card, stats=stats)
    except CnnkitError:
        path.unlink(missing_ok=True)
        raise
    derived.bind(path, source, options)
    return path


# The feature distance reads the features through a whitening that magnifies float32
# rounding along their least-varying directions, most on random inputs far from the data
# (how far torch and onnxruntime drift there: docs/design-notes.md); a graph built wrong
# is off by far more.
DISTANCE_TOLERANCE = 0.05


def check_parity(model: nn.Module, backend: OnnxBackend, card: ModelCard,
                 x: torch.Tensor | None = None, stats: FeatureStats | None = None) -> float:
    """Largest difference in probabilities between torch and ``backend`` on ``x`` (default:
    two seeded random inputs); an error above :data:`PARITY_TOLERANCE`. With ``stats``,
    the feature distances must agree too (relatively, within :data:`DISTANCE_TOLERANCE`)."""
    import torch

    pre = card.preprocess
    if x is None:
        x = torch.randn(2, pre.channels, pre.img_size, pre.img_size,
                        generator=torch.Generator().manual_seed(0))
    net = getattr(model, "_orig_mod", model)
    device = next(net.parameters()).device
    with torch.inference_mode():
        ref = card.task.scores(net.eval()(x.to(device))).exp().cpu()
    diff = float((card.task.scores(backend(x)).exp() - ref).abs().max())
    if stats is not None:
        from cnnkit.models.feature_distance import WithDistance

        with torch.inference_mode():
            paired = WithDistance(net, stats.means, stats.whiten, stats.iso).to(device)
            want = paired(x.to(device))[1]
        got = backend.run_pair(x.numpy())[1]
        gap = (float(np.max(np.abs(got - want.cpu().numpy()) / (1 + want.cpu().numpy())))
               if got is not None else float("inf"))
        if not gap <= DISTANCE_TOLERANCE:
            raise CnnkitError(f"The ONNX export of {card.architecture.name} disagrees with "
                              f"torch on the feature distance (relative {gap:.2e}). Use "
                              "--backend torch.")
    if not diff <= PARITY_TOLERANCE:
        raise CnnkitError(f"The ONNX export of {card.architecture.name} disagrees with torch: "
                          f"probabilities differ by up to {diff:.2e} (more than "
                          f"{PARITY_TOLERANCE:g}). Use --backend torch.")
    return diff


def own_task(card: ModelCard, backend: Backend) -> ModelCard:
    """``card`` with the task the ONNX file ``backend`` runs carries, when it is of the
    same kind: an int8 file's unknown rule is fitted on its own outputs (its energies and
    distances differ from float's, so the float rule's line would keep another share of
    known images); a float file's is the card's; what the task keeps of the card's own
    it says (:meth:`~cnnkit.tasks.base.Task.with_file_task`: a multi-label model's
    thresholds are model.json's). The card as it is for torch, or a file without a
    task."""
    if not isinstance(backend, OnnxBackend):
        return card
    fields = backend.session.get_modelmeta().custom_metadata_map.get("task")
    if fields is None:
        return card
    try:
        task = task_from_card(json.loads(fields), card.classes, str(backend.path))
    except ValueError as exc:
        raise CnnkitError(f"{backend.path} has damaged cnnkit metadata ({exc}); export it "
                          "again.") from None
    return replace(card, task=card.task.with_file_task(task)) if task.name == card.task.name \
        else card


def find_int8(card: ModelCard, folder: Path | None) -> Path | None:
    """The int8 file ``cnnkit export --quantize int8`` left in the run ``folder``, if its
    record binds it to these weights (the sidecar's sha256) and it is unchanged."""
    if folder is None or not card.sha256:
        return None
    path = folder / INT8_NAME
    if not path.is_file() or derived.check(path, card.sha256) is not None:
        return None
    return path if derived.options(path).get("precision") == "int8" else None


def require_int8(card: ModelCard, folder: Path | None, model: str) -> Path:
    """:func:`find_int8`, or one line that says how to make the file."""
    found = find_int8(card, folder)
    if found is not None:
        return found
    if folder is None or not card.sha256:
        raise CnnkitError(f"--backend onnx-int8 runs a run's int8 file, calibrated on its "
                          f"training images and measured on its test split; {model} is not "
                          "a run folder made by `cnnkit train`. Use --backend auto.")
    path = folder / INT8_NAME
    why = (f"{path} cannot be used: {derived.check(path, card.sha256)}" if path.is_file()
           else f"{folder} has no int8 file ({INT8_NAME})")
    raise CnnkitError(f"{why}. Make it with `cnnkit export {folder} --quantize int8` "
                      "(calibrated on the run's training images, measured on its test "
                      "split), then use --backend onnx-int8.")


def names_onnx_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is to be read as an ONNX export: a ``.onnx`` name that is not a
    folder (a run folder a user named 'exp.onnx' is a run folder; a missing file is
    read as the export it names, so that its error says so)."""
    return Path(path).suffix.lower() == ".onnx" and not Path(path).is_dir()


def onnx_file(path: str | os.PathLike, backend: str) -> tuple[ModelCard, Path | None,
                                                               OnnxBackend]:
    """An ONNX file ``cnnkit export`` wrote, given as the model itself: its card (the run's
    when its sidecar sits beside it with the same weights and kind of task; a runner
    answers with the file's own task, :func:`own_task`), that sidecar (else None), and an
    onnxruntime backend on it. The file must be unchanged since it
    was made (its record, :func:`cnnkit.artifacts.derived.require`); ``backend`` must
    be one that runs it (auto, or onnx / onnx-int8 as its precision says)."""

    check_backend(backend)
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"ONNX file not found: {path}.")
    derived.require(path)  # unchanged since cnnkit made it, before anything reads it
    meta = read_meta(path)
    precision = str(meta.info.get("precision", "float"))
    kind = "onnx-int8" if precision == "int8" else "onnx"
    if backend not in ("auto", kind):
        raise CnnkitError(f"{path} is a{'n int8' if kind == 'onnx-int8' else ' float'} ONNX "
                          f"file: it runs on --backend {kind} (or auto). Received: "
                          f"--backend {backend}" + (" (pass the run folder for torch)"
                                                    if backend == "torch" else ""))
    source = derived.source(path)
    card = ModelCard(Architecture(str(meta.info.get("architecture") or "onnx")),
                     meta.classes, meta.preprocess, {**meta.info, "onnx_file": path.name},
                     source, meta.task)
    sidecar = path.parent / "model.json"
    if sidecar.is_file():
        try:
            run_card, _ = read_card(sidecar)
        except CnnkitError:
            run_card = None
        if run_card is not None and run_card.sha256 == source and (
                run_card.classes, run_card.preprocess, run_card.task.name) == (
                meta.classes, meta.preprocess, meta.task.name):
            card = run_card  # its runner reads the file's own task (own_task)
        else:
            sidecar = None
    else:
        sidecar = None
    return card, sidecar, OnnxBackend(path, name=kind)


def make_backend(kind: str, model: nn.Module, card: ModelCard, device: torch.device,
                 folder: Path | None = None) -> Backend:
    """The backend ``kind`` (:data:`BACKENDS`) for ``model`` on ``device``."""
    check_backend(kind)
    stats = stats_beside(card, folder) if kind != "onnx-int8" else None
    if kind == "torch" or (kind == "auto" and device.type != "cpu"):
        return TorchBackend(model, device, stats)
    if kind in ONNX_KINDS and device.type != "cpu":
        raise CnnkitError(f"The {kind} backend runs on the CPU; received device {device}. "
                          "Use --device cpu, or --backend torch for the GPU.")
    if kind == "onnx-int8":
        return OnnxBackend(require_int8(card, folder, str(folder or card.architecture.name)),
                           name="onnx-int8")
    try:
        return OnnxBackend(cached_onnx(model, card, folder, stats))
    except CnnkitError as exc:
        if kind == "onnx":
            raise
        log.warn(f"using torch: {exc}")
        return TorchBackend(model, device, stats)
