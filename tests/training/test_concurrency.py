"""Two processes on one run: the second --resume is refused; SIGTERM stops like Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnnkit
from cnnkit.artifacts.runlock import RunLock
from cnnkit.base.errors import CnnkitError

OPTIONS = ["--model", "conv4k3-pool2-dense8", "--batch-size", "16", "--no-plots",
           "--device", "cpu", "--no-check"]


def test_a_second_resume_of_a_run_in_use_is_refused(tmp_path: Path) -> None:
    def stop(trainer, row) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cnnkit.train("shapes:size=12,count=30", model="conv4k3-pool2-dense8", epochs=2,
                     plots=False, device="cpu", out=str(tmp_path), name="r", callbacks=[stop])
    run = tmp_path / "r"
    before = (run / "checkpoints" / "last.safetensors").read_bytes()
    in_use = f"is in use by another cnnkit process \\(process {os.getpid()}"
    with RunLock.acquire(run), pytest.raises(CnnkitError, match=in_use):
        cnnkit.resume(run)  # as a second `cnnkit train --resume` would
    assert (run / "checkpoints" / "last.safetensors").read_bytes() == before
    assert cnnkit.resume(run).history[-1]["epoch"] == 2  # free again once released


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "long"
    child = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "train", "shapes:size=12,count=60", "--epochs", "500",
         *OPTIONS, "--out", str(tmp_path / "runs"), "--name", "long"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CNNKIT_CACHE": str(tmp_path / "cache")})
    checkpoint = run / "checkpoints" / "last.safetensors"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.1)
    assert checkpoint.exists(), child.stderr.read() if child.poll() is not None else ""
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert "Traceback" not in err
    assert re.search(rf"epoch \d+ \(the last finished\) is saved; continue with: cnnkit "
                     rf"train --resume {re.escape(str(run))}", " ".join(err.split())), err
    assert not (run / ".lock").exists()
    RunLock.acquire(run).release()  # nobody holds it any more
