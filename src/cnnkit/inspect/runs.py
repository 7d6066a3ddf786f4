"""Many run folders at a glance: one summary per run, read from its plain files only
(config.json, metrics.csv, kept.json, test_metrics.json, model.safetensors' size);
nothing is loaded or unpickled, and a half-written or foreign folder is skipped, not
fatal.

The figures are the kept model's, the one in ``model.safetensors``: its test accuracy
(test_metrics.json measures it) and its validation accuracy, from ``kept.json`` where
the run wrote one (a fine-tune that kept its start) or else from the epoch that the
run's resolved ``keep`` picks (the best epoch by validation accuracy, then loss; or the
last). The best epoch's validation accuracy is in the JSON too (``best_val_acc``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.errors import CnnkitError

KEPT_FILE = "kept.json"
Kept = tuple[str | None, int | None, float | None]  # which, its epoch, its val accuracy

# --sort keys: the attribute, and whether larger is better (shown first)
SORT_KEYS = {"date": ("started", False), "name": ("name", False), "test": ("test_acc", True),
             "val": ("val_acc", True), "time": ("seconds", False),
             "size": ("size_bytes", False), "epochs": ("epochs_done", True),
             "model": ("model", False), "data": ("data", False)}


@dataclass(frozen=True)
class RunSummary:
    """What ``cnnkit runs`` shows of one run folder."""

    path: str
    name: str
    data: str
    model: str
    mode: str
    epochs_done: int
    epochs_planned: int | None
    kept: str | None  # which model the run kept: "best" or "last" epoch, or its "start"
    kept_epoch: int | None  # 0 for the start
    val_acc: float | None  # the kept model's
    test_acc: float | None  # the kept model's, on the run's test split
    best_val_acc: float | None  # the best epoch's (another epoch's model, maybe)
    best_epoch: int | None
    seconds: float | None
    size_bytes: int | None
    started: float
    finished: bool
    # what val_acc, test_acc and best_val_acc measure: "acc" (accuracy), or "exact" (a
    # multi-label run's exact match)
    figure: str = "acc"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _val(row: dict[str, Any]) -> float | None:
    """An epoch row's validation figure: accuracy, or a multi-label run's exact match."""
    return _float(row.get("val_acc", row.get("val_exact")))


def summarize(folder: str | os.PathLike) -> RunSummary:
    """One run folder's summary (a :class:`CnnkitError` if it is not a run)."""
    run = RunDir.open(folder)
    try:
        config = run.read_config()
    except (OSError, ValueError) as exc:
        raise CnnkitError(f"{run.root}/config.json cannot be read ({exc}).") from None
    if not isinstance(config, dict):
        raise CnnkitError(f"{run.root}/config.json is not a mapping of options.")
    rows = run.read_metrics()
    vals = [(_val(r), int(_float(r.get("epoch")) or i + 1)) for i, r in enumerate(rows)]
    vals = [(v, e) for v, e in vals if v is not None]
    best = max(vals, key=lambda ve: ve[0]) if vals else (None, None)
    kept, kept_epoch, val = kept_model(run, config, rows)
    test = None
    if run.test_metrics_path.is_file():
        try:
            metrics = json.loads(run.test_metrics_path.read_text())
            test = _float(metrics.get("accuracy", metrics.get("exact_match")))
        except (OSError, ValueError, AttributeError):
            test = None
    elapsed = [_float(r.get("elapsed_s")) for r in rows]
    seconds = next((e for e in reversed(elapsed) if e is not None), None)
    if seconds is not None:
        seconds += sum(_float(r.get("eval_time_s")) or 0.0 for r in rows)
    size = run.model_path.stat().st_size if run.model_path.is_file() else None
    planned = config.get("epochs")
    data = config.get("data")
    if isinstance(data, dict):  # a source's run spec
        data = data.get("spec") or data.get("name") or json.dumps(data, sort_keys=True)
    return RunSummary(
        path=str(run.root), name=run.root.name, data=str(data), model=str(config.get("model")),
        mode=str(config.get("mode")), epochs_done=len(rows),
        epochs_planned=int(planned) if isinstance(planned, (int, float)) else None,
        kept=kept, kept_epoch=kept_epoch, val_acc=val, test_acc=test,
        best_val_acc=best[0], best_epoch=best[1], seconds=seconds,
        size_bytes=size, started=run.config_path.stat().st_mtime,
        finished=run.test_metrics_path.is_file() or (run.root / "report.html").is_file(),
        figure="exact" if any("val_exact" in r or "train_exact" in r for r in rows) else "acc")


def kept_model(run: RunDir, config: dict[str, Any], rows: list[dict[str, Any]]) -> Kept:
    """Which model the run kept (``best``, ``last`` or ``start``), its epoch and its
    validation accuracy, as the run recorded them."""
    recorded = _read_kept(run.root / KEPT_FILE)
    if recorded is not None:
        return recorded
    if not rows:
        return None, None, None
    epochs = [(int(_float(r.get("epoch")) or i + 1), _val(r),
               _float(r.get("val_loss"))) for i, r in enumerate(rows)]
    if config.get("keep") == "best" and any(v is not None for _, v, _ in epochs):
        # the loop's rule: higher accuracy, then lower loss; the first such epoch
        scored = [(e, v, loss) for e, v, loss in epochs if v is not None]
        e, v, _ = min(scored, key=lambda x: (-x[1], x[2] if x[2] is not None else math.inf,
                                             x[0]))
        return "best", e, v
    e, v, _ = epochs[-1]
    return "last", e, v


def _read_kept(path: Path) -> tuple[str, int, float | None] | None:
    """``kept.json`` (written by a run that compared its end with a trained start)."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("kept") not in ("best", "last", "start"):
        return None
    epoch = doc.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return None
    return doc["kept"], epoch, _float(doc.get("val_acc", doc.get("val_exact")))


def list_runs(folder: str | os.PathLike = "runs", sort: str = "date",
              reverse: bool = False) -> list[RunSummary]:
    """The runs directly inside ``folder`` (or ``folder`` itself if it is one), sorted:
    accuracies and epochs largest first, the rest smallest or oldest first."""
    root = Path(folder)
    if not root.is_dir():
        raise CnnkitError(f"Folder not found: {root}. Pass the folder that holds run "
                          "folders (default: runs).")
    if sort not in SORT_KEYS:
        raise CnnkitError(f"--sort takes one of {', '.join(SORT_KEYS)}. Received: {sort!r}")
    candidates = [root] if (root / "config.json").is_file() else sorted(
        p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())
    runs = []
    for path in candidates:
        try:
            runs.append(summarize(path))
        except CnnkitError:
            continue  # a foreign or broken folder: the listing shows the rest
    attr, larger_first = SORT_KEYS[sort]

    def key(r: RunSummary) -> tuple[bool, Any]:
        value = getattr(r, attr)
        if value is None:
            return (True, 0)  # runs without the value go last
        return (False, -value if larger_first and not isinstance(value, str) else value)

    runs.sort(key=key)
    return runs[::-1] if reverse else runs


def kept_label(r: RunSummary) -> str:
    """Which model a run kept, for a table cell: ``epoch 7 (best)``, ``the start``."""
    if r.kept is None:
        return ""
    return "the start" if r.kept == "start" else f"epoch {r.kept_epoch} ({r.kept})"


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def human_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
