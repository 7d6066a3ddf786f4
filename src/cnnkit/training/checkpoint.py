"""Crash-safe training checkpoints in one safetensors file, never a pickle.

Model weights, optimizer moments and random-generator states are tensors; the rest
(epoch, phase, history, optimizer hyper-parameters) is JSON in the file's metadata.
One file written atomically: a crash leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cnnkit.artifacts.modelfile import state_dict_for_saving
from cnnkit.base.atomic import atomic_path
from cnnkit.base.errors import CnnkitError


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, meta: dict[str, Any],
                    generators: dict[str, torch.Generator],
                    average: torch.nn.Module | None = None) -> None:
    """``average``: the weight average (``--ema``), kept beside the trained weights."""
    tensors = {f"model.{k}": v for k, v in state_dict_for_saving(model).items()}
    if average is not None:
        tensors.update({f"ema.{k}": v for k, v in state_dict_for_saving(average).items()})
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    for name, gen in generators.items():
        tensors[f"rng.{name}"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    doc = {**meta, "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"cnnkit": json.dumps(doc)})


def saved_epochs(path: str | os.PathLike) -> int:
    """How many epochs the checkpoint at ``path`` holds (0: none, or unreadable), from its
    metadata alone."""
    try:
        with safe_open(str(path), "pt") as fh:
            history = json.loads((fh.metadata() or {})["cnnkit"]).get("history")
    except (SafetensorError, OSError, KeyError, ValueError, AttributeError, RecursionError):
        return 0
    return len(history) if isinstance(history, list) else 0


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor],
                                                      dict[str, Any], dict[str, Any],
                                                      dict[str, torch.Tensor],
                                                      dict[str, torch.Tensor]]:
    """Returns (model state, optimizer state dict, meta, rng states, weight-average
    state: empty without ``--ema``)."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"No checkpoint at {path}: the run stopped before its first epoch "
                          "ended. Start a new run instead of --resume.")
    try:
        with safe_open(str(path), "pt") as fh:
            doc = json.loads((fh.metadata() or {})["cnnkit"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, KeyError, ValueError, RecursionError) as exc:
        raise _unreadable(path, str(exc) or type(exc).__name__) from None
    why = _meta_problem(doc, tensors)
    if why:
        raise _unreadable(path, why)
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    average = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    opt_meta = doc.pop("optimizer")
    for k, v in opt_meta["scalars"].items():
        pid, key = k.split(".", 1)
        state.setdefault(int(pid), {})[key] = v
    optim = {"state": state, "param_groups": opt_meta["param_groups"]}
    return model, optim, doc, rng, average


def _unreadable(path: Path, why: str) -> CnnkitError:
    run = path.parent.parent
    return CnnkitError(f"{path} is not a readable cnnkit checkpoint ({why[:200]}); the run "
                       "cannot continue from it. Start a new run, or one from this run's kept "
                       f"model with --init-from {run}.")


def _meta_problem(doc: Any, tensors: dict[str, torch.Tensor]) -> str | None:
    """What is wrong with a checkpoint's record of where training stood, if anything."""
    if not isinstance(doc, dict):
        return "its record is not a mapping"
    for key in ("phase", "epoch_in_phase"):
        value = doc.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return f"{key} is not a count of epochs"
    if not (isinstance(doc.get("history"), list)
            and all(isinstance(row, dict) for row in doc["history"])):
        return "history is not a list of epochs"
    if not isinstance(doc.get("best"), dict):
        return "best is not a mapping"
    opt = doc.get("optimizer")
    if not (isinstance(opt, dict) and isinstance(opt.get("param_groups"), list)
            and isinstance(opt.get("scalars"), dict)
            and all(isinstance(k, str) and k.partition(".")[0].isdigit()
                    for k in opt["scalars"])):
        return "its optimizer state is malformed"
    if not any(k.startswith("model.") for k in tensors):
        return "it holds no model weights"
    for key in ("rng.torch", "rng.data"):
        if key not in tensors or tensors[key].dtype != torch.uint8:
            return f"{key} is missing or not a generator state"
    if any(k.startswith("optim.") and not re.fullmatch(r"optim\.\d+\..+", k, re.S)
           for k in tensors):
        return "its optimizer state is malformed"
    return None
