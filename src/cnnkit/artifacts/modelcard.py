"""A model's sidecar (``model.json``) as a :class:`ModelCard`: written, found, read and
checked without torch, so that prediction from an exported file never imports it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnnkit._version import __version__
from cnnkit.base.errors import CnnkitError
from cnnkit.data.preprocess import Preprocess
from cnnkit.models.build import Architecture
from cnnkit.models.sidecar_schema import parse_json, sidecar_text, validate
from cnnkit.tasks.base import Task
from cnnkit.tasks.registry import task_from_card
from cnnkit.tasks.single_label import SingleLabel

FORMAT = "cnnkit-model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelCard:
    """The sidecar, parsed."""

    architecture: Architecture
    classes: tuple[str, ...]
    preprocess: Preprocess
    info: dict[str, Any]
    # Of the weights file, as its sidecar records it (when read); of a pretrained model's
    # weights source and input for an ImageNet model (cnnkit.runtime.zeroshot).
    sha256: str | None = None
    # What the model predicts and how its outputs become answers (model.json's "task";
    # a sidecar written before tasks existed is single-label).
    task: Task = field(default_factory=SingleLabel)

    def to_dict(self, weights_name: str, sha256: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cnnkit_version": __version__,
            "architecture": self.architecture.to_dict(),
            "task": self.task.card_fields(),
            "num_classes": len(self.classes),
            "classes": list(self.classes),
            "input": self.preprocess.to_dict(),
            "weights": weights_name,
            "sha256": sha256,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **({"info": self.info} if self.info else {}),
        }


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_sidecar(path: str | os.PathLike) -> Path:
    """Accept a run folder, a sidecar or a weights file; return the sidecar's path."""
    p = Path(path)
    if not p.exists():
        raise CnnkitError(f"Not found: {p}. Pass a run folder made by `cnnkit train` "
                          "(e.g. runs/fashion-mnist-fast-cnn) or its model.json.")
    if p.is_dir():
        sidecar = p / "model.json"
        if not sidecar.is_file():
            raise CnnkitError(f"{p} is not a cnnkit run: it has no model.json. Pass a run "
                              "folder made by `cnnkit train`, or a model's .json sidecar.")
        return sidecar
    if p.suffix == ".safetensors":
        sidecar = p.with_suffix(".json")
        if not sidecar.is_file():
            raise CnnkitError(f"{p} has no sidecar {sidecar.name} beside it; a cnnkit model "
                              "file is a .safetensors with its .json.")
        return sidecar
    if p.suffix == ".json":
        return p
    if p.suffix == ".pte":
        raise CnnkitError(f"{p} is an ExecuTorch program, for ExecuTorch's own runtime (a "
                          "phone, a board); cnnkit predicts with the run folder it was "
                          "exported from, or its model.onnx.")
    raise CnnkitError(f"{p} is not a cnnkit model: expected a run folder, a model.json or a "
                      ".safetensors file. (.pt/.pth pickles are not loaded: they can run code.)")


def read_card(path: str | os.PathLike) -> tuple[ModelCard, Path]:
    """Parse and check a sidecar; returns the card and the weights file's path."""
    sidecar = find_sidecar(path)
    doc = parse_json(sidecar_text(sidecar), str(sidecar))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CnnkitError(f"{sidecar} is not a cnnkit model sidecar (no \"format\": "
                          f"\"{FORMAT}\").")
    version = doc.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CnnkitError(f"{sidecar} is incomplete or damaged: format_version must be a "
                          "whole number. Use the model.json that was saved with the weights.")
    if version > FORMAT_VERSION:
        raise CnnkitError(f"{sidecar} was written by a newer cnnkit "
                          f"({doc.get('cnnkit_version')}); upgrade cnnkit to load it.")
    validate(doc, str(sidecar))  # types, ranges and sizes, before anything is built
    try:
        weights = sidecar.parent / str(doc["weights"])
        classes = tuple(str(c) for c in doc["classes"])
        card = ModelCard(Architecture.from_dict(doc["architecture"]), classes,
                         Preprocess.from_dict(doc["input"]), doc.get("info") or {},
                         doc.get("sha256"),
                         task_from_card(doc.get("task"), classes, str(sidecar)))
    except KeyError as exc:
        raise CnnkitError(f"{sidecar} is incomplete or damaged: no {exc.args[0]!r} in it. "
                          "Use the model.json that was saved with the weights.") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CnnkitError(f"{sidecar} is incomplete or damaged ({exc}). Use the model.json "
                          "that was saved with the weights.") from None
    if not weights.is_file():
        raise CnnkitError(f"The weights file {weights} named by {sidecar.name} is missing.")
    return card, weights


