"""Self-describing model files: ``model.safetensors`` plus a ``model.json`` sidecar.

The sidecar holds everything predict, export, explain and serve need (architecture,
classes, input size, channels, normalisation, cnnkit version), so a model file is
usable on its own. Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cnnkit._version import __version__
from cnnkit.atomic import atomic_path, write_json
from cnnkit.data.pipeline import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.models.build import Architecture, create_model
from cnnkit.sidecar_schema import parse_json, sidecar_text, validate

FORMAT = "cnnkit-model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelCard:
    """The sidecar, parsed."""

    architecture: Architecture
    classes: tuple[str, ...]
    preprocess: Preprocess
    info: dict[str, Any]
    sha256: str | None = None  # of the weights file, as its sidecar records it (when read)

    def to_dict(self, weights_name: str, sha256: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cnnkit_version": __version__,
            "architecture": self.architecture.to_dict(),
            "num_classes": len(self.classes),
            "classes": list(self.classes),
            "input": self.preprocess.to_dict(),
            "weights": weights_name,
            "sha256": sha256,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **({"info": self.info} if self.info else {}),
        }


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, unwrapping ``torch.compile`` and de-duplicating shares."""
    model = getattr(model, "_orig_mod", model)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_model(model: nn.Module, card: ModelCard, path: str | os.PathLike) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar, each atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    with atomic_path(path) as tmp:
        save_file(state_dict_for_saving(model), str(tmp),
                  metadata={"format": FORMAT, "classes": json.dumps(list(card.classes))})
    write_json(path.with_suffix(".json"), card.to_dict(path.name, _sha256(path)))
    return path


def _sha256(path: Path) -> str:
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
        card = ModelCard(Architecture.from_dict(doc["architecture"]),
                         tuple(str(c) for c in doc["classes"]),
                         Preprocess.from_dict(doc["input"]), doc.get("info") or {},
                         doc.get("sha256"))
    except KeyError as exc:
        raise CnnkitError(f"{sidecar} is incomplete or damaged: no {exc.args[0]!r} in it. "
                          "Use the model.json that was saved with the weights.") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CnnkitError(f"{sidecar} is incomplete or damaged ({exc}). Use the model.json "
                          "that was saved with the weights.") from None
    if not weights.is_file():
        raise CnnkitError(f"The weights file {weights} named by {sidecar.name} is missing.")
    return card, weights


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model from its sidecar and load its weights (safetensors only)."""
    card, weights = read_card(path)
    pre = card.preprocess
    _same_size(card, weights)
    try:
        model = create_model(card.architecture, len(card.classes), pre.channels, pre.img_size)
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnkitError(f"The architecture recorded in the sidecar of {weights} is damaged "
                          f"({type(exc).__name__}: {exc}); it cannot be rebuilt.") from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CnnkitError(f"{weights} is not a readable safetensors file ({exc}).") from None
    load_state(model, state, str(weights))
    if card.sha256 and _sha256(weights) != card.sha256:
        sidecar = weights.with_suffix(".json").name
        raise CnnkitError(f"{weights} has changed since its sidecar {sidecar} was written "
                          "(its sha256 differs): the weights and the sidecar belong to "
                          "different saves. Copy them together from the same run.")
    return model.to(device).eval(), card


def _same_size(card: ModelCard, weights: Path) -> None:
    """Refuse, before building for real, an architecture that does not fit the weights
    file (a sidecar whose name was swapped for a far larger model): the model is built on
    the meta device (no memory) and its parameter count compared with the file's header."""
    try:
        with safe_open(str(weights), "pt") as fh:
            stored = sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise CnnkitError(f"{weights} is not a readable safetensors file ({exc}).") from None
    pre = card.preprocess
    try:
        with torch.device("meta"):
            meta = create_model(card.architecture, len(card.classes), pre.channels,
                                pre.img_size)
    except CnnkitError:
        raise
    except Exception:  # a builder that cannot run on meta: the full build checks it
        return
    wanted = sum(t.numel() for t in meta.state_dict().values())
    if wanted != stored:
        raise CnnkitError(f"{weights} does not fit this model's architecture: the sidecar's "
                          f"{card.architecture.name!r} has {wanted:,} numbers, the weights file "
                          f"{stored:,}. The sidecar was edited or belongs to another model; use "
                          "the model.json saved with the weights.")


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, turning key or shape mismatches into one clear message."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, "
                  f"{len(wrong)} of the wrong shape")
        example = (missing or unexpected or wrong)[0]
        raise CnnkitError(f"{source} does not fit this model's architecture ({detail}; e.g. "
                          f"{example!r}). Is it the weights file of another model?")
    model.load_state_dict(state)
