"""Folder data at speed: decode once, then epochs from the uint8 cache.

Exports Fashion-MNIST as a class-per-folder tree of JPEGs upscaled to 64 px, then
measures images/s for the first epoch (decoding every file), a new process's first
epoch (reading the on-disk decode cache), and later epochs (resident uint8 tensors,
batched augmentation). For contrast, torchvision's ImageFolder + DataLoader, which
decodes every file every epoch.

    python benchmarks/loader.py --per-class 2000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnkit.base import log
from cnnkit.data import cache
from cnnkit.data.export import export_builtin
from cnnkit.data.loader import BatchLoader
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.sources import load_splits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="for the torchvision baseline")
    args = ap.parse_args()
    log.set_quiet(True)
    work = Path(tempfile.mkdtemp(prefix="cnnkit-loader-"))
    try:
        tree = work / "fmnist-jpeg"
        export_builtin("fashion-mnist", tree, split="train", per_class=args.per_class,
                       size=args.size, fmt="jpg")
        root = tree / "train"
        n = sum(1 for _ in root.rglob("*.jpg"))
        pre = Preprocess(args.size, 1, (0.5,), (0.5,))
        print(f"{n:,} JPEGs of {args.size}x{args.size} px, batch {args.batch_size}, "
              f"{torch.get_num_threads()} threads")

        cache.clear()
        t = time.perf_counter()
        splits = load_splits(str(root), pre, val_fraction=0.0, test_fraction=0.0)
        decode_s = time.perf_counter() - t
        t = time.perf_counter()
        load_splits(str(root), pre, val_fraction=0.0, test_fraction=0.0)
        disk_s = time.perf_counter() - t

        loader = BatchLoader(splits.train, pre, args.batch_size, torch.device("cpu"),
                             train=True, augment=("flip", "crop"),
                             generator=torch.Generator().manual_seed(0))
        epoch_s = []
        for _ in range(args.epochs):
            t = time.perf_counter()
            seen = sum(len(y) for _, y in loader)
            epoch_s.append(time.perf_counter() - t)
        cached = seen / min(epoch_s)

        tv_rate = torchvision_baseline(root, args)
        rows = [
            ("first epoch: decode every JPEG (cnnkit)", n / decode_s),
            ("first epoch, new process: on-disk decode cache", n / disk_s),
            ("later epochs: resident uint8 + batched flip/crop", cached),
            (f"torchvision ImageFolder + DataLoader ({args.workers} workers), every epoch",
             tv_rate),
        ]
        print("\nstage | images/s")
        print("--- | ---")
        for name, rate in rows:
            print(f"{name} | {rate:,.0f}")
        print(f"\ncached epochs vs decoding epoch: {cached / (n / decode_s):.1f}x faster")
        print(f"cached epochs vs torchvision per-epoch decoding: {cached / tv_rate:.1f}x faster")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        cache.clear()
    return 0


def torchvision_baseline(root: Path, args: argparse.Namespace) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Grayscale(), transforms.RandomHorizontalFlip(),
                             transforms.RandomCrop(args.size, padding=6), transforms.ToTensor(),
                             transforms.Normalize((0.5,), (0.5,))])
    ds = datasets.ImageFolder(str(root), transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True,
                                     num_workers=args.workers)
    t = time.perf_counter()
    seen = sum(len(y) for _, y in dl)
    return seen / (time.perf_counter() - t)


if __name__ == "__main__":
    sys.exit(main())
