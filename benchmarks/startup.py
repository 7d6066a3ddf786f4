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


def _time(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of ``argv``."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
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
    args = ap.parse_args()
    env = dict(os.environ)
    work = Path(tempfile.mkdtemp(prefix="cnnkit-startup-"))
    env["CNNKIT_CACHE"] = str(work / "cache")
    cnnkit = shutil.which("cnnkit", path=str(Path(sys.executable).parent)) or "cnnkit"
    try:
        run, image = _scratch_run(work, env)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "cnnkit --help": [cnnkit, "--help"],
            "cnnkit models": [cnnkit, "models"],
            "cnnkit summary seed-cnn": [cnnkit, "summary", "seed-cnn"],
            "cnnkit predict RUN one.png (scratch)": [cnnkit, "predict", str(run), str(image),
                                                     "--device", "cpu"],
        }
        print("| command | median s | fastest s | runs |\n| --- | --- | --- | --- |")
        for name, argv in commands.items():
            _time(argv, env)  # warm the disk cache
            times = [_time(argv, env) for _ in range(args.runs)]
            print(f"| `{name}` | {statistics.median(times):.2f} | {min(times):.2f} | "
                  f"{args.runs} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
