"""The main job: train on Fashion-MNIST, test on the official split, predict a few files."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cnnkit.data import builtin as builtins_
from cnnkit.runtime.predict import Classifier, Prediction
from cnnkit.training.session import TrainResult, train


@dataclass(frozen=True)
class DemoResult:
    """The finished run, the test images written as files and their predictions."""

    run: TrainResult
    samples: Path
    predictions: list[Prediction]
    seconds: float


def run_demo(out: str = "runs", epochs: int | None = None, samples: int = 8) -> DemoResult:
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
    predictions = Classifier.load(result.run_dir).predict(files, top_k=3)
    return DemoResult(result, folder, predictions, time.perf_counter() - start)
