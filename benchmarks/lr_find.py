"""The learning-rate finder against the default rate: for one data set and model, the
finder's suggestions, and the test accuracy of training at the default rate and at each
suggestion (same seed, same epochs). The row the issue asks for is "what --lr find
trains at" against "the default": within one point, or better.

    python benchmarks/lr_find.py digits lenet5 --epochs 2
    python benchmarks/lr_find.py digits lenet5 --epochs 5
    python benchmarks/lr_find.py fashion-mnist seed-cnn --epochs 3
    cnnkit data export fashion-mnist /tmp/fm --per-class 20      # 160 train images
    python benchmarks/lr_find.py /tmp/fm/train seed-cnn --epochs 3 --test /tmp/fm/test
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cnnkit
from cnnkit.base import log
from cnnkit.training.lrfind import TRAIN_PICK


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("model")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", help="test on this data (e.g. a folder's own test "
                        "folder) instead of the run's held-out split")
    args = parser.parse_args()
    log.set_quiet(True)
    common = dict(model=args.model, seed=args.seed)
    t0 = time.perf_counter()
    found = cnnkit.lr_find(args.data, **common)
    find_s = time.perf_counter() - t0
    picked = found.suggestion()
    verdict = (f"--lr find trains at the {TRAIN_PICK}, {picked:.3g}" if picked is not None
               else f"no suggestion, the curve is {found.doubt}: --lr find keeps the default")
    print(f"{args.data} {args.model}: finder {find_s:.0f}s, {len(found.lrs)} steps"
          f"{', stopped at divergence' if found.diverged else ''}; lowest loss at "
          f"{found.bottom:.3g}; {verdict}", flush=True)
    print(f"| rate | lr | test accuracy ({args.epochs} epochs) | train time |")
    print("|---|---|---|---|")
    rates = [("default", None)] + [(name, float(f"{lr:.3g}"))
                                   for name, lr in found.suggestions.items()]
    with tempfile.TemporaryDirectory() as out:
        for name, lr in rates:
            t0 = time.perf_counter()
            result = cnnkit.train(args.data, epochs=args.epochs, lr=lr, plots=False, out=out,
                                  **common)
            seconds = time.perf_counter() - t0
            accuracy = (result.test_accuracy if args.test is None else
                        cnnkit.evaluate(str(result.run_dir), args.test,
                                        backend="torch").accuracy)
            mark = " (the pick)" if name == TRAIN_PICK and picked is not None else ""
            print(f"| {name}{mark} | {result.config.lr:.3g} | {accuracy:.2%} | "
                  f"{seconds:.0f}s |", flush=True)


if __name__ == "__main__":
    main()
