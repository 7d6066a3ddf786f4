"""Does predict answer as the run was tested? A pretrained backbone on a grey built-in set.

Trains EfficientNet-Lite0's features on Fashion-MNIST (grey, 28 px items that fill their
frame; a seeded subset) through ``cnnkit.train``, then asks the run about the first test
images through ``Classifier.predict`` on plain uint8 arrays, as a user's images arrive:

- the same grey items: accuracy against the run's own test figure on them (the card's
  crop and resizing must be the test's);
- the same items tinted brown, blue and red (colour the model never saw in training):
  accuracy and the share answered "unknown", against the grey items'.

    python benchmarks/consistency.py                         # ~4 min on 2 cores
    python benchmarks/consistency.py --per-class 300 --img-size 224 --images 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

import cnnkit
from cnnkit.artifacts.rundir import RunDir
from cnnkit.data import fashion_mnist
from cnnkit.evaluation import held_out_test

TINTS = {"grey": (1.0, 1.0, 1.0), "brown": (1.0, 0.65, 0.35), "blue": (0.35, 0.55, 1.0),
         "red": (1.0, 0.25, 0.25)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=100, help="training images per class")
    ap.add_argument("--img-size", type=int, default=96)
    ap.add_argument("--images", type=int, default=500, help="test images asked about")
    args = ap.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        run = cnnkit.train("fashion-mnist", model="efficientnet_lite0", mode="features",
                           per_class=args.per_class, img_size=args.img_size, plots=False,
                           out=out).run_dir
        clf = cnnkit.load(run)
        folder = RunDir(run)
        test = held_out_test(folder, folder.train_config(), clf)
        n = min(args.images, len(test))
        tested = clf.log_probs(test.subset(np.arange(n))).exp().numpy().argmax(1)
        labels = test.labels[:n].numpy()
        _, _, items, _ = fashion_mnist.load()
        grey = [np.asarray(a) for a in items[:n]]
        assert all((g == t[0].numpy()).all() for g, t in zip(grey, test.images[:n]))
        card = clf.card.preprocess
        print(f"run: {run.name}, input {card.img_size} px, crop {card.crop_pct:g}, "
              f"grey {card.grey}; {n} test images")
        print(f"{'images':<8} {'how':<14} {'accuracy':>9} {'unknown':>8}")
        print(f"{'grey':<8} {'run tested':<14} {np.mean(tested == labels):>9.2%} {'':>8}")
        for name, tint in TINTS.items():
            images = grey if name == "grey" else [
                np.clip(g[..., None] * np.array(tint), 0, 255).astype(np.uint8) for g in grey]
            answers = clf.predict(images)
            acc = np.mean([clf.classes.index(a.top[0][0]) == y for a, y in zip(answers, labels)])
            unknown = np.mean([bool(a.unlike) for a in answers])
            print(f"{name:<8} {'predict':<14} {acc:>9.2%} {unknown:>8.1%}")
    print(f"{time.monotonic() - began:.0f} s in all")


if __name__ == "__main__":
    main()
