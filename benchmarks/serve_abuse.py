"""Load test for `cnnkit serve` under hostile clients, against uvicorn's defaults.

Starts a server under the common open-file limit (1,024), watches it from a process of
its own (a GET /health every 100 ms and an ordinary single-image POST in a loop, each on
a new connection, as independent users and a liveness probe make them), and abuses it
from another, in three phases:

1. quiet: nothing else;
2. abuse: 1,100 slow clients sending one header byte a second (reconnecting when
   closed), one request with 200 MB of headers then 1 MB ones every second, and three
   clients posting a 277-byte 1x100000 PNG (a bomb by aspect ratio) in a loop;
3. abuse and a flood: the same, plus bursts of 500 concurrent predictions.

Each phase prints whether /health answered, the ordinary request's p50 and p99, and what
the abusers got; then the server's peak memory and whether it is still up. The abusers
(not the 500 concurrent requests, which stand for users) run at the lowest CPU priority:
remote attackers bring their own CPUs. The same
app runs twice: behind `cnnkit serve` (h11, cnnkit's protocol, limits and Host check),
and under `uvicorn.run(app)` with uvicorn's defaults (httptools, no header limit or
deadline, no connection cap), as a user serving the FastAPI app by hand would.

    python benchmarks/serve_abuse.py efficientnet_lite0
    python benchmarks/serve_abuse.py runs/fmnist-fast-cnn --phase-seconds 10 --only cnnkit
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import io
import json
import logging
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

OPEN_FILES = 1024  # the common soft and hard limit of a service's open files
SLOW_CLIENTS = 1100
BURST = 500
HEADERS_MB = 200

DEFAULTS_RUNNER = """
import sys, uvicorn
from cnnkit.serve import ServeConfig, create_app, load_models
config = ServeConfig(port=int(sys.argv[2]), allowed_hosts=("*",))
models = load_models([sys.argv[1]], threads=config.model_threads)
uvicorn.run(create_app(models, config), host="127.0.0.1", port=config.port,
            log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def start(mode: str, model: str, port: int, log: Path) -> subprocess.Popen:
    cmd = ([sys.executable, "-m", "cnnkit", "serve", model, "--port", str(port)]
           if mode == "cnnkit" else [sys.executable, "-c", DEFAULTS_RUNNER, model, str(port)])
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            preexec_fn=_limit_open_files)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the {mode} server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"the {mode} server was not ready:\n{log.read_text()}")


def photo(side: int) -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).resize((side, side), Image.BICUBIC).save(
        buf, "JPEG", quality=90)
    return buf.getvalue()


def long_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (1, 100_000)).save(buf, "PNG")
    return buf.getvalue()


# The watcher: what a user and a liveness probe see.

def watch(url: str, image: bytes, seconds: float, out: str) -> None:
    """GET /health every 100 ms and POST ``image`` in a loop, each on a new connection,
    for ``seconds``; writes ``[kind, start, ok, seconds, status]`` rows to ``out``."""
    rows: list[list] = []

    async def probe(client: httpx.AsyncClient, kind: str, end: float) -> None:
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                if kind == "health":
                    r = await client.get("/health")
                else:
                    r = await client.post("/predict", content=image,
                                          headers={"Content-Type": "image/jpeg"})
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            rows.append([kind, t0, status == 200, time.monotonic() - t0, status])
            if kind == "health":
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))

    async def run() -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
            end = time.monotonic() + seconds
            await asyncio.gather(probe(client, "health", end), probe(client, "predict", end))

    asyncio.run(run())
    Path(out).write_text(json.dumps(rows))


# The abusers.

