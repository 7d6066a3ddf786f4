"""The learning-rate finder against the default rate: for each data set and model, the
finder's two suggestions and the test accuracy of training at each of them and at the
default rate, same seed, same epochs.

    python benchmarks/lr_find.py fashion-mnist seed-cnn --epochs 3
    python benchmarks/lr_find.py digits lenet5 --epochs 5
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cnnkit
from cnnkit.base import log


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("model")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    log.set_quiet(True)
    common = dict(model=args.model, seed=args.seed)
    t0 = time.perf_counter()
    found = cnnkit.lr_find(args.data, **common)
    find_s = time.perf_counter() - t0
    print(f"{args.data} {args.model}: finder {find_s:.1f}s, {len(found.lrs)} steps, "
          f"steepest {found.steepest:.3g}, valley {found.valley:.3g}", flush=True)
    print(f"| rate | lr | test accuracy ({args.epochs} epochs) | train time |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        for name, lr in (("default", None), ("valley", found.valley),
                         ("steepest", found.steepest)):
            lr = None if lr is None else float(f"{lr:.3g}")
            t0 = time.perf_counter()
            result = cnnkit.train(args.data, epochs=args.epochs, lr=lr, plots=False, out=out,
                                  **common)
            print(f"| {name} | {result.config.lr:.3g} | {result.test_accuracy:.2%} | "
                  f"{time.perf_counter() - t0:.0f}s |", flush=True)


if __name__ == "__main__":
    main()
