"""A run from a trained start (the linear probe's head, an ``--init-from`` run) against
its end: where the start's weights wait while the run trains, and at the end which of
the two the run keeps (the better on validation), said and recorded in kept.json.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from cnnkit.artifacts.modelfile import ModelCard, file_sha256, save_model
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.atomic import atomic_path, write_json
from cnnkit.tasks.base import Task


def start_path(run: RunDir) -> Path:
    """Where the trained start's weights wait beside the checkpoint."""
    return run.root / "checkpoints" / "start.safetensors"


def keep_start(model: nn.Module, card: ModelCard, run: RunDir, label: str | None, task: Task,
               figures: dict[str, float], writes: bool) -> dict[str, Any]:
    """The trained start's validation ``figures`` under its ``label``, said; its weights
    kept beside the checkpoint (by the writing process), so the end of the run can fall
    back on them."""
    start = {"label": label, **figures}
    if writes:
        save_model(model, card, start_path(run))
    log.info(f"start ({label}): val loss {start['val_loss']:.4f} "
             f"{task.figure} {start[f'val_{task.figure}']:.2%}")
    return start


def settle(run: RunDir, card: ModelCard, task: Task, start: dict[str, Any],
           history: list[dict[str, Any]], best: dict[str, Any], keep_best: bool,
           writes: bool) -> None:
    """A trained start: keep whichever of the start and the end (the kept epoch) is
    better on validation, say which, and record it in kept.json. ``start``: the start's
    validation figures (empty: no trained start, or none measured); ``writes``: whether
    this process writes the run's files."""
    if not start or not history:
        return
    v = f"val_{task.figure}"  # the task's figure decides, then the loss
    if keep_best and best:
        end = {"epoch": best["epoch"], v: best[v],
               "val_loss": best["val_loss"]}
    else:
        last = history[-1]
        end = {"epoch": last["epoch"], v: last.get(v),
               "val_loss": last.get("val_loss")}
    path = start_path(run)
    end_wins = end[v] > start[v] or (
        end[v] == start[v] and end["val_loss"] <= start["val_loss"])
    which = "best" if keep_best else "last"
    if not end_wins and writes and not path.is_file():
        log.warn(f"the start's weights ({path}) are gone: keeping the "
                 f"{which} epoch's model although the start did better on validation")
        end_wins = True
    if end_wins:
        log.info(f"kept the trained model (epoch {end['epoch']}): validation "
                 f"{end[v]:.2%} against {start[v]:.2%} at the start "
                 f"({start['label']})")
    else:
        log.warn(f"kept the starting weights ({start['label']}): validation "
                 f"{start[v]:.2%} (loss {start['val_loss']:.4f}) against "
                 f"{end[v]:.2%} (loss {end['val_loss']:.4f}) for the {which} "
                 f"epoch ({end['epoch']}); training did not improve on its start")
    if not writes:
        return
    if not end_wins:  # the start's weights become the run's model file, whole
        target = run.model_path
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
        write_json(target.with_suffix(".json"),
                   card.to_dict(target.name, file_sha256(target)))
    write_json(run.root / "kept.json", {
        "kept": which if end_wins else "start", "epoch": end["epoch"] if end_wins else 0,
        v: (end if end_wins else start)[v],
        "val_loss": (end if end_wins else start)["val_loss"],
        "start": start, "end": {**end, "rule": which}})
    for p in (path, path.with_suffix(".json")):
        p.unlink(missing_ok=True)
