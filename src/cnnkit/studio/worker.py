"""The studio's worker process: ``python -m cnnkit.studio.worker JOB_FOLDER`` runs one
job (:mod:`cnnkit.studio.jobs`) and writes its events, one JSON line each, to the job's
``events.jsonl``; ``--wait`` imports torch and the trainer first, then reads the job's
folder from stdin (an empty line: exit). SIGTERM stops a run as Ctrl-C does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

STEP_EVERY_S = 0.25  # step events written at most this often (epochs, ends: always)

# What the page's three buttons train (options of cnnkit.train).
MODES: dict[str, dict[str, Any]] = {
    "quick": {"mode": "features", "plots": False},
    "better": {"mode": "fine-tune"},
    "scratch": {"mode": "scratch"},
}


class _Terminated(KeyboardInterrupt):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


class EventFile:
    """A subscriber that appends each event to ``events.jsonl`` (steps thinned) and asks
    the run to stop when the page has left a ``stop`` file."""

    def __init__(self, folder: Path, hub: Any = None) -> None:
        self.folder = folder
        self.hub = hub
        self._fh: IO[str] = open(folder / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._last_step = 0.0

    def __call__(self, event: Any) -> None:
        data = event.to_dict()
        now = time.time()
        if data["kind"] == "step":
            if now - self._last_step < STEP_EVERY_S and data["step"] != data["steps"]:
                self._check_stop()
                return
            self._last_step = now
        if data["kind"] in ("end", "test"):
            data.pop("history", None)
        self.write(data, now)
        self._check_stop()

    def write(self, data: dict[str, Any], now: float | None = None) -> None:
        self._fh.write(json.dumps({**data, "t": now or time.time()}, default=str) + "\n")
        self._fh.flush()

    def _check_stop(self) -> None:
        if self.hub is None or self.hub.stop_requested or not (self.folder / "stop").exists():
            return
        self.hub.request_stop()
        (self.folder / "stopping").touch()  # heard: the server leaves it to finish
        self.write({"kind": "job", "what": "stopping"})

    def close(self) -> None:
        self._fh.close()


def _status(folder: Path, state: str, **more: Any) -> None:
    from cnnkit.base.atomic import write_json

    write_json(folder / "status.json", {"state": state, "pid": os.getpid(),
                                        "time": time.time(), **more})


def run(folder: Path) -> int:
    """Run the job in ``folder``; returns the exit code."""
    from cnnkit.base.errors import CnnkitError
    from cnnkit.training.events import Events

    spec = json.loads((folder / "spec.json").read_text())
    hub = Events()
    out = EventFile(folder, hub)
    hub.subscribe(out)
    _status(folder, "running", kind=spec["kind"])
    started = time.time()
    try:
        result = JOBS[spec["kind"]](Path(spec["project"]), spec.get("options", {}), hub, out,
                                    folder)
    except KeyboardInterrupt:
        out.write({"kind": "job", "what": "stopped"})
        _status(folder, "stopped", message="stopped", seconds=time.time() - started)
        return 130
    except CnnkitError as exc:
        out.write({"kind": "job", "what": "failed", "message": str(exc)})
        _status(folder, "failed", message=str(exc), seconds=time.time() - started)
        return 2
    except Exception as exc:  # shown on the page, the traceback in worker.log
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}"
        out.write({"kind": "job", "what": "failed", "message": message})
        _status(folder, "failed", message=message, seconds=time.time() - started)
        return 1
    finally:
        out.close()
    _status(folder, "done", result=result, seconds=time.time() - started)
    return 0


def _config(project: Path, options: dict[str, Any]) -> Any:
    from cnnkit.base.config import TrainConfig
    from cnnkit.studio.project import STATE

    mode = options.get("mode", "quick")
    given = {k: v for k, v in options.items() if k in ("epochs", "time") and v}
    return TrainConfig.from_dict({"data": str(project), **MODES[mode], **given,
                                  "out": str(project / STATE / "runs"),
                                  "name": f"{mode}-{time.strftime('%Y%m%d-%H%M%S')}"})


def _plan(project: Path, options: dict[str, Any], hub: Any, out: EventFile,
          folder: Path) -> dict[str, Any]:
    from cnnkit.training import session

    planned = session.plan(_config(project, options), events=hub)
    return planned.to_dict()


def _train(project: Path, options: dict[str, Any], hub: Any, out: EventFile,
           folder: Path) -> dict[str, Any]:
    from cnnkit.artifacts.runlock import RunLock
    from cnnkit.studio.project import STATE
    from cnnkit.training import session

    with RunLock.acquire(project / STATE, "train.lock", what=f"Training in {project}"):
        result = session.train(_config(project, options), events=hub)
    run_dir = str(result.run_dir)
    out.write({"kind": "job", "what": "trained", "run": Path(run_dir).name,
               "test_accuracy": result.test_accuracy})
    try:  # the Understand tab's figures, behind the page's first predictions
        os.nice(5)
        _understand(project, {"run": Path(run_dir).name}, hub, out, folder)
    except Exception as exc:
        traceback.print_exc()
        out.write({"kind": "job", "what": "understand-failed",
                   "message": f"{type(exc).__name__}: {exc}"})
    return {"run": Path(run_dir).name, "test_accuracy": result.test_accuracy}


def _run_dir(project: Path, options: dict[str, Any]) -> Path:
    from cnnkit.studio.project import STATE

    return project / STATE / "runs" / str(options["run"])


def _understand(project: Path, options: dict[str, Any], hub: Any, out: EventFile,
                folder: Path) -> dict[str, Any]:
    from cnnkit.studio.understand import understand

    report = understand(_run_dir(project, options), project)
    out.write({"kind": "job", "what": "understood", "run": options["run"],
               "accuracy": report.get("accuracy")})
    return {"run": options["run"]}


def _export(project: Path, options: dict[str, Any], hub: Any, out: EventFile,
            folder: Path) -> dict[str, Any]:
    from cnnkit.export.onnx import export_model

    run_dir = _run_dir(project, options)
    int8 = bool(options.get("int8"))
    out.write({"kind": "job", "what": "exporting", "int8": int8})
    result = export_model(str(run_dir), out=run_dir / "model.onnx",
                          quantize="int8" if int8 else None)
    files = [p.name for p in (run_dir / "model.onnx", run_dir / "model.int8.onnx")
             if p.is_file()]
    out.write({"kind": "job", "what": "exported", "files": files,
               "max_prob_diff": result.max_prob_diff})
    return {"run": options["run"], "files": files}


def _check(project: Path, options: dict[str, Any], hub: Any, out: EventFile,
           folder: Path) -> dict[str, Any]:
    from cnnkit.base.atomic import write_json
    from cnnkit.curate.findings import add_findings
    from cnnkit.data.audit import audit
    from cnnkit.data.sources import describe

    out.write({"kind": "job", "what": "checking"})
    result = audit(describe(str(project)), img_size=224, progress=False)
    if result.trainable:  # near-copies, as cnnkit check --near finds them
        add_findings(result, str(project), labels=False, near=True, folder=folder / "near")
    write_json(folder / "check.json", result.to_dict())
    out.write({"kind": "job", "what": "checked", "verdict": result.verdict})
    return {"verdict": result.verdict}


JOBS = {"plan": _plan, "train": _train, "export": _export, "check": _check,
        "understand": _understand}


def _take_output(folder: Path) -> None:
    """Send this process's output to the job's worker.log (a spare logged elsewhere)."""
    fd = os.open(folder / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _import_ahead() -> None:
    """What a spare is for: the imports a run needs, done before the click."""
    import importlib

    for name in ("torch", "cnnkit.training.session", "cnnkit.training.features",
                 "cnnkit.tasks.metrics", "sklearn.metrics", "timm", "cnnkit.models",
                 "cnnkit.data.sources", "cnnkit.studio.understand"):
        importlib.import_module(name)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    if argv[:1] == ["--wait"]:
        _import_ahead()

        line = sys.stdin.readline().strip()
        if not line:
            return 0
        folder = Path(line)
        _take_output(folder)
    elif len(argv) == 1:
        folder = Path(argv[0])
    else:
        print("usage: python -m cnnkit.studio.worker JOB_FOLDER | --wait", file=sys.stderr)
        return 2
    return run(folder)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
