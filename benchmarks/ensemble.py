"""Test accuracy of trained runs alone and of their averaged predictions (an ensemble).

Measures how much of the gap between one fine-tuned model and the next point of accuracy
is run-to-run variance: averaging two runs' log-probabilities cancels some of it. The
ensemble is several models, so its figure is reported beside, never as, one model's.

    python benchmarks/ensemble.py runs/a/fashion-mnist-efficientnet_lite0 runs/b/... --tta
"""

from __future__ import annotations

import argparse

from cnnkit.data.sources import load_eval_set
from cnnkit.runtime.predict import Classifier
from cnnkit.tasks.metrics import compute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders trained on the same classes")
    ap.add_argument("--data", default="fashion-mnist", help="data whose test split to use")
    ap.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    total, labels, classes = None, None, None
    decoded = {}  # runs with the same preprocessing share one decoded test set
    for run in args.runs:
        clf = Classifier.load(run, args.device)
        if classes is not None and clf.classes != classes:
            raise SystemExit(f"error: {run} was trained on other classes than {args.runs[0]}")
        classes = clf.classes
        pre = clf.card.preprocess
        if pre not in decoded:
            decoded[pre] = load_eval_set(args.data, pre, classes)
        test = decoded[pre]
        scores = clf.log_probs(test, tta=args.tta)
        labels = test.labels
        print(f"  {run}: {compute(scores, labels, classes).accuracy:.2%}", flush=True)
        total = scores if total is None else total + scores
    assert total is not None and labels is not None and classes is not None
    mean = (total / len(args.runs)).log_softmax(1)
    acc = compute(mean, labels, classes).accuracy
    print(f"ensemble of {len(args.runs)} (averaged log-probabilities): {acc:.2%}")


if __name__ == "__main__":
    main()
