"""A real ``cnnkit studio`` process on a free loopback port, over a new project folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Studio:
    proc: subprocess.Popen
    url: str
    project: Path
    log: Path

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60,
                            headers={"X-Studio": "1", **headers})

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_studio(project: Path, log: Path, *args: str, wait_s: float = 120) -> Studio:
    port = free_port()
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CNNKIT_API_KEY", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "studio", str(project),
                                 "--port", str(port), "--no-open", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    studio = Studio(proc, f"http://127.0.0.1:{port}", project, log)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the studio exited {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(studio.url + "/health", timeout=2).status_code == 200:
                return studio
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    studio.stop()
    raise AssertionError(f"the studio did not answer in {wait_s} s: {log.read_text()}")


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[Studio]:
    running = start_studio(tmp_path / "project", tmp_path / "studio.log")
    yield running
    running.stop()
