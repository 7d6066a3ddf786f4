"""phases.json, the loop's record of its phases for the report: what trained, what stayed
frozen, and the learning rate at each point of each phase (the curve the loop follows,
so the report draws it without recomputing it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.training.events import Events, PhaseStarted
from cnnkit.training.optim import lr_points
from cnnkit.training.transfer import Phase, describe_phase


def record_phase(run: RunDir, index: int, phase: Phase, groups: list[dict], model: nn.Module,
                 cfg: TrainConfig, warmup: float, events: Events, phases: int,
                 writes: bool) -> None:
    """phases.json: what trained, what stayed frozen and the learning rate at each point
    of each phase (for the report); the phase's start, to the subscribers. ``phases``:
    how many the run has; ``writes``: whether this process writes the run's files."""
    path = run.root / "phases.json"
    if writes and cfg.warmup_epochs is not None and warmup >= 1.0 and phase.epochs:
        anneal = "" if cfg.schedule == "constant" else " and never anneals"
        log.warn(f"--warmup-epochs {cfg.warmup_epochs:g} spans all of phase {phase.name}'s "
                 f"{log.plural(phase.epochs, 'epoch')}: its learning rate rises to the peak "
                 f"at the phase's last step{anneal}; give fewer warm-up epochs than that")
    record = phase_record(run, path) if writes and path.is_file() else []
    entry = {"mode": cfg.mode, **describe_phase(model, phase, groups),
             "schedule": cfg.schedule,
             "lr_curve": lr_points(phase.epochs, phase.lr, cfg.schedule, warmup)}
    record = [r for r in record if r.get("index") != index] + [{"index": index, **entry}]
    if writes:
        write_json(path, sorted(record, key=lambda r: r["index"]))
    events.emit(PhaseStarted(index, phase.name, phase.epochs,
                             entry["trainable_params"], entry["frozen_params"],
                             str(entry["frozen"]),
                             announce=phases > 1 or bool(entry["frozen_params"])))


def phase_record(run: RunDir, path: Path) -> list[dict[str, Any]]:
    """phases.json's entries so far; a damaged file is written anew (it only feeds the
    report's phase marks), with a warning."""
    try:
        record = run.read_json(path, "it is written anew")
    except CnnkitError as exc:
        log.warn(str(exc))
        return []
    if isinstance(record, list) and all(isinstance(r, dict) for r in record):
        return record
    log.warn(f"{path} is damaged (not a list of phases); it is written anew.")
    return []
