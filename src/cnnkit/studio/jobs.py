"""The studio's jobs: training, planning, exporting and analysing, each in a worker
process of its own (:mod:`cnnkit.studio.worker`), never in the web server's.

A job is a folder ``PROJECT/.cnnkit/jobs/<id>/`` holding ``spec.json`` (what to do),
``events.jsonl`` (what the worker says, one JSON object a line: the training events of
:mod:`cnnkit.training.events` and the job's own ``job`` lines), ``status.json`` (the
worker's last word) and ``worker.log``. The page reads the events from the file, so a
reloaded page, or a second tab, sees the whole story. ``stop`` (an empty file) asks the
worker to stop; it answers ``stopping`` and ends its run as early stopping does (the
epoch validated, the best model tested and reported); one that has not heard within
:data:`STOP_GRACE_S` (busy before its first step) gets SIGTERM.

One worker waits, already started, with torch and the trainer imported (a *spare*), so
that a click on "Train" does not pay for Python's and torch's start; the worker of the
Train tab's plan job waits again when it is done and becomes the spare, so the click
that follows the estimate finds a warm worker at once. Only one training
job runs in a project at a time: the worker takes the project's ``train.lock`` too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.base.errors import CnnkitError
from cnnkit.studio.project import Conflict, NotFound, Project
from cnnkit.studio.runs import read_json

KINDS = ("plan", "train", "export", "check", "understand")
EXCLUSIVE = ("train",)  # kinds of which one runs at a time in a project
REUSED = ("plan",)  # kinds whose worker waits for the next job when done (warm)
FINISHED = ("done", "failed", "stopped")
STOP_GRACE_S = 8.0
EVENTS = "events.jsonl"
STATUS = "status.json"
SPEC = "spec.json"
_ID_CHARS = frozenset("0123456789abcdef-")


@dataclass
class Job:
    id: str
    kind: str
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def status(self) -> dict[str, Any]:
        """The worker's last status, with ``state`` ``lost`` for a worker that died
        without saying so (killed, out of memory)."""
        try:
            status = json.loads((self.folder / STATUS).read_text())
        except (OSError, ValueError):
            status = {"state": "starting"}
        if status.get("state") in ("starting", "running") and not self.alive():
            again = read_json(self.folder / STATUS)  # it may have finished just now
            if again.get("state") in ("starting", "running"):
                return {**again, "state": "lost",
                        "message": "The worker process ended without finishing (killed, or "
                                   "out of memory?); see worker.log in the job's folder."}
            return again
        return status

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        pid = read_json(self.folder / STATUS).get("pid")
        return isinstance(pid, int) and _pid_alive(pid)

    def running(self) -> bool:
        return self.status().get("state") in ("starting", "running")

    def events(self, start: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Events from byte offset ``start``: whole lines only; returns the next offset."""
        try:
            with open(self.folder / EVENTS, "rb") as fh:
                fh.seek(start)
                data = fh.read()
        except OSError:
            return [], start
        end = data.rfind(b"\n") + 1
        out = []
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out, start + end

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "spec": read_json(self.folder / SPEC),
                **{"status": self.status()}}


