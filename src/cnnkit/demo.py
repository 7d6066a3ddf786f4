"""The main job: train on Fashion-MNIST, test on the official split, predict a few files."""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from cnnkit import log
from cnnkit.data import builtin as builtins_
from cnnkit.predict import Classifier
from cnnkit.training.session import train


def run_demo(out: str = "runs", epochs: int | None = None, samples: int = 8) -> Path:
    start = time.perf_counter()
    result = train("fashion-mnist", out=out, epochs=epochs)
    folder = result.run_dir / "samples"
    folder.mkdir(exist_ok=True)
    _, _, test = builtins_.load_builtin("fashion-mnist")
    files = []
    for i in range(samples):
        idx = i * 997 % len(test)
        true = test.classes[int(test.labels[idx])]
        path = folder / f"test{idx:05d}_{true.replace('/', '_').replace(' ', '_')}.png"
        Image.fromarray(test.images[idx, 0].numpy()).save(path)
        files.append(str(path))
    clf = Classifier.load(result.run_dir)
    from cnnkit.cli.tables import print_predictions

    log.info("\npredictions for a few test images (file names carry the true class):")
    print_predictions(clf.predict(files, top_k=3))
    log.info(f"\ntest accuracy {result.test_accuracy:.2%} on the official 10,000 test images; "
             f"{time.perf_counter() - start:.0f}s in all")
    log.info(f"run folder: {result.run_dir}")
    log.info(f"  predict:  cnnkit predict {result.run_dir} {folder}")
    log.info(f"  evaluate: cnnkit evaluate {result.run_dir} fashion-mnist")
    return result.run_dir
