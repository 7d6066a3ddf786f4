"""The studio's worker process: ``python -m cnnkit.studio.worker JOB_FOLDER`` runs one
job (:mod:`cnnkit.studio.jobs`) and writes its events, one JSON line each, to the job's
``events.jsonl``; ``--wait`` imports torch and the trainer first, then reads the job's
folder from stdin (an empty line: exit), and after a plan job waits for the next
folder, warm. SIGTERM stops a run as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

STEP_EVERY_S = 0.25  # step events written at most this often (epochs, ends: always)
REUSED = ("plan",)  # jobs after which a waiting worker waits again (cnnkit.studio.jobs)
PLAN_FRESH_S = 900.0  # a run announces the Train tab's estimate if measured this recently

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

    planned = _planned(folder.parent, options)
    behind = _Behind(options.get("mode", "quick") == "quick")
    hub.subscribe(behind)
    hub.subscribe(_keep_warning)
    with RunLock.acquire(project / STATE, "train.lock", what=f"Training in {project}"):
        result = session.train(_config(project, options), events=hub, planned=planned)
    run_dir = str(result.run_dir)
    out.write({"kind": "job", "what": "trained", "run": Path(run_dir).name,
               "test_accuracy": result.test_accuracy})
    try:  # the Understand tab's figures, behind the page's first predictions
        behind.step_back()
        _understand(project, {"run": Path(run_dir).name}, hub, out, folder)
    except Exception as exc:
        traceback.print_exc()
        out.write({"kind": "job", "what": "understand-failed",
                   "message": f"{type(exc).__name__}: {exc}"})
    return {"run": Path(run_dir).name, "test_accuracy": result.test_accuracy}


def _keep_warning(event: Any) -> None:
    """Keep the warning a run ends with (its kept model at chance: the console's last
    line) in the run's folder, for the page to show beside the run's result."""
    if event.kind == "test" and event.at_chance:
        from cnnkit.base.atomic import write_json
        from cnnkit.studio.runs import WARNING

        (event.run_dir / WARNING).parent.mkdir(exist_ok=True)
        write_json(event.run_dir / WARNING, {"warning": event.at_chance})


class _Behind:
    """Lowers the worker's priority once the page has a model to answer with: the quick
    mode's model is final when it is saved (its "best" event), so its test and the
    Understand tab's figures wait behind the server's first predictions; any other run
    steps back after it ends."""

    def __init__(self, at_best: bool) -> None:
        self.at_best = at_best
        self.done = False

    def __call__(self, event: Any) -> None:
        if self.at_best and event.kind == "best":
            self.step_back()

    def step_back(self) -> None:
        if not self.done:
            self.done = True
            with contextlib.suppress(OSError):
                os.nice(5)


def _planned(jobs: Path, options: dict[str, Any]) -> Any:
    """The estimate the Train tab's plan job measured for these options within
    PLAN_FRESH_S (the run announces it again if it still describes the data), or None."""
    from dataclasses import fields

    from cnnkit.training.events import Planned

    now = time.time()
    for folder in sorted(jobs.iterdir(), reverse=True):  # newest first (named by time)
        try:
            spec = json.loads((folder / "spec.json").read_text())
            if spec.get("kind") != "plan" or spec.get("options") != options or \
                    now - float(spec.get("created", 0)) > PLAN_FRESH_S:
                continue
            if json.loads((folder / "status.json").read_text()).get("state") != "done":
                continue
            for line in (folder / "events.jsonl").read_text().splitlines():
                event = json.loads(line)
                if event.get("kind") == "plan":
                    return Planned(**{f.name: _tuples(event[f.name]) for f in fields(Planned)
                                      if f.name in event})
        except (OSError, ValueError, TypeError):
            continue
        return None
    return None


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


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
    from cnnkit.training.input_choice import train_side

    out.write({"kind": "job", "what": "checking"})
    source = describe(str(project))
    # images measured against the input the mode chosen on the page trains at
    size = train_side(_config(project, options), source)
    result = audit(source, img_size=size, progress=False)
    if result.trainable:  # near-copies, as cnnkit check --near finds them
        add_findings(result, str(project), labels=False, near=True, folder=folder / "near")
    write_json(folder / "check.json", result.to_dict())
    out.write({"kind": "job", "what": "checked", "verdict": result.verdict})
    return {"verdict": result.verdict}


JOBS = {"plan": _plan, "train": _train, "export": _export, "check": _check,
        "understand": _understand}


def _kind(folder: Path) -> str:
    try:
        return str(json.loads((folder / "spec.json").read_text()).get("kind"))
    except (OSError, ValueError):
        return ""


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
                 "cnnkit.training.codes_onnx", "onnxruntime", "cnnkit.tasks.metrics",
                 "sklearn.metrics", "timm", "cnnkit.models", "cnnkit.data.sources",
                 "cnnkit.studio.understand"):
        importlib.import_module(name)
    try:  # the pretrained Lite0's weights (read once per process), for the quick mode
        from cnnkit.models.weights import lite0_state

        lite0_state()
    except Exception:  # its package missing: the run says so itself
        traceback.print_exc()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    if argv[:1] == ["--wait"]:
        _import_ahead()
        while True:  # after a plan job, warm for the next job (the click on Train)
            line = sys.stdin.readline().strip()
            if not line:
                return 0
            folder = Path(line)
            _take_output(folder)
            code = run(folder)
            if _kind(folder) not in REUSED or code == 130:  # stopped (SIGTERM): exit
                return code
    elif len(argv) == 1:
        folder = Path(argv[0])
    else:
        print("usage: python -m cnnkit.studio.worker JOB_FOLDER | --wait", file=sys.stderr)
        return 2
    return run(folder)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
