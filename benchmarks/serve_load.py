"""Load test for `cnnkit serve`: a bounded burst of requests over loopback, then the
offline predictor on the same images, so the two speeds are measured on one machine.

Starts `cnnkit serve MODEL` on a free port, sends `--requests` single-image requests
(raw JPEG bytes) from `--concurrency` async httpx clients, and stops by itself. Prints
errors, requests/s and the p50/p99 latency, then the offline predictor's images/s
(`Classifier.predict` on the same bytes, batch 32, decoding included) and the ratio.
Images are random crops of scikit-image's photos, a little larger than the model's input
so that the server resizes them as it would a camera's.

    python benchmarks/serve_load.py efficientnet_lite0
    python benchmarks/serve_load.py runs/fmnist-fast-cnn --requests 2000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def photos(count: int, side: int, seed: int = 0) -> list[bytes]:
    """``count`` JPEGs of ``side`` x ``side`` px cut from scikit-image's sample photos."""
    from skimage import data

    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(),
               data.cat(), data.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        img = Image.fromarray(sources[i % len(sources)])
        crop = int(rng.integers(min(img.size) // 2, min(img.size) + 1))
        x = int(rng.integers(0, img.size[0] - crop + 1))
        y = int(rng.integers(0, img.size[1] - crop + 1))
        tile = img.crop((x, y, x + crop, y + crop)).resize((side, side), Image.BICUBIC)
        buf = io.BytesIO()
        tile.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, port: int, extra: list[str], log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", model, "--port",
                             str(port), *extra], stdout=open(log, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cnnkit serve exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"cnnkit serve was not ready:\n{log.read_text()}")


async def load(url: str, images: list[bytes], requests: int, concurrency: int, *,
               health: bool = False) -> tuple[float, list[float], list[str]]:
    """Send ``requests`` POSTs from ``concurrency`` clients; (seconds, latencies, errors).

    ``health``: GET /health instead, the HTTP stack's own ceiling on this machine.
    """
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            t0 = time.perf_counter()
            try:
                if health:
                    r = await client.get("/health")
                else:
                    r = await client.post("/predict", content=images[i % len(images)],
                                          headers={"Content-Type": "image/jpeg"})
                if r.status_code != 200 or not (health or r.json()["predictions"]):
                    errors.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        start_t = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return time.perf_counter() - start_t, latencies, errors


def offline(model: str, images: list[bytes], batch_size: int, count: int, threads: int
            ) -> float:
    import torch

    from cnnkit.base import log
    from cnnkit.runtime.predict import load_predictor

    log.set_quiet(True)
    torch.set_num_threads(threads)
    clf = load_predictor(model, "cpu")
    clf.predict(images[:batch_size], batch_size=batch_size)  # warm-up
    batch = [images[i % len(images)] for i in range(count)]
    t0 = time.perf_counter()
    clf.predict(batch, batch_size=batch_size)
    return count / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="run folder or pretrained model name")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1) - 1),
                    help="the model's CPU threads, in the server and offline alike "
                         "(default: the server's, one less than the CPUs)")
    ap.add_argument("--offline-images", type=int, default=0,
                    help="images for the offline figure (default: min(requests, 512))")
    ap.add_argument("--photo-scale", type=float, default=1.25,
                    help="photo side as a multiple of the model's input side")
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="cnnkit-serve-load-")) / "serve.log"
    proc = start(args.model, port, ["--max-batch-size", str(args.max_batch_size),
                                    "--max-wait-ms", str(args.max_wait_ms),
                                    "--max-queue", str(max(256, 4 * args.concurrency)),
                                    "--threads", str(args.threads)], log)
    try:
        info = httpx.get(f"{url}/v1/models").json()["models"][0]
        side = round(info["input"]["img_size"] * args.photo_scale)
        images = photos(64, side)
        asyncio.run(load(url, images, 2 * args.concurrency, args.concurrency))  # warm-up
        floor_s, _, _ = asyncio.run(load(url, images, args.requests, args.concurrency,
                                         health=True))
        before = httpx.get(f"{url}/v1/models/{info['name']}").json()["stats"]
        seconds, lat, errors = asyncio.run(load(url, images, args.requests, args.concurrency))
        after = httpx.get(f"{url}/v1/models/{info['name']}").json()["stats"]
    finally:
        proc.terminate()
        code = proc.wait(timeout=60)
    rps = args.requests / seconds
    p50, p99 = (float(np.percentile(lat, q)) * 1000 for q in (50, 99))
    n_off = args.offline_images or min(args.requests, 512)
    ips = offline(args.model, images, args.max_batch_size, n_off, args.threads)
    print(f"model {info['name']} ({info['architecture']['name']}) at {info['input']['img_size']}"
          f" px; photos {side} px JPEG; {os.cpu_count()} CPUs; server exit code {code}")
    print(f"requests {args.requests}, concurrency {args.concurrency}, max batch "
          f"{args.max_batch_size}, max wait {args.max_wait_ms} ms, model threads "
          f"{args.threads}, load average {os.getloadavg()[0]:.1f}")
    print(f"GET /health: {args.requests / floor_s:.1f} req/s (the HTTP stack's ceiling here)")
    print(f"errors {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"served: {rps:.1f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    batches = after["batches"] - before["batches"]
    busy = after["model_seconds"] - before["model_seconds"]
    mean = (after["images"] - before["images"]) / max(1, batches)
    print(f"server batches: {batches}, mean size {mean:.1f}; model busy {busy / seconds:.0%} "
          "of the time")
    print(f"offline predictor: {ips:.1f} img/s (batch {args.max_batch_size}, {n_off} images)")
    print(f"served / offline: {rps / ips:.2f}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
