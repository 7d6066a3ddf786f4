"""`cnnkit check FOLDER --near` on Fashion-MNIST's look-alike classes (T-shirt/top,
Pullover, Coat, Shirt) with planted copies: resized, re-encoded as JPEG, slightly
cropped and brightened, each placed in its own class, under another class or in the
test split. Precision and recall of the pairs it reports against the planted ones; the
issue's target: precision at least 0.9, recall at least 0.8.

In the same run, the difference hash within 3 bits that `check --near` used before
(cnnkit.data.file_index.dhash, what a user's imagehash script does) on the same files.

    python benchmarks/near_duplicates.py --per-class 150 --copies 60
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

LOOK_ALIKE = (0, 2, 4, 6)  # T-shirt/top, Pullover, Coat, Shirt
KINDS = ("resized", "jpeg", "cropped", "brightened")
PLACES = ("same class", "other class", "test split")


def transform(img: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A planted copy and the format to save it in."""
    if kind == "resized":
        side = int(rng.choice([20, 40, 56, 84]))
        return img.resize((side, side), Image.Resampling.BICUBIC), "png"
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(50, 80)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("L"), "png"
    if kind == "cropped":
        c = int(rng.integers(1, 3))  # 1-2 px of 28 from each side: 7-14 % of the side
        return img.crop((c, c, 28 - c, 28 - c)), "png"
    factor = float(rng.uniform(1.2, 1.4))
    return ImageEnhance.Brightness(img).enhance(factor), "png"


def build(root: Path, per_class: int, copies: int, seed: int
          ) -> tuple[set[frozenset[str]], dict[frozenset[str], str]]:
    from cnnkit.data.fashion_mnist import CLASSES, load

    train_x, train_y, test_x, test_y = load()
    rng = np.random.default_rng(seed)
    names = {c: CLASSES[c].replace("/", "-") for c in LOOK_ALIKE}
    originals: list[tuple[str, int, Path]] = []
    for split, xs, ys, n in (("train", train_x, train_y, per_class),
                             ("test", test_x, test_y, max(1, per_class // 4))):
        for c in LOOK_ALIKE:
            folder = root / split / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            for i in rng.choice(np.flatnonzero(ys == c), n, replace=False):
                path = folder / f"{split}{i:05d}.png"
                Image.fromarray(xs[i]).save(path)
                if split == "train":
                    originals.append((split, c, path))
    truth: set[frozenset[str]] = set()
    how: dict[frozenset[str], str] = {}
    picks = rng.choice(len(originals), copies, replace=False)
    for k, j in enumerate(picks):
        _, c, src = originals[j]
        kind, place = KINDS[k % len(KINDS)], PLACES[(k // len(KINDS)) % len(PLACES)]
        copy, fmt = transform(Image.open(src).convert("L"), kind, rng)
        if place == "other class":
            other = [o for o in LOOK_ALIKE if o != c][int(rng.integers(0, 3))]
            folder = root / "train" / names[other]
        else:
            folder = root / ("test" if place == "test split" else "train") / names[c]
        dst = folder / f"copy{k:03d}-{kind}.{fmt}"
        copy.save(dst)
        pair = frozenset((str(src), str(dst)))
        truth.add(pair)
        how[pair] = f"{kind}, {place}"
    return truth, how


def dhash_pairs(root: Path, bits: int = 3) -> set[frozenset[str]]:
    from cnnkit.data.file_index import dhash

    paths = sorted(str(p) for p in root.rglob("*.png"))
    hashes = np.array([dhash(Image.open(p)) for p in paths], dtype=np.uint64)
    pairs = set()
    for a in range(len(paths)):
        dist = np.bitwise_count(hashes[a] ^ hashes[a + 1:])
        for b in np.flatnonzero(dist <= bits):
            pairs.add(frozenset((paths[a], paths[a + 1 + b])))
    return pairs


def score(found: set[frozenset[str]], truth: set[frozenset[str]]) -> tuple[float, float]:
    hit = len(found & truth)
    return hit / max(1, len(found)), hit / max(1, len(truth))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--copies", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        truth, how = build(root, args.per_class, args.copies, args.seed)
        n = sum(1 for _ in root.rglob("*.png"))
        env = {**os.environ, "CNNKIT_CACHE": str(Path(tmp) / "cache")}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cnnkit", "check", str(root), "--near",
                               "--format", "json", "--out", str(Path(tmp) / "out")],
                              env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode not in (0, 2):
            sys.exit(f"cnnkit check failed ({done.returncode}):\n{done.stderr[-2000:]}")
        near = json.loads(done.stdout)["near_duplicates"]
        found = {frozenset((os.path.realpath(p["a"]), os.path.realpath(p["b"])))
                 for p in near["pairs"]}
        truth = {frozenset(os.path.realpath(x) for x in pair) for pair in truth}
        how = {frozenset(os.path.realpath(x) for x in k): v for k, v in how.items()}
        start = time.perf_counter()
        hashed = {frozenset(os.path.realpath(x) for x in pair) for pair in dhash_pairs(root)}
        hash_seconds = time.perf_counter() - start
    p, r = score(found, truth)
    hp, hr = score(hashed, truth)
    print(f"{n:,} images of 4 look-alike Fashion-MNIST classes (train/ and test/), "
          f"{len(truth)} planted copies ({', '.join(KINDS)}; {', '.join(PLACES)}); "
          f"seed {args.seed}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| method | pairs reported | precision | recall | seconds |")
    print("|---|---:|---:|---:|---:|")
    print(f"| cnnkit check --near ({near.get('codes', '')}, whole command) | {len(found)} | "
          f"{p:.3f} | {r:.3f} | {seconds:.1f} |")
    print(f"| difference hash within 3 bits (before) | {len(hashed)} | {hp:.3f} | {hr:.3f} | "
          f"{hash_seconds:.1f} |")
    missed = sorted(how[t] for t in truth - found)
    if missed:
        print("missed:", "; ".join(missed))
    ok = p >= 0.9 and r >= 0.8
    print(f"target (precision >= 0.9, recall >= 0.8): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
