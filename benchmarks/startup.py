"""Start-up time of the cnnkit command: wall seconds from launch to exit, as a user waits.

Each command runs ``--runs`` times in a fresh process (the first run warms the disk
cache and is not counted); the table has the median and the fastest run of each, and
``python -c pass`` and ``import torch`` as the floor that no command can go below.
``--compare SRC`` also times another source tree (an older checkout's ``src``), the
two runs of each command interleaved so that both see the same machine load.

    python benchmarks/startup.py --runs 7
    python benchmarks/startup.py --runs 7 --compare /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time(argv: list[str], env: dict[str, str], status: int = 0) -> float:
    """Wall seconds of one run of ``argv``, which must exit with ``status``."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != status:
        raise SystemExit(f"error: {' '.join(argv)} failed: {done.stderr.strip()[-400:]}")
    return seconds


def _scratch_run(work: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """A tiny scratch run (seed CNN on 28x28 grey images) and one image to predict."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    data = work / "digits"
    for c in range(3):
        (data / str(c)).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (28, 28), np.uint8)).save(
                data / str(c) / f"{i}.png")
    subprocess.run([sys.executable, "-m", "cnnkit", "train", str(data), "--model",
                    "seed-cnn", "--epochs", "1", "--no-plots", "--device", "cpu", "--out",
                    str(work / "runs"), "--name", "r", "-q"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return work / "runs" / "r", data / "0" / "0.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per command")
    ap.add_argument("--compare", help="another source tree to time as well (its src/)")
    args = ap.parse_args()
    env = dict(os.environ)
    work = Path(tempfile.mkdtemp(prefix="cnnkit-startup-"))
    env["CNNKIT_CACHE"] = str(work / "cache")
    this = {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    trees = {"this": this}
    if args.compare:
        trees = {"compared": {**env, "PYTHONPATH": str(Path(args.compare).resolve())},
                 "this": this}
    cnnkit = [sys.executable, "-m", "cnnkit"]
    try:
        run, image = _scratch_run(work, this)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "cnnkit --help": [*cnnkit, "--help"],
            "cnnkit models": [*cnnkit, "models"],
            "cnnkit summary seed-cnn": [*cnnkit, "summary", "seed-cnn"],
            "cnnkit predict RUN one.png (scratch)": [*cnnkit, "predict", str(run), str(image),
                                                     "--device", "cpu"],
            # a pretrained model whose weights are not here, offline: fails (exit 2)
            "HF_HUB_OFFLINE=1 cnnkit predict resnet18 one.png": [
                *cnnkit, "predict", "resnet18", str(image)],
            "HF_HUB_OFFLINE=1 cnnkit train DATA --model resnet18": [
                *cnnkit, "train", str(image.parents[1]), "--model", "resnet18"],
        }
        offline = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(work / "empty-hub"),
                   "TORCH_HOME": str(work / "torch")}
        cols = " | ".join(f"{t}: median s | {t}: fastest s" for t in trees)
        print(f"| command | {cols} | runs |\n|{' --- |' * (2 * len(trees) + 2)}")
        for name, argv in commands.items():
            times: dict[str, list[float]] = {t: [] for t in trees}
            fails = name.startswith("HF_HUB_OFFLINE")
            envs = {t: {**e, **offline} if fails else e for t, e in trees.items()}
            for tree_env in envs.values():
                _time(argv, tree_env, 2 * fails)  # warm the disk cache (and the ONNX cache)
            for _ in range(args.runs):
                for t, tree_env in envs.items():
                    times[t].append(_time(argv, tree_env, 2 * fails))
            cells = " | ".join(f"{statistics.median(v):.2f} | {min(v):.2f}"
                               for v in times.values())
            print(f"| `{name}` | {cells} | {args.runs} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
