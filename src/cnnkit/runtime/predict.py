"""Predict with a trained model: files, folders, globs, PIL images or arrays in; the
task's answers out (for single-label classification, the top-k classes).

A :class:`Classifier` is the runtime's :class:`~cnnkit.runtime.runner.ModelRunner`
(loading, backends, decoding, batches of scores) with the task's post-processing:
:meth:`Classifier.predict` hands the probabilities to ``card.task.answers``, and
:meth:`Classifier.evaluate` the scores to ``card.task.evaluate``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import CorruptImageError
from cnnkit.runtime.runner import ImageInput, ModelRunner
from cnnkit.tasks.base import Result, Unreadable
from cnnkit.tasks.single_label import Prediction
from cnnkit.tasks.threshold import check_threshold

if TYPE_CHECKING:
    from cnnkit.data.imageset import ImageSet

__all__ = ["Classifier", "ImageInput", "Prediction", "load_predictor"]


class Classifier(ModelRunner):
    """A trained model ready to predict: ``cnnkit.load("runs/x").predict(["a.jpg"])``."""

    def predict(self, images: Sequence[ImageInput] | ImageInput, *, top_k: int = 5,
                batch_size: int = 64, tta: bool = False,
                threshold: float | None = None) -> list[Any]:
        """The task's answer for each image; for single-label classification a
        :class:`Prediction`: the top-``k`` classes with probabilities.

        An image unlike every class the model knows is labelled ``"unknown"`` (the run's
        unknown rule, chosen on its validation split; ``unknown_score`` says how strange
        it is), and with ``threshold`` P, so is an image whose top probability is below P
        (the report's confidence plot and table help to choose P).
        There is one answer per image, in order: an unreadable image's is an
        :class:`~cnnkit.tasks.base.Unreadable` (``error`` says why, ``label`` is None) and
        a warning names it; if none can be read, that is an error.
        """
        threshold = check_threshold(threshold, "threshold")
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
            raise CnnkitError(f"top_k must be a whole number of at least 1. Received: "
                              f"{log.shown(top_k)}")
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, bytes)):
            images = [images]
        arrays, names, unread = [], [], {}
        for i, item in enumerate(images):
            name = str(item) if isinstance(item, (str, os.PathLike)) else f"<image {i}>"
            try:
                arrays.append(self.decode_image(item))
                names.append(name)
            except CorruptImageError as exc:
                unread[i] = Unreadable(name, str(exc))
            except FileNotFoundError:
                unread[i] = Unreadable(name, f"{log.quoted(name)}: file not found")
        if unread and not names:
            first = next(iter(unread.values())).error
            more = f" (and {len(unread) - 1} more)" if len(unread) > 1 else ""
            raise CnnkitError(f"No image could be read: {first}{more}.")
        for answer in unread.values():
            log.warn(f"unreadable, answered with its error: {answer.error}")
        self.say_note()
        rows = self.answer_inputs(arrays, batch_size=batch_size, tta=tta)
        read = iter(self.task.answers(rows, names, self.classes, top_k=top_k,
                                      threshold=threshold))
        return [unread[i] if i in unread else next(read) for i in range(len(names) + len(unread))]

    def evaluate(self, data: str, *, tta: bool = False, batch_size: int = 256) -> Result:
        """The task's metrics on a built-in set's test split, a folder or a CSV."""
        from cnnkit.data.sources import load_eval_set

        imageset = load_eval_set(data, self.card.preprocess, self.classes)
        return self.evaluate_set(imageset, tta=tta, batch_size=batch_size)

    def evaluate_set(self, imageset: ImageSet, *, tta: bool = False,
                     batch_size: int = 256) -> Result:
        """The task's metrics on decoded, labelled images."""
        scores = self.log_probs(imageset, tta=tta, batch_size=batch_size)
        return self.task.evaluate(scores, imageset.labels, self.classes)


def load_predictor(model: str, device: str = "auto", backend: str = "auto") -> Classifier:
    """A run folder, model file or ONNX file; or a pretrained model's name for its
    ImageNet classes."""
    return Classifier.open(model, device, backend)
