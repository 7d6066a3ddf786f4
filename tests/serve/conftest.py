"""Real ``cnnkit serve`` processes on free loopback ports, and real images to send them."""

from __future__ import annotations

import io
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

API_KEY = "test-key-7f3a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running ``cnnkit serve`` process: its URL, pid and log."""

    proc: subprocess.Popen
    url: str
    log: Path
    api_key: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_server(args: list[str], log: Path, api_key: str | None = None,
                 timeout: float = 120) -> Server:
    """Start ``cnnkit serve ARGS`` on a free port and wait until /ready says so."""
    port = free_port()
    env = dict(os.environ)
    if api_key:
        env["CNNKIT_API_KEY"] = api_key
    out = open(log, "wb")  # noqa: SIM115 (the process writes to it until it ends)
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", *args, "--port",
                             str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(proc, f"http://127.0.0.1:{port}", log, api_key)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"cnnkit serve exited with {proc.returncode}:\n"
                                 f"{log.read_text()}")
        try:
            if httpx.get(server.url + "/ready", headers=headers, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"cnnkit serve was not ready in {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def served(trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the API and page tests: an API key, a short queue, a 1 MiB limit,
    PNG and JPEG only, and a batching wait long enough for a burst to fill the queue."""
    run, _ = trained
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = start_server([f"shapes={run}", "--max-queue", "6", "--max-wait-ms", "150",
                           "--max-request-mb", "1", "--max-files", "6", "--top-k", "3",
                           "--formats", "png,jpg"],
                          log, api_key=API_KEY)
    yield server
    assert server.stop() == 0, log.read_text()


def wait_ready(client, timeout: float = 60.0) -> None:
    """Wait until an in-process app's warm-up pass is done: ``/predict`` answers 503 before."""
    deadline = time.monotonic() + timeout
    while client.get("/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError(f"the app was not ready in {timeout} s: "
                                 f"{client.get('/ready').json()}")
        time.sleep(0.05)


def encode(image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()
