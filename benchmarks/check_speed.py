"""`cnnkit check` on a folder of 10,000 small images: first run (every file read and
decoded) and second run (the stat-keyed file index), each as a new process
(imports included, as a user runs it). The issue's target: the second run under 20 s
on 2 cores.

    python benchmarks/check_speed.py --images 10000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_tree(root: Path, n: int, classes: int = 10, size: int = 48) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("train" if (i // classes) % 5 else "test") / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:05d}.png", compress_level=1)
    # a planted leak for the check to find
    (root / "test" / "class1" / "leak.png").write_bytes(
        (root / "train" / "class1" / f"{classes + 1:05d}.png").read_bytes())


def timed(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnnkit", *args], env=env,
                          capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        t = time.perf_counter()
        make_tree(root, args.images)
        print(f"wrote {args.images:,} 48x48 PNGs in {time.perf_counter() - t:.1f} s")
        env = {**os.environ, "CNNKIT_CACHE": str(Path(tmp) / "cache")}
        rows = []
        for label, extra in (("first run", []), ("second run", [])):
            seconds, code, out = timed(["check", str(root), "--img-size", "48", *extra], env)
            found = "leak found" if "leak.png" in out else "LEAK MISSED"
            rows.append((label, seconds, code, found))
        startup, _, _ = timed(["--version"], env)
        imports = subprocess.run(
            [sys.executable, "-c", "import time; t = time.perf_counter(); "
             "import cnnkit.cli.check_cmd, cnnkit.data.audit, cnnkit.data.sources; "
             "print(time.perf_counter() - t)"], env=env, capture_output=True, text=True)
        inproc = subprocess.run(
            [sys.executable, "-c", "import sys, time; from cnnkit.data.audit import audit; "
             "from cnnkit.data.sources import describe; t = time.perf_counter(); "
             "audit(describe(sys.argv[1]), img_size=48, progress=False); "
             "print(time.perf_counter() - t)", str(root)],
            env=env, capture_output=True, text=True)
        print(f"{'run':<16}{'seconds':>9}{'images/s':>10}  exit  leak")
        for label, seconds, code, found in rows:
            print(f"{label:<16}{seconds:>9.1f}{args.images / seconds:>10,.0f}  {code:>4}  {found}")
        print(f"of the second run: importing the check's modules (torch among them) "
              f"{float(imports.stdout):.1f} s, the audit itself {float(inproc.stdout):.1f} s")
        print(f"(a bare `cnnkit --version` takes {startup:.1f} s here; cores: {os.cpu_count()}; "
              f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
