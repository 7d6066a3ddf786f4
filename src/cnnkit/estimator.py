"""A scikit-learn estimator over :func:`cnnkit.train` and :class:`Classifier`.

``ImageClassifier(model="lenet5", epochs=5).fit(X, y).predict(X)`` with uint8 image
arrays, or ``.fit("digits")`` with anything ``cnnkit train`` takes as DATA. It follows
scikit-learn's rules, so ``clone``, ``get_params``/``set_params``, pipelines and
``GridSearchCV`` work: the constructor stores its arguments as given (``None`` means
:class:`TrainConfig`'s default), ``fit`` returns ``self``, learned state ends in ``_``.

Arrays are written once as a class-per-folder tree of PNG files under
``<out>/arrays/<digest>`` (named by their content, so refitting on the same arrays
reuses it): training then reads them like any folder, through the one decoder, and the
run folder can be evaluated or resumed later like any other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.folders import safe_name
from cnnkit.runtime.predict import Classifier, ImageInput, Prediction
from cnnkit.tasks.base import Unreadable
from cnnkit.tasks.metrics import EvalResult

MIN_ARRAY_SIZE = 28  # smaller arrays are upsized to this, as the built-in digits set is


class ImageClassifier(ClassifierMixin, BaseEstimator):
    """An image classifier trained by cnnkit, with scikit-learn's interface.

    Each argument is the :class:`TrainConfig` field of that name (``cnnkit train``'s
    option); ``None`` leaves it to cnnkit. ``options`` takes any other field, e.g.
    ``options={"schedule": "cosine"}``.
    """

    def __init__(self, model: str | None = None, *, mode: str | None = None,
                 epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, optimizer: str | None = None,
                 weight_decay: float | None = None, augment: str | None = None,
                 img_size: int | None = None, channels: int | None = None,
                 val_fraction: float | None = None, test_fraction: float | None = None,
                 seed: int | None = None, patience: int | None = None,
                 tta: bool | None = None, device: str | None = None, out: str | None = None,
                 plots: bool | None = None, options: dict[str, Any] | None = None) -> None:
        self.model = model
        self.mode = mode
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.augment = augment
        self.img_size = img_size
        self.channels = channels
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.patience = patience
        self.tta = tta
        self.device = device
        self.out = out
        self.plots = plots
        self.options = options

    def _train_options(self) -> tuple[dict[str, Any], TrainConfig]:
        """The given arguments as TrainConfig fields, and the config they make (so that
        unknown, clashing or bad values fail before anything is written)."""
        given = {k: v for k, v in self.get_params(deep=False).items()
                 if v is not None and k != "options"}
        extra = dict(self.options or {})
        clash = sorted(set(given) & set(extra))
        if clash:
            raise CnnkitError(f"{', '.join(clash)} given both as an argument and in options=; "
                              "give each once.")
        if "data" in extra:
            raise CnnkitError("pass the data to fit(), not in options=.")
        options = {**given, **extra}
        return options, TrainConfig.from_dict({"data": "shapes", **options})

    def fit(self, X: Any, y: Any = None) -> ImageClassifier:
        """Train on uint8 images ``X`` (N x H x W, or N x H x W x C with C = 1 or 3) with
        labels ``y``; or on ``X`` = a built-in set's name, a folder or a CSV (no ``y``)."""
        from cnnkit.training.session import train

        options, config = self._train_options()
        if isinstance(X, (str, os.PathLike)):
            if y is not None:
                raise CnnkitError("fit(DATA) takes its labels from the data; pass y only "
                                  "with image arrays.")
            data, labels = str(X), None
        else:
            images, labels = _check_arrays(X, y)
            data = str(_write_arrays(images, labels, Path(config.out)))
            options.setdefault("img_size", max(images.shape[1], MIN_ARRAY_SIZE))
            options.setdefault("channels", 1 if images.ndim == 3 else images.shape[3])
            options.setdefault("test_fraction", 0.0)  # the caller holds out its own test data
        result = train(data, **options)
        self.run_dir_: Path = result.run_dir
        self.history_ = result.history
        self.test_ = result.test
        self.classifier_ = Classifier.load(result.run_dir, config.device)
        if labels is None:
            self.classes_ = np.array(self.classifier_.classes)
            self._columns = np.arange(len(self.classes_))
        else:
            self.classes_ = np.unique(labels)
            folders = list(self.classifier_.classes)
            self._columns = np.array([folders.index(safe_name(str(c))) for c in self.classes_])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, len(classes_))``, columns in the order of ``classes_``."""
        check_is_fitted(self, "classifier_")
        return self.classifier_.predict_proba(_images(X))[:, self._columns]

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each image, as a value of ``classes_``."""
        return self.classes_[self.predict_proba(X).argmax(1)]

    def predict_top(self, images: Sequence[ImageInput], top_k: int = 5
                    ) -> list[Prediction | Unreadable]:
        """The top-``k`` classes of each image, one answer per image in order (an
        unreadable one's is an :class:`~cnnkit.tasks.base.Unreadable`)."""
        check_is_fitted(self, "classifier_")
        return self.classifier_.predict(_images(images), top_k=top_k)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy on arrays ``X`` with labels ``y``, or on DATA's test images."""
        if isinstance(X, (str, os.PathLike)):
            return self.evaluate(str(X)).accuracy
        return super().score(X, y, sample_weight=sample_weight)

    def evaluate(self, data: str) -> EvalResult:
        check_is_fitted(self, "classifier_")
        return self.classifier_.evaluate(data)


def _check_arrays(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(X)
    if y is None:
        raise CnnkitError("fit(X) with image arrays needs their labels: fit(X, y).")
    labels = np.asarray(y)
    if images.dtype != np.uint8:
        raise CnnkitError(f"X must hold uint8 images (0-255). Received: dtype {images.dtype}; "
                          "scale to 0-255 and use X.astype(np.uint8).")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise CnnkitError(f"X must be N x H x W (grey) or N x H x W x C with C = 1 or 3. "
                          f"Received: shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise CnnkitError(f"y must hold one label per image: {len(images)} images, y of "
                          f"shape {labels.shape}.")
    names = {safe_name(str(c)) for c in np.unique(labels)}
    if len(names) != len(np.unique(labels)):
        raise CnnkitError("Some labels in y have the same name as text; use distinct labels.")
    return images, labels


def _images(X: Any) -> list[Any]:
    """Images for the Classifier: the rows of an array, or a sequence as it is."""
    if isinstance(X, np.ndarray):
        if X.ndim not in (3, 4):
            raise CnnkitError(f"X must be a batch of images (N x H x W or N x H x W x C). "
                              f"Received: shape {X.shape}; for one image pass X[None].")
        return list(X)
    if isinstance(X, (str, os.PathLike)):
        return [X]
    return list(X)


def _write_arrays(images: np.ndarray, labels: np.ndarray, out: Path) -> Path:
    """``out/arrays/<digest>/<label>/<n>.png``, written once per distinct content."""

    digest = hashlib.sha256()
    digest.update(repr((images.shape, labels.dtype.str)).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.asarray([str(v) for v in labels.tolist()]).astype("U").tobytes())
    folder = out / "arrays" / digest.hexdigest()[:16]
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".writing-"))
    try:
        for i, (image, label) in enumerate(zip(images, labels.tolist())):
            target = staging / safe_name(str(label))
            target.mkdir(exist_ok=True)
            arr = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
            Image.fromarray(arr).save(target / f"{i:06d}.png")
        try:
            staging.rename(folder)  # atomic: a folder is there whole or not at all
        except OSError:
            if not folder.is_dir():  # not a concurrent fit writing the same arrays
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