class Jobs:
    """The jobs of one project, started by one studio server."""

    def __init__(self, project: Project, *, spare: bool = True) -> None:
        self.project = project
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._spare: subprocess.Popen[bytes] | None = None
        self._use_spare = spare
        self._closed = False
        self.project.jobs_dir.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.project.jobs_dir.iterdir()):
            if folder.is_dir() and set(folder.name) <= _ID_CHARS and (folder / SPEC).is_file():
                kind = read_json(folder / SPEC).get("kind", "")
                self._jobs[folder.name] = Job(folder.name, str(kind), folder)

    # -- starting ---------------------------------------------------------------------

    def start(self, kind: str, options: dict[str, Any] | None = None) -> Job:
        if kind not in KINDS:
            raise CnnkitError(f"No job kind {kind!r}; one of: {', '.join(KINDS)}.")
        with self._lock:
            if kind in EXCLUSIVE:
                busy = self.active(kind)
                if busy is not None:
                    raise Conflict(f"A {kind} job is running in this project ({busy.id}); "
                                   "wait for it or stop it first.")
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            folder = self.project.jobs_dir / job_id
            folder.mkdir(parents=True)
            write_json(folder / SPEC, {"kind": kind, "options": options or {},
                                       "project": str(self.project.root),
                                       "created": time.time()})
            write_json(folder / STATUS, {"state": "starting"})
            (folder / EVENTS).touch()
            job = Job(job_id, kind, folder)
            job.process = self._launch(folder, kind)
            self._jobs[job_id] = job
        return job

    def _launch(self, folder: Path, kind: str) -> subprocess.Popen[bytes]:
        spare, self._spare = self._spare, None
        if (spare is None or spare.poll() is not None) and self._use_spare:
            spare = self._free_worker()  # a plan that ended since the last look
        if spare is not None and spare.poll() is None and spare.stdin is not None:
            try:
                spare.stdin.write(str(folder).encode() + b"\n")
                spare.stdin.flush()
                if kind not in REUSED:
                    spare.stdin.close()
                return spare
            except OSError:
                spare.kill()
        process = _spawn(folder)
        return process

    def prepare_spare(self) -> None:
        """Keep a waiting worker: the worker of a finished plan job (warm: it waits for
        the next job), else a new one unless a job is running (it would take the cores
        from it while it imports torch)."""
        if not self._use_spare or self._closed:
            return
        with self._lock:
            if self._spare is not None and self._spare.poll() is None:
                return
            self._spare = self._free_worker()
            if self._spare is not None:
                return
            if any(job.alive() for job in self._jobs.values()):
                return
            self._spare = _spawn(None, self.project.jobs_dir)

    def _free_worker(self) -> subprocess.Popen[bytes] | None:
        """The newest worker that finished a plan job and waits for another (any older
        such worker is told to exit)."""
        found = None
        for job in reversed(list(self._jobs.values())):
            process = job.process
            if job.kind not in REUSED or process is None or process.stdin is None or \
                    process.stdin.closed or process.poll() is not None or \
                    job.status().get("state") not in FINISHED:
                continue
            job.process = None  # its job is over: the process is the spare's now
            if found is None:
                found = process
            else:
                with contextlib.suppress(OSError):
                    process.stdin.close()
        return found

    # -- reading and stopping ---------------------------------------------------------

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise NotFound(f"No job {log.cut(repr(job_id))} in this project.")
        return job

    def active(self, kind: str | None = None) -> Job | None:
        for job in reversed(list(self._jobs.values())):
            if (kind is None or job.kind == kind) and job.running():
                return job
        return None

    def latest(self, kind: str) -> Job | None:
        for job in reversed(list(self._jobs.values())):
            if job.kind == kind:
                return job
        return None

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    def stop(self, job_id: str) -> Job:
        """Ask the job to stop (a training run keeps its best model, as early stopping
        does); a worker that has not stopped after :data:`STOP_GRACE_S` gets SIGTERM."""
        job = self.get(job_id)
        if not job.running():
            return job
        (job.folder / "stop").touch()

        def terminate() -> None:
            deadline = time.monotonic() + STOP_GRACE_S
            while time.monotonic() < deadline:
                if not job.alive() or (job.folder / "stopping").exists():
                    return  # ended, or heard it and is finishing its run folder
                time.sleep(0.2)
            pid = read_json(job.folder / STATUS).get("pid")
            if isinstance(pid, int) and job.alive():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)

        threading.Thread(target=terminate, daemon=True, name="cnnkit-stop").start()
        return job

    def close(self, wait_s: float = 10.0) -> None:
        """Stop the spare worker, and the jobs still running as Ctrl-C stops a command
        (SIGTERM: a run keeps its last finished epoch and can be resumed)."""
        self._closed = True
        for job in self._jobs.values():  # a plan job's worker exits when done, not waits
            if job.process is not None and job.process.stdin is not None:
                with contextlib.suppress(OSError):
                    job.process.stdin.close()
        # (a finished plan job's worker may be the spare now: it is closed below)
        running = [job for job in self._jobs.values() if job.alive() and job.running()]
        for job in running:
            pid = read_json(job.folder / STATUS).get("pid")
            if isinstance(pid, int):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while any(job.alive() for job in running) and time.monotonic() < deadline:
            time.sleep(0.1)
        spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            with contextlib.suppress(OSError):
                if spare.stdin is not None:
                    spare.stdin.close()  # it exits on an empty line
            try:
                spare.wait(5)
            except subprocess.TimeoutExpired:
                spare.kill()


def _spawn(folder: Path | None, log_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """A worker for ``folder``, or (None) a spare that waits for a folder on stdin."""
    command = [sys.executable, "-m", "cnnkit.studio.worker"]
    where = folder if folder is not None else log_dir
    assert where is not None
    out: IO[bytes] = open(where / ("worker.log" if folder else ".spare.log"), "ab")  # noqa: SIM115
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.Popen(
            [*command, str(folder)] if folder is not None else [*command, "--wait"],
            stdin=subprocess.PIPE if folder is None else subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        out.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours is not alive, nor another program that got the number since
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split(")")[-1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"cnnkit.studio.worker" in fh.read()
    except OSError:
        return True  # no /proc (macOS): the number is all there is
