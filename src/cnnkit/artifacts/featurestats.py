"""The unknown rule's feature statistics beside a model's weights.

A single-label run whose unknown rule reads a feature distance
(:class:`cnnkit.tasks.ood.FeatureStats`) keeps the class means and the whitening in a
safetensors file next to its weights (``model.unknown.safetensors`` for
``model.safetensors``); the card's rule names the file, its sha256 and its width, so a
file from another save is refused rather than used. Exported ONNX files carry the
distance in their graph and need no such file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from cnnkit.artifacts.modelcard import file_sha256
from cnnkit.base.atomic import atomic_path
from cnnkit.base.errors import CnnkitError
from cnnkit.tasks.ood import FeatureStats, UnknownRule


def stats_path(weights: str | os.PathLike) -> Path:
    """Where the statistics of the weights at ``weights`` are kept."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}.unknown.safetensors")


def save_stats(stats: FeatureStats, weights: str | os.PathLike) -> dict[str, Any]:
    """Write ``stats`` beside ``weights`` (atomically); the rule's ``features`` entry."""
    path = stats_path(weights)
    with atomic_path(path) as tmp:
        save_file({"means": np.ascontiguousarray(stats.means, np.float32),
                   "whiten": np.ascontiguousarray(stats.whiten, np.float32),
                   "iso": np.array([stats.iso], np.float64)}, str(tmp),
                  metadata={"format": "cnnkit-feature-stats"})
    return {"file": path.name, "sha256": file_sha256(path), "dim": stats.dim}


def load_stats(rule: UnknownRule, folder: str | os.PathLike, n_classes: int
               ) -> FeatureStats:
    """The statistics ``rule`` names, from ``folder``, checked against its sha256 and
    shapes; :class:`CnnkitError` (one line, what to do) when missing or not the ones."""
    feats = rule.features or {}
    path = Path(folder) / str(feats.get("file", ""))
    if not path.is_file():
        raise CnnkitError(f"The unknown rule's feature statistics {path} are missing: copy "
                          "them with the model's weights and model.json (they come from "
                          "the same run folder).")
    if file_sha256(path) != feats.get("sha256"):
        raise CnnkitError(f"{path} is not the file the model card names (its sha256 "
                          "differs): it belongs to another save. Copy the run folder's "
                          "files together.")
    try:
        arrays = load_file(str(path))
        means, whiten, iso = arrays["means"], arrays["whiten"], arrays["iso"]
    except (SafetensorError, OSError, KeyError) as exc:
        raise CnnkitError(f"{path} is not a readable statistics file ({exc}).") from None
    dim = feats.get("dim")
    if (means.ndim != 2 or whiten.ndim != 2 or whiten.shape[0] != dim
            or not 1 <= whiten.shape[1] <= dim or means.shape != (n_classes, dim)
            or iso.shape != (1,) or not float(iso[0]) >= 0
            or not (np.isfinite(means).all() and np.isfinite(whiten).all()
                    and np.isfinite(iso).all())):
        raise CnnkitError(f"{path} holds statistics of the wrong shape for this model "
                          f"({n_classes} classes, {dim} features); use the run's own file.")
    return FeatureStats(means.astype(np.float32), whiten.astype(np.float32), float(iso[0]))
