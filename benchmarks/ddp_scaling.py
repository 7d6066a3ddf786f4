"""Images/s of one training process against N data-parallel processes (torchrun).

Runs the same ``cnnkit train`` (same data, model, global batch and epochs) once in
1 process and once per entry of ``--devices`` through ``--devices N``, and reads the
training images/s that each run's metrics.csv records (the global figure, summed over
the processes, without start-up, validation or testing). The first epoch is left out
(warm-up); the median of the others is reported.

On the CPU the comparison is fair when every run uses the same cores: one process
gets all of them as torch threads, N processes get cores/N threads each (what
``cnnkit train --devices N`` gives them); one process on one thread is shown too, to
tell data parallelism from threading losses. On GPUs each process takes one GPU.

    python benchmarks/ddp_scaling.py                          # CPU: 1 vs 2 processes
    python benchmarks/ddp_scaling.py --device cuda --devices 2,4,8 \\
        --data fashion-mnist --model resnet18 --img-size 64 --batch-size 1024
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(n: int, args: argparse.Namespace, out: Path, threads: int | None) -> dict:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "cnnkit", "train", args.data, "--model", args.model,
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--img-size", str(args.img_size), "--device", args.device, "--no-plots", "-q",
           "--out", str(out), "--name", f"p{n}t{threads}", "--devices", str(n)]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - start
    folder = out / f"p{n}t{threads}"
    with open(folder / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ips = [float(r["images_per_s"]) for r in rows]
    test = folder / "test_metrics.json"
    acc = None
    if test.is_file():
        import json

        acc = json.loads(test.read_text())["accuracy"]
    return {"n": n, "ips": statistics.median(ips[1:] or ips), "wall": wall, "acc": acc,
            "threads": threads}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shapes:size=28,count=2400")
    ap.add_argument("--model", default="seed-cnn")
    ap.add_argument("--img-size", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--devices", default="2", help="comma-separated process counts")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of 1, N, ... processes, "
                    "interleaved so that a change in the machine's load hits every count; "
                    "each count's median is reported")
    args = ap.parse_args()
    counts = [int(c) for c in args.devices.split(",")]
    cores = os.cpu_count() or 1
    cpu = args.device == "cpu"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"data {args.data}, model {args.model}, {args.img_size} px, global batch "
          f"{args.batch_size}, {args.epochs} epochs, device {args.device}, {cores} cores, "
          f"load average {load:.1f} at start")
    # CPU: 1 process on all cores, 1 process on one core (where other work loads the
    # machine, OpenMP threads that wait on each other can make this the faster one), then
    # N processes sharing the cores.
    configs = [(n, max(1, cores // n) if cpu else None) for n in [1, *counts]]
    if cpu and cores > 1:
        configs.insert(1, (1, 1))
    rounds: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="cnnkit-ddp-") as tmp:
        for r in range(args.repeat):
            for n, threads in configs:
                rounds.setdefault((n, threads), []).append(
                    run(n, args, Path(tmp) / f"r{r}", threads))
    results = [sorted(rs, key=lambda x: x["ips"])[len(rs) // 2] for rs in rounds.values()]
    if args.repeat > 1:
        for (n, threads), rs in rounds.items():
            print(f"{n} process(es) x {threads} thread(s), img/s per round: "
                  + ", ".join(f"{x['ips']:.0f}" for x in rs))
    base = results[0]["ips"]
    print(f"{'processes':>9} {'threads each':>12} {'img/s':>8} {'vs 1':>6} {'wall s':>7} "
          f"{'test acc':>8}")
    for r in results:
        acc = "-" if r["acc"] is None else f"{r['acc']:.2%}"
        threads = "-" if r["threads"] is None else str(r["threads"])
        print(f"{r['n']:>9} {threads:>12} {r['ips']:>8.0f} {r['ips'] / base:>6.2f} "
              f"{r['wall']:>7.1f} {acc:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
