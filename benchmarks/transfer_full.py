"""Full Fashion-MNIST, fine-tuned EfficientNet-Lite0 (meant for a GPU; runs anywhere).

The issue's anchors, from a plain script on an H100: 94.7% after 10 epochs at 64 px
(143 s); 95.4% after 6 epochs at 96 px with flip test-time augmentation (61 s); from
random weights at 64 px, 87.8% after 5 epochs. Prints one line per recipe and a table.

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

# 8 epochs, not the anchor's 6: on 2 CPU cores 8 epochs at AdamW 2e-3 scored 95.29%, and
# 95.02% when trained again and 95.08% with --seed 1 (docs/benchmarks.md); flips only, as
# flip+crop scored 94.55%.
FINE_TUNE_96 = {"mode": "fine-tune", "img_size": 96, "epochs": 8, "augment": "flip",
                "tta": True, "val_fraction": 0.0}

RECIPES = {
    "fine-tune-96": FINE_TUNE_96,
    # At 112 px (top feature map 4x4, not 3x3): 95.32% on 2 CPU cores, so resolution was
    # not what fine-tune-96 lacked (docs/benchmarks.md).
    "fine-tune-112": {**FINE_TUNE_96, "img_size": 112},
    # Random erasing, tried because the flip runs ended at 98% training accuracy against
    # 95.3% on test: 95.02% in 8 epochs, 95.20% in 10 (docs/benchmarks.md), so it cost
    # more fit than it gave back.
    "fine-tune-96-erase": {**FINE_TUNE_96, "augment": "flip+erase"},
    "fine-tune-96-erase-10": {**FINE_TUNE_96, "augment": "flip+erase", "epochs": 10},
    # Two more epochs with flips only, as the erasing runs said the recipe lacks fit, not
    # regularisation: 95.21%, within one run's spread of 8 epochs (95.02-95.29%).
    "fine-tune-96-10": {**FINE_TUNE_96, "epochs": 10},
    # fine-tune-96 testing the weight average of about the last 1,000 of its 3,744 steps:
    # 95.04%, against 95.02% for the same run's last-step weights (measured before the
    # ramp became TensorFlow's: docs/design-notes.md).
    "fine-tune-96-ema": {**FINE_TUNE_96, "ema": 0.999},
    # Batch norm by batch statistics while the base trains (a plain loop's model.train()),
    # the one thing a plain script does that fine-tune-96 does not; "-flat" also gives
    # every block the same rate, as a plain script's single optimizer group does. -flat
    # scored 95.31% on 2 CPU cores (training accuracy 99.3%): within the spread again.
    "fine-tune-96-bn": {**FINE_TUNE_96, "bn_stats": "update"},
    "fine-tune-96-bn-flat": {**FINE_TUNE_96, "bn_stats": "update", "lr_decay": 1.0},
    # Stochastic depth (timm's blocks skipped at random, rising to 10% at the last), the
    # regulariser timm trains EfficientNets with, tried as one that slows the fit less
    # than erasing does: 95.06% on one CPU core (training accuracy 97.5% against 98.0%),
    # beside fine-tune-96 --seed 1 at 95.08% (docs/benchmarks.md).
    "fine-tune-96-dp": {**FINE_TUNE_96, "drop_path": 0.1},
    # Two things a plain fine-tuning script may do that fine-tune-96 does not: SGD with
    # Nesterov momentum (at ten times AdamW's best rate, 2e-3 in the 64-px sweep), and a
    # batch of 64 (twice the steps at the same rate). Both fitted less (training
    # accuracy 96.2% and 96.8% in the last epoch against 98.0%) and tested lower, 94.04%
    # and 94.81% on one CPU core each (docs/benchmarks.md).
    "fine-tune-96-sgd": {**FINE_TUNE_96, "optimizer": "sgd", "lr": 0.02},
    "fine-tune-96-b64": {**FINE_TUNE_96, "batch_size": 64},
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
