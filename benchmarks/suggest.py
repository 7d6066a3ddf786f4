"""`cnnkit suggest` against random picks: Fashion-MNIST, start from 100 labels, 4 rounds
of +100. Each round fits the features mode's head (logistic regression on the frozen
pretrained Lite0's codes at 64 px, as `cnnkit train --mode features` does) on the
labels so far and asks for 100 more: from `cnnkit.curate.suggest.select` (margin, then
k-center greedy away from the labelled images; the function the command runs) or at
random. Test accuracy on 2,000 test images, averaged over seeds. The issue's target: at
least +2 points at 500 labels.

    python benchmarks/suggest.py --pool 5000 --seeds 3
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def codes(pool: int, test: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                     np.ndarray]:
    from cnnkit.curate.codes import lite0_input, pretrained_codes
    from cnnkit.data.sources import load_splits

    pre = lite0_input(64)
    s = load_splits("fashion-mnist", pre, val_fraction=0.0, test_fraction=0.0)
    g = torch.Generator().manual_seed(seed)
    a = s.train.subset(torch.randperm(len(s.train), generator=g)[:pool])
    b = s.test.subset(torch.randperm(len(s.test), generator=g)[:test])
    c = pretrained_codes([("train", a), ("test", b)], pre)
    n = len(a)
    return c.codes[:n], c.labels[:n], c.codes[n:], c.labels[n:]


def accuracy(x: np.ndarray, y: np.ndarray, idx: list[int], tx: np.ndarray, ty: np.ndarray
             ) -> tuple[float, np.ndarray]:
    from cnnkit.curate.labels import HEAD_C
    from cnnkit.tasks.registry import DEFAULT, get_task
    from cnnkit.training.features import fit_head

    head = fit_head(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]), 10, get_task(DEFAULT),
                    c=HEAD_C)
    with torch.no_grad():
        acc = float((head(torch.from_numpy(tx)).argmax(1).numpy() == ty).mean())
        probs = torch.softmax(head(torch.from_numpy(x)), 1).numpy()
    return acc, probs


def run(x, y, tx, ty, seed: int, start: int, step: int, rounds: int, how: str) -> list[float]:
    from cnnkit.curate.suggest import select

    rng = np.random.default_rng(seed)
    labelled = rng.choice(len(x), start, replace=False).tolist()
    accs = []
    for r in range(rounds + 1):
        acc, probs = accuracy(x, y, labelled, tx, ty)
        accs.append(acc)
        if r == rounds:
            break
        rest = np.setdiff1d(np.arange(len(x)), labelled)
        if how == "random":
            picks = rng.choice(rest, step, replace=False).tolist()
        else:
            local = select(probs[rest], x[rest], step, x[labelled])
            picks = rest[local].tolist()
        labelled += picks
    return accs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", type=int, default=5000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    x, y, tx, ty = codes(args.pool, args.test, 0)
    coded_s = time.perf_counter() - start
    table = {"suggest": [], "random": []}
    for seed in range(args.seeds):
        for how in table:
            table[how].append(run(x, y, tx, ty, seed, 100, 100, 4, how))
    print(f"Fashion-MNIST: pool of {args.pool:,} training images, {args.test:,} test images, "
          f"{args.seeds} seeds; codes in {coded_s:.0f} s; load {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    sizes = [100 + 100 * r for r in range(5)]
    print("| picks | " + " | ".join(f"{n} labels" for n in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    mean = {h: np.mean(v, 0) for h, v in table.items()}
    for how in table:
        spread = np.std(table[how], 0)
        print(f"| {how} | " + " | ".join(f"{m:.2%} ± {s:.2%}" for m, s in
                                         zip(mean[how], spread)) + " |")
    gain = (mean["suggest"][-1] - mean["random"][-1]) * 100
    print(f"suggest - random at 500 labels: {gain:+.2f} points "
          f"(target +2: {'met' if gain >= 2 else 'MISSED'})")


if __name__ == "__main__":
    main()