class Abuse:
    def __init__(self, port: int, image: bytes) -> None:
        self.port, self.image, self.bomb = port, image, long_png()
        self.stop = asyncio.Event()
        self.codes: dict[str, list[int]] = {"slow": [], "headers": [], "bomb": []}
        self.slow_open = 0
        self.first_headers: tuple[int, float, int] | None = None
        self.failures: collections.Counter[str] = collections.Counter()

    def failed(self, what: str, exc: BaseException) -> int:
        self.failures[f"{what}: {type(exc).__name__} {getattr(exc, 'errno', '') or ''}"
                      .strip()] += 1
        return 0

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> int:
        """The status of the server's answer (0: closed without one)."""
        try:
            line = await reader.readline()
            return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
        except (OSError, ValueError, IndexError):
            return 0

    async def slow_client(self) -> None:
        request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n\r\n"
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(1)
                continue
            answer = asyncio.create_task(self._answer(reader))
            self.slow_open += 1
            try:
                for i in range(len(request) - 2):  # never the final blank line
                    writer.write(request[i:i + 1])
                    await writer.drain()
                    await asyncio.wait([answer], timeout=1.0)
                    if answer.done() or self.stop.is_set():
                        break
            except OSError:
                await asyncio.wait([answer], timeout=0.5)
            finally:
                self.slow_open -= 1
                if answer.done():
                    self.codes["slow"].append(answer.result())
                else:
                    answer.cancel()
                writer.close()
            await asyncio.sleep(0.1)

    async def big_headers(self, megabytes: int) -> tuple[int, float]:
        """One GET /health with ``megabytes`` of headers, streamed; (status, seconds)."""
        t0 = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError as exc:
            return self.failed("headers: connect", exc), time.monotonic() - t0
        answer = asyncio.create_task(self._answer(reader))
        pad = b"a" * 1000
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for i in range(megabytes * 1024):
                writer.write(b"X-Pad-%07d: %s\r\n" % (i, pad))
                if i % 64 == 0:
                    await writer.drain()
                    await asyncio.sleep(0)  # the answer's reader gets its turn
                    if answer.done():
                        break
            writer.write(b"\r\n")
            await writer.drain()
        except OSError as exc:
            self.failed("headers: send", exc)
        await asyncio.wait([answer], timeout=30)
        status = answer.result() if answer.done() else 0
        answer.cancel()
        writer.close()
        return status, time.monotonic() - t0

    async def first_big_headers(self) -> None:
        status, seconds = await self.big_headers(HEADERS_MB)
        self.first_headers = (status, seconds, HEADERS_MB)

    async def headers_loop(self) -> None:
        while not self.stop.is_set():
            self.codes["headers"].append((await self.big_headers(1))[0])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)

    async def bombs(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            try:
                r = await client.post("/predict", content=self.bomb,
                                      headers={"Content-Type": "image/png"})
                self.codes["bomb"].append(r.status_code)
            except httpx.HTTPError as exc:
                self.codes["bomb"].append(self.failed("bomb", exc))

    async def run(self, phase_s: float) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}",
                                     timeout=60) as client:
            first = asyncio.create_task(self.first_big_headers())
            await asyncio.wait([first], timeout=5)  # answered before the slow clients come
            tasks = [first, asyncio.create_task(self.headers_loop())]
            tasks += [asyncio.create_task(self.slow_client()) for _ in range(SLOW_CLIENTS)]
            tasks += [asyncio.create_task(self.bombs(client)) for _ in range(3)]
            await asyncio.sleep(phase_s)
            self.snapshot = {k: list(v) for k, v in self.codes.items()}
            await asyncio.sleep(phase_s)
            self.stop.set()
            await asyncio.wait(tasks, timeout=90)


def abuse(port: int, image: bytes, phase_s: float, out: str) -> None:
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # writes to closed sockets
    os.nice(19)  # the abusers' CPU is not the server's: remote attackers bring their own
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    job = Abuse(port, image)
    asyncio.run(job.run(phase_s))
    later = {k: v[len(job.snapshot[k]):] for k, v in job.codes.items()}
    Path(out).write_text(json.dumps({"abuse": job.snapshot, "flood": later,
                                     "first_headers": job.first_headers,
                                     "failures": dict(job.failures.most_common(8))}))


def flood(port: int, image: bytes, seconds: float, out: str) -> None:
    """Bursts of 500 concurrent predictions for ``seconds``, each request on a new
    connection (500 users at once); writes the statuses (0: failed) and failures."""
    codes: list[int] = []
    failures: collections.Counter[str] = collections.Counter()

    async def burst() -> None:
        limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                     timeout=60) as client:
            async def one() -> int:
                try:
                    r = await client.post("/predict", content=image,
                                          headers={"Content-Type": "image/jpeg"})
                    return r.status_code
                except httpx.HTTPError as exc:
                    failures[f"burst: {type(exc).__name__}"] += 1
                    return 0

            codes.extend(await asyncio.gather(*(one() for _ in range(BURST))))

    async def run() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await burst()
            await asyncio.sleep(1.0)

    asyncio.run(run())
    Path(out).write_text(json.dumps({"codes": codes, "failures": dict(failures)}))


