"""Few images: Fashion-MNIST with 100 training images per class, tested on all 10,000.

Compares, in one process on one machine, the seed CNN from scratch, cnnkit's
*features* mode (frozen EfficientNet-Lite0 codes + a logistic head) and its
*fine-tune* mode. "train s" is the run's own clock: for features, the feature
extraction of the training (and validation) images plus the head; for the others,
the epochs. Testing on the 10,000 images is not counted.

    python benchmarks/few_shot.py                      # all three, ~15 min on 2 cores
    python benchmarks/few_shot.py --modes features
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import cnnkit

RECIPES = {
    "scratch (seed-cnn)": {"model": "seed-cnn", "mode": "scratch", "epochs": 30},
    "features": {"model": "efficientnet_lite0", "mode": "features"},
    "fine-tune": {"model": "efficientnet_lite0", "mode": "fine-tune"},
}
TARGETS = {"features": 0.85, "fine-tune": 0.88}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="scratch,features,fine-tune",
                    help="comma-separated: scratch, features, fine-tune")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="MODE:KEY=VALUE",
                    help="override a recipe option, e.g. fine-tune:epochs=8")
    ap.add_argument("--out", default=None, help="where to write results.json")
    ap.add_argument("--keep-cache", action="store_true",
                    help="reuse cached features (default: a fresh cache, so the features "
                    "mode's time includes extracting them)")
    args = ap.parse_args()
    wanted = [m.strip() for m in args.modes.split(",")]
    recipes = {k: dict(v) for k, v in RECIPES.items() if k.split()[0] in wanted}
    for item in args.set:
        mode, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        for name, recipe in recipes.items():
            if name.split()[0] == mode:
                recipe[key] = type(recipe.get(key, value))(value) if key in recipe else \
                    _number(value)
    print(f"Fashion-MNIST, {args.per_class} training images per class (seed {args.seed}); "
          f"test: the official 10,000 images; device {args.device}, "
          f"{torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.keep_cache:
            os.environ["CNNKIT_CACHE"] = os.path.join(tmp, "cache")
        for name, recipe in recipes.items():
            start = time.perf_counter()
            result = cnnkit.train("fashion-mnist", per_class=args.per_class, seed=args.seed,
                                  device=args.device, out=tmp, plots=False, **recipe)
            wall = time.perf_counter() - start
            train_s = result.history[-1]["elapsed_s"]
            phases = json.loads((result.run_dir / "phases.json").read_text())
            rows.append({"recipe": name, "options": recipe, "test_acc": result.test_accuracy,
                         "train_s": train_s, "wall_s": wall,
                         "epochs": len(result.history),
                         "trained_params": [p["trainable_params"] for p in phases],
                         "target": TARGETS.get(name)})
            print(f"  {name}: {result.test_accuracy:.2%} in {train_s:.1f}s of training "
                  f"({wall:.0f}s with loading and testing)", flush=True)
    print()
    print(f"{'recipe':<20} {'test acc':>9} {'train s':>8} {'wall s':>7}  target")
    for r in rows:
        target = "" if r["target"] is None else (
            f">= {r['target']:.0%}" + (" and < 30 s" if r["recipe"] == "features" else "")
            + ("  met" if r["test_acc"] >= r["target"] and (
                r["recipe"] != "features" or r["train_s"] < 30) else "  MISSED"))
        print(f"{r['recipe']:<20} {r['test_acc']:>9.2%} {r['train_s']:>8.1f} "
              f"{r['wall_s']:>7.0f}  {target}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))


def _number(text: str) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    main()
