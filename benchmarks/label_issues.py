"""`cnnkit check FOLDER --labels` on 2,000 Fashion-MNIST images with 5% of the labels
flipped (seeded): precision and recall of the images it reports against the flips, and
the time of the whole command as a new process with an empty cache (decoding, codes,
5 cross-fitted heads, cleanlab). The issue's target: precision at least 0.8 at recall
at least 0.6, under 60 s on 2 cores.

A baseline in the same run: what a user does by cleanlab's own tutorial without cnnkit,
scikit-learn's logistic regression on the raw pixels, cross-validated, into the same
``find_label_issues``.

    python benchmarks/label_issues.py --images 2000 --noise 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def fashion(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from cnnkit.data.fashion_mnist import CLASSES, load

    images, labels = load()[:2]
    rng = np.random.default_rng(seed)
    per = n // len(CLASSES)
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False)
                           for c in range(len(CLASSES))])
    return images[pick], labels[pick], list(CLASSES)


def flip(labels: np.ndarray, share: float, classes: int, seed: int
         ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    flipped = rng.choice(len(labels), round(share * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, len(flipped))) % classes
    return noisy, flipped


def write_tree(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]
               ) -> list[str]:
    names = []
    for i, (img, y) in enumerate(zip(images, labels)):
        folder = root / classes[y].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        Image.fromarray(img).save(path, compress_level=1)
        names.append(str(path))
    return names


def score(found: set[int], flipped: np.ndarray) -> tuple[float, float]:
    truth = set(flipped.tolist())
    hit = len(found & truth)
    return hit / max(1, len(found)), hit / max(1, len(truth))


def pixels_baseline(images: np.ndarray, noisy: np.ndarray) -> tuple[set[int], float]:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    start = time.perf_counter()
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    probs = cross_val_predict(LogisticRegression(max_iter=300), x, noisy, cv=5,
                              method="predict_proba")
    issues = find_label_issues(noisy, probs)
    return set(np.flatnonzero(issues).tolist()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels, classes = fashion(args.images, args.seed)
    noisy, flipped = flip(labels, args.noise, len(classes), args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        names = write_tree(root, images, noisy, classes)
        index = {os.path.realpath(n): i for i, n in enumerate(names)}
        env = {**os.environ, "CNNKIT_CACHE": str(Path(tmp) / "cache")}
        start = time.perf_counter()
        before = os.times()
        done = subprocess.run([sys.executable, "-m", "cnnkit", "check", str(root), "--labels",
                               "--format", "json", "--out", str(Path(tmp) / "out")],
                              env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        after = os.times()
        cpu = (after.children_user + after.children_system
               - before.children_user - before.children_system)
        if done.returncode not in (0, 2):
            sys.exit(f"cnnkit check failed ({done.returncode}):\n{done.stderr[-2000:]}")
        report = json.loads(done.stdout)["label_issues"]
        found = {index[os.path.realpath(i["file"])] for i in report["issues"]
                 if i["verdict"] == "probably wrong"}
        flagged = {index[os.path.realpath(i["file"])] for i in report["issues"]}
        base_found, base_seconds = pixels_baseline(images, noisy)
    p, r = score(found, flipped)
    fp, fr = score(flagged, flipped)
    bp, br = score(base_found, flipped)
    print(f"{len(names):,} Fashion-MNIST images, {len(flipped)} labels flipped "
          f"({args.noise:.0%}, seed {args.seed}); load {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print("| method | reported | precision | recall | seconds |")
    print("|---|---:|---:|---:|---:|")
    print(f"| cnnkit check --labels, probably wrong ({report['codes']}; whole command) | "
          f"{len(found)} | "
          f"{p:.3f} | {r:.3f} | {seconds:.1f} |")
    print(f"| (all of cleanlab's flags, 'worth a look' included) | {len(flagged)} | "
          f"{fp:.3f} | {fr:.3f} | |")
    print(f"| pixels + LogisticRegression + cleanlab (by hand) | {len(base_found)} | "
          f"{bp:.3f} | {br:.3f} | {base_seconds:.1f} |")
    print(f"out-of-fold accuracy {report['out_of_fold_accuracy']:.1%}, estimated noise "
          f"{report['noise_rate']:.1%}, cutoff p(given) < {report['cutoff']:.4f}; "
          f"cnnkit's CPU time {cpu:.1f} s")
    ok = p >= 0.8 and r >= 0.6 and seconds < 60
    print(f"target (precision >= 0.8 at recall >= 0.6, under 60 s): "
          f"{'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
