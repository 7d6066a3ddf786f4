"""Training-step time on the CPU in fp32, bf16 and fp16 autocast, as `--precision` runs it.

For each model, one AdamW step of a batch (forward, loss, backward, update) under
``torch.autocast("cpu", dtype)``; the three precisions take turns in each round (so all
see the same machine load), and the table has each one's median time as a multiple of
fp32's. Why ``--precision fp16`` on a CPU trains in bf16 (docs/design-notes.md).

    python benchmarks/cpu_precision.py --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import torch

from cnnkit.models.build import create_model, resolve

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
          y: torch.Tensor, dtype: torch.dtype | None) -> float:
    """Seconds of one training step under autocast to ``dtype`` (None: fp32)."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", default="fast-cnn:32,resnet-small:32,seed-cnn:28")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| model | input | fp32 s/step | bf16 / fp32 | fp16 / fp32 |")
    print("| --- | --- | --- | --- | --- |")
    for spec in args.models.split(","):
        name, size = spec.split(":")
        arch, _ = resolve(name)
        model = create_model(arch, 10, 3, int(size))
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(args.batch, 3, int(size), int(size))
        y = torch.randint(0, 10, (args.batch,))
        step = partial(_step, model, opt, x, y)
        times: dict[str, list[float]] = {p: [] for p in DTYPES}
        for dtype in DTYPES.values():
            step(dtype)  # warm-up
        for _ in range(args.rounds):
            for p, dtype in DTYPES.items():
                times[p].append(step(dtype))
        med = {p: statistics.median(v) for p, v in times.items()}
        print(f"| {name} | {size} px | {med['fp32']:.3f} | {med['bf16'] / med['fp32']:.2f}x | "
              f"{med['fp16'] / med['fp32']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
