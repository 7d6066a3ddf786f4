"""Self-describing model files: ``model.safetensors`` plus a ``model.json`` sidecar.

The sidecar holds everything predict, export, explain and serve need (architecture,
classes, input size, channels, normalisation, cnnkit version), so a model file is
usable on its own. Loading never unpickles anything.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cnnkit.artifacts.modelcard import (  # noqa: F401  (re-exported: the model file's API)
    FORMAT,
    FORMAT_VERSION,
    ModelCard,
    file_sha256,
    find_sidecar,
    read_card,
)
from cnnkit.base.atomic import atomic_path, write_json
from cnnkit.base.errors import CnnkitError
from cnnkit.models.build import create_model


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
    write_json(path.with_suffix(".json"), card.to_dict(path.name, file_sha256(path)))
    return path


def update_card(path: str | os.PathLike, card: ModelCard) -> Path:
    """Rewrite the sidecar of the model at ``path`` with ``card`` (atomically), the
    weights untouched: settings fitted after training, such as the task's calibration."""
    sidecar = find_sidecar(path)
    _, weights = read_card(sidecar)
    write_json(sidecar, card.to_dict(weights.name, card.sha256 or file_sha256(weights)))
    return sidecar


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model from its sidecar and load its weights (safetensors only)."""
    card, weights = read_card(path)
    pre = card.preprocess
    _same_size(card, weights)
    try:
        model = create_model(card.architecture, card.task.outputs(card.classes), pre.channels,
                             pre.img_size)
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnkitError(f"The architecture recorded in the sidecar of {weights} is damaged "
                          f"({type(exc).__name__}: {exc}); it cannot be rebuilt.") from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CnnkitError(f"{weights} is not a readable safetensors file ({exc}).") from None
    _usable_numbers(model, state, weights)
    load_state(model, state, str(weights))
    if card.sha256 and file_sha256(weights) != card.sha256:
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
            meta = create_model(card.architecture, card.task.outputs(card.classes),
                                pre.channels, pre.img_size)
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


def _usable_numbers(model: nn.Module, state: dict[str, torch.Tensor], weights: Path) -> None:
    """Refuse weights that would answer without meaning: whole numbers where the model
    computes in floating point (load_state_dict casts them silently), or NaN and infinite
    values (a diverged training's), which give NaN probabilities and still name a class."""
    own = model.state_dict()
    for key, value in state.items():
        if key not in own or not own[key].is_floating_point():
            continue  # load_state names a key that does not fit; counters stay whole
        if not value.is_floating_point():
            raise CnnkitError(f"{weights} holds whole numbers ({value.dtype}) where the model "
                              f"has floating-point weights (e.g. {key!r}): it is not a model "
                              "file cnnkit saved. Use the run's own model.safetensors.")
        if not bool(torch.isfinite(value).all()):
            raise CnnkitError(f"{weights} holds NaN or infinite weights (e.g. {key!r}), which "
                              "answer NaN probabilities: the training that saved them "
                              "diverged, or the file was damaged. Use the weights of a run "
                              "whose loss stayed finite (a lower --lr).")


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
