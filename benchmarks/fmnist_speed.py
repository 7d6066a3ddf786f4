"""Time-to-accuracy on Fashion-MNIST: the tutorial recipe against cnnkit's recipes.

Every recipe is measured in the same process on the same machine; test accuracy is
taken after every epoch on the official 10,000 test images, and the clock counts
training only (evaluation excluded). Prints a table and writes a plot.

    python benchmarks/fmnist_speed.py                 # tutorial, default, fastest
    python benchmarks/fmnist_speed.py --recipes fastest --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import cnnkit
from cnnkit.base import log
from cnnkit.data import builtin
from cnnkit.runtime.inference import log_probs

# cnnkit's fastest recipes: the architecture and schedule that reach a given accuracy
# soonest on each kind of device (the default recipe is plain `cnnkit train fashion-mnist`).
FASTEST = {
    "cpu": {"model": "fast-cnn", "epochs": 12, "augment": "flip", "val_fraction": 0.0,
            "tta": True},
    "cpu-quick": {"model": "fast-cnn-small", "epochs": 4, "augment": "flip", "val_fraction": 0.0,
                  "tta": True},
    "cuda": {"model": "resnet-small", "epochs": 16, "batch_size": 512, "augment": "flip+crop",
             "val_fraction": 0.0, "tta": True},
    "cuda-quick": {"model": "fast-cnn", "epochs": 8, "batch_size": 512, "augment": "flip",
                   "val_fraction": 0.0, "tta": True},
}


def tutorial(device: torch.device, epochs: int = 10) -> list[dict]:
    """The tutorials' recipe in plain PyTorch: seed CNN, pixels / 255, Adam 1e-3, batch 32."""
    _, train, test = builtin.load_builtin("fashion-mnist")
    xtr = (train.images.float() / 255).to(device)
    ytr = train.labels.to(device)
    xte = (test.images.float() / 255).to(device)
    yte = test.labels.to(device)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10),
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr),
                                         batch_size=32, shuffle=True)
    rows, elapsed = [], 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        _sync(device)
        start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        _sync(device)
        elapsed += time.perf_counter() - start
        model.eval()
        with torch.inference_mode():
            pred = torch.cat([model(xte[i:i + 1000]).argmax(1) for i in range(0, len(xte), 1000)])
        acc = (pred == yte).float().mean().item()
        rows.append({"epoch": epoch, "seconds": elapsed, "test_acc": acc})
        print(f"  tutorial  epoch {epoch:2d}  {elapsed:7.1f}s  test {acc:.2%}", flush=True)
    return rows


def cnnkit_recipe(name: str, options: dict, device: torch.device, out: str) -> list[dict]:
    """Train with cnnkit; a callback measures test accuracy after each epoch (not timed)."""
    _, _, test = builtin.load_builtin("fashion-mnist")
    rows: list[dict] = []
    tta = bool(options.get("tta", False))

    def on_epoch(trainer, row) -> None:
        scores = log_probs(trainer.model, test, trainer.pre, trainer.device,
                           task=trainer.task, tta=tta,
                           precision=trainer.cfg.precision,
                           channels_last=trainer.plan.channels_last)
        acc = (scores.argmax(1) == test.labels).float().mean().item()
        row["test_acc"] = acc
        rows.append({"epoch": row["epoch"], "seconds": row["elapsed_s"], "test_acc": acc})
        print(f"  {name:9s} epoch {row['epoch']:2d}  {row['elapsed_s']:7.1f}s  test {acc:.2%}",
              flush=True)

    log.set_quiet(True)
    cnnkit.train("fashion-mnist", callbacks=[on_epoch], out=out, name=f"bench-{name}",
                 device=str(device), plots=False, **options)
    log.set_quiet(False)
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_to(rows: list[dict], target: float) -> float | None:
    return next((r["seconds"] for r in rows if r["test_acc"] >= target), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="tutorial,default,quick,fastest")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="benchmarks/out")
    ap.add_argument("--targets", default="0.93,0.94,0.95")
    args = ap.parse_args()
    from cnnkit.base.device import pick_device

    device = pick_device(args.device)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(f"device: {device}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    results: dict[str, list[dict]] = {}
    for recipe in args.recipes.split(","):
        print(f"{recipe}:", flush=True)
        if recipe == "tutorial":
            results[recipe] = tutorial(device)
        elif recipe == "default":
            results[recipe] = cnnkit_recipe(recipe, {}, device, args.out)
        elif recipe in ("fastest", "quick"):
            kind = "cuda" if device.type == "cuda" else "cpu"
            key = kind if recipe == "fastest" else f"{kind}-quick"
            results[recipe] = cnnkit_recipe(recipe, FASTEST[key], device, args.out)
        else:
            print(f"unknown recipe {recipe!r}", file=sys.stderr)
            return 2
    report(results, [float(t) for t in args.targets.split(",")], Path(args.out), device)
    return 0


def report(results: dict[str, list[dict]], targets: list[float], out: Path,
           device: torch.device) -> None:
    base = results.get("tutorial")
    base_best = max(r["test_acc"] for r in base) if base else None
    base_time = time_to(base, base_best) if base else None
    cols = ["recipe", "epochs", "train s", "best acc"]
    if base_best:
        cols.append(f"s to {base_best:.2%}")
        cols.append("vs tutorial")
    cols += [f"s to {t:.0%}" for t in targets]
    print("\n" + " | ".join(cols))
    print(" | ".join("---" for _ in cols))
    for name, rows in results.items():
        best = max(r["test_acc"] for r in rows)
        cells = [name, str(len(rows)), f"{rows[-1]['seconds']:.1f}", f"{best:.2%}"]
        if base_best:
            t = time_to(rows, base_best)
            cells.append("-" if t is None else f"{t:.1f}")
            cells.append("-" if t is None else f"{t / base_time:.2f}x")
        for target in targets:
            t = time_to(rows, target)
            cells.append("-" if t is None else f"{t:.1f}")
        print(" | ".join(cells))
    (out / "fmnist_speed.json").write_text(json.dumps(results, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in results.items():
        ax.plot([0] + [r["seconds"] for r in rows], [None] + [r["test_acc"] for r in rows],
                marker="o", label=name)
    if base_best:
        ax.axhline(base_best, color="grey", ls=":", lw=1, label=f"tutorial best {base_best:.2%}")
    ax.set_xlabel("training time (s, evaluation excluded)")
    ax.set_ylabel("test accuracy (10,000 images)")
    ax.set_ylim(0.85, 0.96)
    ax.set_title(f"Fashion-MNIST time to accuracy ({device.type})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fmnist_speed.png", dpi=120)
    print(f"\nwrote {out / 'fmnist_speed.png'} and {out / 'fmnist_speed.json'}")


if __name__ == "__main__":
    sys.exit(main())