# Measuring the server.

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def run_mode(mode: str, model: str, phase_s: float, image: bytes) -> dict:
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix=f"cnnkit-abuse-{mode}-"))
    proc = start(mode, model, port, folder / "serve.log")
    url = f"http://127.0.0.1:{port}"
    for _ in range(5):  # warm
        httpx.post(url + "/predict", content=image, headers={"Content-Type": "image/jpeg"},
                   timeout=60)
    samples: list[tuple[float, float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                samples.append((time.monotonic(), rss_mb(proc.pid), open_files(proc.pid)))
            done.wait(0.1)

    ctx = multiprocessing.get_context("spawn")
    watcher = ctx.Process(target=watch, args=(url, image, 3 * phase_s + 5,
                                              str(folder / "watch.json")))
    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    watcher.start()
    sampler.start()
    time.sleep(phase_s)
    abuser = ctx.Process(target=abuse, args=(port, image, phase_s, str(folder / "abuse.json")))
    flooder = ctx.Process(target=flood, args=(port, image, phase_s, str(folder / "flood.json")))
    t_abuse = time.monotonic()
    abuser.start()
    time.sleep(phase_s)
    flooder.start()
    flooder.join()
    abuser.join()
    t_end = time.monotonic()
    watcher.join()
    done.set()
    alive = proc.poll() is None
    try:
        after = httpx.get(url + "/health", timeout=10).status_code
    except httpx.HTTPError:
        after = 0
    proc.terminate()
    proc.wait(timeout=60)
    rows = json.loads((folder / "watch.json").read_text())
    phases = {"quiet": (t0, t_abuse), "abuse": (t_abuse, t_abuse + phase_s),
              "abuse + 500-request bursts": (t_abuse + phase_s, t_end)}
    log = (folder / "serve.log").read_text(errors="replace")
    return {"mode": mode, "rows": rows, "phases": phases, "samples": samples,
            "abuse": json.loads((folder / "abuse.json").read_text()),
            "flood": json.loads((folder / "flood.json").read_text()), "alive": alive,
            "after": after, "emfile": "Too many open files" in log, "t0": t0,
            "t_abuse": t_abuse, "folder": folder}


def _counts(codes: list[int]) -> str:
    if not codes:
        return "none"
    values, counts = np.unique(codes, return_counts=True)
    return ", ".join(f"{'failed' if v == 0 else v} x{c}" for v, c in zip(values, counts))


def report(result: dict) -> None:
    print(f"\n== {result['mode']}: "
          + ("cnnkit serve (h11, header limit and deadline, connection cap, Host check)"
             if result["mode"] == "cnnkit" else "uvicorn.run(app) with uvicorn's defaults "
             "(httptools)"))
    print("phase | /health answered | /health p50 ms | /health p99 ms | predictions ok/sent | "
          "predict p50 ms | predict p99 ms")
    for name, (start, end) in result["phases"].items():
        rows = [r for r in result["rows"] if start <= r[1] < end]
        health = [r for r in rows if r[0] == "health"]
        pred = [r for r in rows if r[0] == "predict"]
        ok = [r[3] * 1000 for r in pred if r[2]]
        h_lat = [r[3] * 1000 for r in health]
        print(f"{name} | {sum(r[2] for r in health)}/{len(health)} | "
              f"{np.percentile(h_lat, 50) if h_lat else float('nan'):.0f} | "
              f"{np.percentile(h_lat, 99) if h_lat else float('nan'):.0f} | "
              f"{len(ok)}/{len(pred)} | "
              f"{np.percentile(ok, 50) if ok else float('nan'):.0f} | "
              f"{np.percentile(ok, 99) if ok else float('nan'):.0f}")
    ab = result["abuse"]
    first = ab["first_headers"]
    base = np.median([s[1] for s in result["samples"] if s[0] < result["t_abuse"]])
    peak = max(s[1] for s in result["samples"])
    files = max(s[2] for s in result["samples"])
    if first:
        print(f"{first[2]} MB of headers: status {first[0] or 'none (connection failed)'} "
              f"after {first[1]:.1f} s")
    for phase in ("abuse", "flood"):
        codes = ab[phase]
        print(f"[{phase}] 1 MB headers: {_counts(codes['headers'])}; 1x100000 PNG: "
              f"{_counts(codes['bomb'])}; slow clients told: {_counts(codes['slow'])}"
              + (f"; 500-request bursts: {_counts(result['flood']['codes'])}"
                 if phase == "flood" else ""))
    failures = {**ab["failures"], **result["flood"]["failures"]}
    if failures:
        print("failed without an answer: " + "; ".join(f"{k} x{v}"
                                                       for k, v in failures.items()))
    print(f"server memory: {base:.0f} MB before, peak {peak:.0f} MB (+{peak - base:.0f}); "
          f"open files at most {files} (limit {OPEN_FILES}); 'Too many open files' in its "
          f"log: {'yes' if result['emfile'] else 'no'}; up after the abuse: "
          f"{'yes' if result['alive'] else 'no'}, GET /health then: {result['after'] or 'failed'}")
    print(f"(each request's timing: {result['folder'] / 'watch.json'}; the server's log beside)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="run folder or pretrained model name")
    ap.add_argument("--phase-seconds", type=float, default=20.0)
    ap.add_argument("--only", choices=("cnnkit", "uvicorn-defaults"))
    args = ap.parse_args()
    from cnnkit.runtime.predict import load_predictor

    side = round(load_predictor(args.model, "cpu").card.preprocess.img_size * 1.25)
    image = photo(side)
    print(f"model {args.model}, photo {side} px JPEG ({len(image):,} bytes); "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; phases of "
          f"{args.phase_seconds:g} s; servers under an open-file limit of {OPEN_FILES}")
    modes = [args.only] if args.only else ["cnnkit", "uvicorn-defaults"]
    for mode in modes:
        report(run_mode(mode, args.model, args.phase_seconds, image))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
