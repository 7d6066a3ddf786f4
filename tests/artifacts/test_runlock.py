"""The run-folder lock: one writer at a time, a dead owner's lock taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnkit.artifacts.runlock import LOCK_NAME, RunLock
from cnnkit.base.errors import CnnkitError

HOLD = """
import sys, time
from cnnkit.artifacts.runlock import RunLock
lock = RunLock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    child = _holder(tmp_path)
    try:
        with pytest.raises(CnnkitError, match=f"in use by another cnnkit process \\(process "
                                              f"{child.pid} on "):
            RunLock.acquire(tmp_path)
    finally:
        child.kill()
        child.wait()


def test_the_lock_of_a_killed_process_is_stale_and_taken_over(tmp_path: Path) -> None:
    child = _holder(tmp_path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(child.pid)  # left behind
    with RunLock.acquire(tmp_path) as lock:
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        assert lock.path.exists()
    assert not (tmp_path / LOCK_NAME).exists()  # released and removed
    RunLock.acquire(tmp_path).release()  # and free again


def test_released_lock_is_free_at_once(tmp_path: Path) -> None:
    start = time.perf_counter()
    for _ in range(50):
        RunLock.acquire(tmp_path).release()
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("kind", ["link", "folder", "fifo"])
def test_a_lock_path_that_is_not_a_file_is_refused_and_nothing_is_written(
        tmp_path: Path, kind: str) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    if kind == "link":  # a run folder handed over: its lock must not write elsewhere
        lock.symlink_to(precious)
    elif kind == "folder":
        lock.mkdir()
    else:
        os.mkfifo(lock)
    with pytest.raises(CnnkitError, match=r"\.lock is not cnnkit's lock file"):
        RunLock.acquire(run)
    assert precious.read_text() == "keep me"
