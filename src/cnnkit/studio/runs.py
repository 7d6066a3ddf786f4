"""A project's finished runs as the studio sees them: a run's folder (its name checked),
the list the page shows, the commands that use a run from a terminal, a run's folder as
a zip, and the runs loaded for prediction (inference only)."""

from __future__ import annotations

import io
import json
import os
import shlex
import threading
import zipfile
from pathlib import Path
from typing import Any

from cnnkit.artifacts import derived
from cnnkit.base import log
from cnnkit.studio.project import Conflict, NotFound, Project

WARNING = Path("studio") / "warning.json"  # the warning training ended with (the worker's)
RUN_FILES = {"model.onnx": "application/octet-stream",
             "model.int8.onnx": "application/octet-stream"}


class Predictors:
    """Finished runs loaded for prediction (on the CPU, one thread: training has the
    rest), the newest few kept."""

    KEEP = 3

    def __init__(self, project: Project) -> None:
        self.project = project
        self._loaded: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, run: str) -> Any:
        folder = run_folder(self.project, run)
        stamp = os.stat(folder / "model.safetensors").st_mtime
        with self._lock:
            hit = self._loaded.get(run)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            import torch

            from cnnkit.runtime.predict import Classifier

            torch.set_num_threads(1)
            clf = Classifier.load(folder, "cpu", "torch")
            self._loaded[run] = (stamp, clf)
            while len(self._loaded) > self.KEEP:
                self._loaded.pop(next(iter(self._loaded)))
            return clf


def run_folder(project: Project, run: object) -> Path:
    """The folder of run ``run`` (a name among the project's runs, checked)."""
    runs = project.runs_dir
    if isinstance(run, str) and run and "/" not in run and "\\" not in run \
            and not run.startswith(".") and runs.is_dir():
        for entry in os.scandir(runs):
            if entry.name == run and entry.is_dir(follow_symlinks=False) and \
                    os.path.isfile(os.path.join(entry.path, "model.safetensors")):
                return Path(entry.path)
    raise NotFound(f"No finished run {log.cut(repr(run))} in this project.")


def finished_run(project: Project, run: object, action: str) -> Path:
    """The folder of run ``run``, refused (409) while a process still trains it: its
    model file is replaced at each better epoch and its card and calibration are written
    at its end, so ``action`` (``"export it"``) now would act on a half-written run."""
    folder = run_folder(project, run)
    if training(folder):
        raise Conflict(f"Run {folder.name!r} is still training: {action} once it has "
                       "finished (its model changes with each better epoch, and its "
                       "calibration is written at the end).")
    return folder


def list_runs(project: Project) -> list[dict[str, Any]]:
    out = []
    if not project.runs_dir.is_dir():
        return out
    entries = [e for e in os.scandir(project.runs_dir) if e.is_dir(follow_symlinks=False)]
    for entry in sorted(entries, key=lambda e: e.stat().st_mtime, reverse=True):  # newest
        folder = Path(entry.path)
        if not entry.is_dir(follow_symlinks=False) or not (folder / "model.json").is_file():
            continue
        config = read_json(folder / "config.json")
        test = read_json(folder / "test_metrics.json")
        out.append({"name": entry.name, "mode": config.get("mode"),
                    "model": config.get("model"), "img_size": config.get("img_size"),
                    "test_accuracy": test.get("accuracy"), "n_test": test.get("n"),
                    "finished": (folder / "model.safetensors").is_file()
                    and not training(folder), "training": training(folder),
                    "files": exported(folder),
                    "understood": (folder / "studio" / "understand.json").is_file(),
                    "warning": str(read_json(folder / WARNING).get("warning") or ""),
                    "time": entry.stat().st_mtime})
    return out


def training(folder: Path) -> bool:
    """Whether a process is training the run now: its lock file (removed when the run
    ends) names a live process. Read, not locked: a lock taken to look would make the
    trainer's own attempt fail."""
    try:
        with open(folder / ".lock", "rb") as fh:
            pid = int(fh.read(64).split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def exported(folder: Path) -> list[str]:
    """The run's exported files made from its weights as they are now: a file exported
    while the run was still training answers as its earlier weights did."""
    found = [f for f in RUN_FILES if (folder / f).is_file()]
    if not found:
        return []
    try:
        weights = derived.sha256_of(folder / "model.safetensors")
    except OSError:
        return []
    return [f for f in found if derived.source(folder / f) == weights]


def exported_file(folder: Path, name: str) -> Path:
    """The exported file ``name`` of the run in ``folder``, checked to be made from the
    run's weights as they are now and unchanged since."""
    path = folder / name
    if name not in RUN_FILES or not path.is_file():
        raise NotFound(f"Run {folder.name!r} has no {log.cut(repr(name))}; export it from "
                       "the Ship tab first.")
    try:
        weights = derived.sha256_of(folder / "model.safetensors")
    except OSError as exc:
        raise NotFound(f"Run {folder.name!r} has no model ({exc.strerror}).") from None
    why = derived.check(path, weights)
    if why is not None:
        raise Conflict(f"{name} of run {folder.name!r} no longer answers as the run does: "
                       f"{why} (exported while the run was still training?). Export it again "
                       "from the Ship tab.")
    return path


def commands(project: Project, run: str) -> dict[str, str]:
    """The exact commands that serve and predict with ``run`` from a terminal."""
    folder = shlex.quote(str(run_folder(project, run)))
    return {"serve": f"cnnkit serve {folder}",
            "predict": f"cnnkit predict {folder} photo.jpg --top-k 3",
            "evaluate": f"cnnkit evaluate {folder}",
            "predict_onnx": f"cnnkit predict {folder} photo.jpg --backend onnx",
            "train": f"cnnkit train {shlex.quote(str(project.root))}"}


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when it is missing, unreadable or not an object)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def zip_folder(folder: Path) -> bytes:
    """``folder``'s files (links left out) as a zip under the folder's name."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    return buffer.getvalue()
