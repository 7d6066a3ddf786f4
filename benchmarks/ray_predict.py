"""Batch prediction through Ray against ``cnnkit predict`` in one process, same cores.

    python benchmarks/ray_predict.py [--images 10000] [--rounds 1] [--model efficientnet_lite0]

Makes ``--images`` JPEGs (~500x375, as benchmarks/predict_speed.py e2e), starts a local
Ray cluster of one node with 2 CPUs (``ray start --head --num-cpus 2``: 2 predictor
workers, one onnxruntime thread each), then times, in alternating rounds,
``cnnkit predict MODEL FOLDER --output preds.csv`` (one process: its decoding workers
and a 2-thread session) and ``cnnkit predict MODEL FOLDER --output DIR --ray ADDRESS``
(the client's start and connection included; the cluster's start is not, as on a
running cluster). Prints images/s of each, the ratio Ray / one process (target: 0.8x
or more), and the peak memory of each: the summed resident memory of every process
involved (for Ray: the client, the node's daemons and the workers), sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from predict_speed import make_photos


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident bytes), read from /proc (Linux)."""
    out = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as fh:
                rss = int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        out[int(entry)] = (int(fields[1]), rss)
    return out


class PeakMemory:
    """The largest sum of resident memory over ``roots`` and their descendants."""

    def __init__(self, roots: list[int]) -> None:
        self.roots, self.peak, self._stop = roots, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            procs = _processes()
            tree, todo = set(), [p for p in self.roots if p in procs]
            while todo:
                pid = todo.pop()
                tree.add(pid)
                todo += [c for c, (parent, _) in procs.items() if parent == pid
                         and c not in tree]
            self.peak = max(self.peak, sum(procs[p][1] for p in tree))
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def timed(cmd: list[str], env: dict, extra_roots: list[int]) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    memory = PeakMemory([proc.pid, *extra_roots])
    _, err = proc.communicate()
    seconds = time.perf_counter() - started
    peak = memory.stop()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-2000:]}")
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--folder", help="Where to keep the photos (default: a temp folder).")
    args = parser.parse_args()
    root = Path(args.folder or tempfile.mkdtemp(prefix="cnnkit-ray-bench-"))
    photos = root / f"photos{args.images}"
    if not photos.is_dir():
        make_photos(photos, args.images)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    cnnkit = [sys.executable, "-m", "cnnkit", "predict", args.model, str(photos)]
    subprocess.run([*cnnkit[:5], str(photos / "00000.jpg")], env=env, check=True,
                   capture_output=True)  # the export, made once and cached
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head",
                             f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}", "--block"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        address = f"127.0.0.1:{port}"
        subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={address!r})"],
                       env=env, check=True, capture_output=True, timeout=300)
        load = os.getloadavg()[0]
        print(f"{args.images:,} JPEGs ~500x375, model {args.model}, 2 cores "
              f"({time.strftime('%Y-%m-%d')}; load {load:.1f} at the start)")
        print(f"{'round':>5s} {'how':<34s} {'seconds':>8s} {'images/s':>9s} {'peak MB':>8s}")
        rates: dict[str, list[float]] = {"one": [], "ray": []}
        for r in range(args.rounds):
            for how in (("one", "ray") if r % 2 == 0 else ("ray", "one")):
                out = root / f"out-{how}-{r}"
                if how == "one":
                    cmd, roots = [*cnnkit, "--output", f"{out}.csv"], []
                    label = "cnnkit predict (one process)"
                else:
                    cmd, roots = [*cnnkit, "--output", str(out), "--ray", address], [head.pid]
                    label = "cnnkit predict --ray (2 workers)"
                seconds, peak = timed(cmd, env, roots)
                rate = args.images / seconds
                rates[how].append(rate)
                print(f"{r + 1:5d} {label:<34s} {seconds:8.1f} {rate:9.1f} "
                      f"{peak / 2**20:8.0f}")
        one = sorted(rates["one"])[len(rates["one"]) // 2]
        ray = sorted(rates["ray"])[len(rates["ray"]) // 2]
        print(f"median images/s: one process {one:.1f}, Ray {ray:.1f}; "
              f"Ray / one process = {ray / one:.2f}x (target 0.8x)")
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
                head.wait(wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


if __name__ == "__main__":
    os.environ.setdefault("CNNKIT_CACHE", str(Path(tempfile.gettempdir()) / "cnnkit-bench"))
    main()
