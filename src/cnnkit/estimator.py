"""A scikit-learn-style estimator over :func:`cnnkit.train` and :class:`Classifier`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.config import TrainConfig
from cnnkit.metrics import EvalResult
from cnnkit.predict import Classifier, ImageInput, Prediction


class ImageClassifier:
    """``ImageClassifier(model="seed-cnn", epochs=3).fit("fashion-mnist").predict(files)``.

    The constructor only stores options (any :class:`TrainConfig` field but ``data``);
    ``fit`` trains and returns ``self``; learned state ends in ``_``.
    """

    def __init__(self, **options: Any) -> None:
        if "data" in options:
            raise TypeError("pass the data to fit(), not to ImageClassifier()")
        TrainConfig.from_dict({"data": "shapes", **options})  # unknown options fail now
        self.options = options

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return dict(self.options)

    def set_params(self, **options: Any) -> ImageClassifier:
        TrainConfig.from_dict({"data": "shapes", **self.options, **options})
        self.options = {**self.options, **options}
        return self

    def fit(self, data: str) -> ImageClassifier:
        from cnnkit.training.session import train

        result = train(data, **self.options)
        self.run_dir_: Path = result.run_dir
        self.history_ = result.history
        self.test_ = result.test
        self.classifier_ = Classifier.load(result.run_dir, self.options.get("device", "auto"))
        self.classes_ = self.classifier_.classes
        return self

    def predict(self, images: Sequence[ImageInput]) -> list[str]:
        return [p.label for p in self.classifier_.predict(images, top_k=1)]

    def predict_top(self, images: Sequence[ImageInput], top_k: int = 5) -> list[Prediction]:
        return self.classifier_.predict(images, top_k=top_k)

    def predict_proba(self, images: Sequence[ImageInput]) -> np.ndarray:
        return self.classifier_.predict_proba(images)

    def score(self, data: str) -> float:
        return self.evaluate(data).accuracy

    def evaluate(self, data: str) -> EvalResult:
        return self.classifier_.evaluate(data)
