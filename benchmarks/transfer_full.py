"""Full Fashion-MNIST, fine-tuned EfficientNet-Lite0 (meant for a GPU; runs anywhere).

Each recipe is ``fine-tune-96`` or one change to it, so that what a recipe varies is
visible and the shared options live once; the issue's anchors, the current figure of
every recipe and the history of attempts are in docs/benchmarks.md. Prints one line
per recipe and a table.

    python benchmarks/transfer_full.py --device cuda
    python benchmarks/transfer_full.py --device cuda --recipes fine-tune-96
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cnnkit

# The recipe: 8 epochs at 96 px, flips only, no validation split, flip TTA at test time.
FINE_TUNE_96 = {"mode": "fine-tune", "img_size": 96, "epochs": 8, "augment": "flip",
                "tta": True, "val_fraction": 0.0}

RECIPES = {
    "fine-tune-96": FINE_TUNE_96,
    # Resolution: the top feature map is 4x4 at 112 px, 3x3 at 96.
    "fine-tune-112": {**FINE_TUNE_96, "img_size": 112},
    # Regularisation by random erasing, in 8 and in 10 epochs.
    "fine-tune-96-erase": {**FINE_TUNE_96, "augment": "flip+erase"},
    "fine-tune-96-erase-10": {**FINE_TUNE_96, "augment": "flip+erase", "epochs": 10},
    # More fit: two more epochs with flips only.
    "fine-tune-96-10": {**FINE_TUNE_96, "epochs": 10},
    # Testing the weight average of the last steps instead of the last step's weights.
    "fine-tune-96-ema": {**FINE_TUNE_96, "ema": 0.999},
    # What a plain training loop does: batch norm by batch statistics while the base
    # trains (model.train()); "-flat" also gives every block the same rate, as a plain
    # script's single optimizer group does.
    "fine-tune-96-bn": {**FINE_TUNE_96, "bn_stats": "update"},
    "fine-tune-96-bn-flat": {**FINE_TUNE_96, "bn_stats": "update", "lr_decay": 1.0},
    # Stochastic depth (timm's blocks skipped at random, up to 10% at the last block),
    # the regulariser timm trains EfficientNets with.
    "fine-tune-96-dp": {**FINE_TUNE_96, "drop_path": 0.1},
    # Two more things a plain fine-tuning script may do: SGD with Nesterov momentum (at
    # ten times AdamW's best rate, as there is no SGD sweep), and a batch of 64.
    "fine-tune-96-sgd": {**FINE_TUNE_96, "optimizer": "sgd", "lr": 0.02},
    "fine-tune-96-b64": {**FINE_TUNE_96, "batch_size": 64},
    # The 64-px anchors: fine-tuned, and from random weights.
    "fine-tune-64": {"mode": "fine-tune", "img_size": 64, "epochs": 10, "augment": "flip",
                     "val_fraction": 0.0},
    "scratch-64": {"mode": "scratch", "img_size": 64, "epochs": 5, "augment": "flip",
                   "val_fraction": 0.0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="fine-tune-96,fine-tune-64,scratch-64")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="where to write results.json")
    ap.add_argument("--seed", type=int, default=0,
                    help="training seed; another seed measures a recipe's run-to-run spread")
    ap.add_argument("--runs", default=None,
                    help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs or scratch
        for name in args.recipes.split(","):
            recipe = RECIPES[name.strip()]
            start = time.perf_counter()
            result = cnnkit.train("fashion-mnist", model="efficientnet_lite0",
                                  device=args.device, out=runs, plots=False, seed=args.seed,
                                  **recipe)
            rows.append({"recipe": name, "options": recipe, "seed": args.seed,
                         "test_acc": result.test_accuracy,
                         "train_s": result.history[-1]["elapsed_s"],
                         "wall_s": time.perf_counter() - start,
                         "device": result.config.device})
            print(f"  {name}: {result.test_accuracy:.2%} after {len(result.history)} epochs, "
                  f"{rows[-1]['train_s']:.1f}s of training", flush=True)
    print(f"\n{'recipe':<14} {'test acc':>9} {'train s':>8} {'wall s':>7}  device")
    for r in rows:
        print(f"{r['recipe']:<14} {r['test_acc']:>9.2%} {r['train_s']:>8.1f} {r['wall_s']:>7.0f}"
              f"  {r['device']}")
    print("target: fine-tuned EfficientNet-Lite0 >= 95.5% test accuracy")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
