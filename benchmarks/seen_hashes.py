"""What recognising images by their contents costs: the content hashes that split.json
records and that `cnnkit evaluate RUN DATA`, --init-from and --resume compare, against
decoding the same files (which each of those commands does anyway).

A folder of N Fashion-MNIST-sized images (28x28 grey PNGs, 10 classes) is written, then
copied (a user's cp -r: new paths, new modification times); on the copy, in one process:
the hashes with no index (every file read), again (the index: only stats), and the
decode cache cold and warm.

    python benchmarks/seen_hashes.py --images 10000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_tree(root: Path, n: int, classes: int = 10, size: int = 28) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        # smooth blobs compress as photos do, unlike noise
        arr = rng.integers(0, 256, (size // 4, size // 4), dtype=np.uint8)
        img = Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR)
        img.save(folder / f"{i:05d}.png")
        paths.append(str(folder / f"{i:05d}.png"))
    return paths


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CNNKIT_CACHE"] = str(Path(tmp) / "cache")
        from cnnkit.data.cache import decode_files
        from cnnkit.data.file_index import file_digests

        paths = make_tree(Path(tmp) / "data", args.images)
        shutil.copytree(Path(tmp) / "data", Path(tmp) / "copy", copy_function=shutil.copyfile)
        copy = [p.replace(f"{tmp}/data", f"{tmp}/copy") for p in paths]
        size = sum(os.path.getsize(p) for p in copy)
        print(f"{len(copy):,} files, {size / 1e6:.1f} MB, copied as cp -r does (new paths "
              "and times)")

        def bare() -> None:
            for p in copy:
                with open(p, "rb") as fh:
                    hashlib.blake2b(fh.read(), digest_size=16).hexdigest()

        rows = [
            ("read and hash every file, nothing else", timed(bare)),
            ("file_digests, no index yet", timed(lambda: file_digests(copy, f"{tmp}/copy"))),
            ("file_digests, indexed (stats only)",
             timed(lambda: file_digests(copy, f"{tmp}/copy"))),
            ("decode to 28x28, no cache yet",
             timed(lambda: decode_files(tuple(copy), 1, 28, progress=False))),
            ("decode to 28x28, cached",
             timed(lambda: decode_files(tuple(copy), 1, 28, progress=False))),
        ]
        for label, seconds in rows:
            print(f"| {label} | {seconds:.2f} | {len(copy) / seconds:,.0f} |")


if __name__ == "__main__":
    main()
