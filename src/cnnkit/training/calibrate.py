"""At the end of training: the task fits its post-processing on the validation split.

For single-label classification that is a temperature (calibrated probabilities,
:mod:`cnnkit.tasks.calibration`) and the rule that answers "unknown" for images unlike
every class (:mod:`cnnkit.tasks.ood`). Both are chosen on images the model never trained
on (the test split stays untouched for measuring them); neither changes the weights, so
the model file's hash and its accuracy stay as they were. The model card keeps them.

The unknown rule also reads how far an image's penultimate features are from the known
classes: their statistics are fitted here on up to :data:`STATS_IMAGES` training images
(fewer for large inputs; the class means of what the model learned from) and kept in a
file beside the weights (:mod:`cnnkit.artifacts.featurestats`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.artifacts.featurestats import save_stats
from cnnkit.base import log
from cnnkit.data.imageset import ImageSet
from cnnkit.data.pipeline import Preprocess
from cnnkit.models.feature_distance import WithDistance
from cnnkit.models.interface import evaluating
from cnnkit.runtime.inference import autocast, view_outputs
from cnnkit.tasks.base import Task
from cnnkit.tasks.ood import MIN_HELD_OUT, FeatureStats, FlatFeatures, fit_stats
from cnnkit.training import codes_onnx
from cnnkit.training.features import extract

# Training images the feature statistics are fitted on (a seeded sample of larger splits):
# enough for class means and a shrunk covariance, one inference pass of at most this many.
STATS_IMAGES = 5000


def fit_on_validation(task: Task, model: nn.Module, val: ImageSet | None, pre: Preprocess,
                      device: torch.device, *, tta: bool = False, precision: str = "fp32",
                      channels_last: bool = False, train: ImageSet | None = None,
                      weights: Path | None = None,
                      architecture: dict[str, Any] | None = None) -> Task:
    """``task`` fitted on ``val`` (:meth:`~cnnkit.tasks.base.Task.fit_held_out`); the task
    as it was, said in one line, when there is no validation split or too small a one:
    the run still ends, with the model's own probabilities and no unknown rule. With
    ``train`` and the ``weights`` file, a task that reads a feature distance gets the
    features' statistics too (written beside ``weights``; ``architecture``: the card's,
    to find the features mode's codes graph)."""
    if not task.fits_held_out:
        return task
    (unfitted, instead), fits = task.held_out_unfitted, task.held_out_fits
    if val is None or len(val) == 0:
        log.warn(f"{unfitted}: the run has no validation split to fit {fits} on, so "
                 f"{instead}. Train with --val-fraction 0.1 (or a val/ folder) to fit them.")
        return task
    if len(val) < MIN_HELD_OUT:
        log.warn(f"{unfitted}: {log.plural(len(val), 'validation image')} are too few to "
                 f"fit {fits} on (at least {MIN_HELD_OUT}), so {instead}; use more images or "
                 "a larger --val-fraction.")
        return task
    net: nn.Module = model
    features: dict[str, Any] | None = None
    if task.reads_distance and train is not None and weights is not None and len(train):
        try:
            stats = feature_stats(model, train, pre, device, precision=precision,
                                  channels_last=channels_last, architecture=architecture)
        except FlatFeatures as e:
            log.warn(f"{e}, so 'unknown' reads the logits' energy alone, without the "
                     "feature distance: it cannot tell an image unlike the classes by its "
                     "features (retrain the model, e.g. with a smaller --lr).")
        else:
            features = save_stats(stats, weights)
            net = WithDistance(model, stats.means, stats.whiten, stats.iso).to(device)
    views, distances = view_outputs(net, val, pre, device, tta=tta, precision=precision,
                                    channels_last=channels_last)
    fitted = task.fit_held_out([v.astype(np.float64) for v in views],
                               val.labels.cpu().numpy(), distances=distances,
                               features=features)
    line = fitted.held_out_summary()
    if line:
        log.info(line)
    return fitted


def feature_stats(model: nn.Module, train: ImageSet, pre: Preprocess, device: torch.device,
                  *, precision: str = "fp32", channels_last: bool = False,
                  most: int | None = None, seed: int = 0,
                  architecture: dict[str, Any] | None = None) -> FeatureStats:
    """The class statistics of the penultimate features of (up to ``most`` of) the
    training images, as the model sees them at prediction (no augmentation): from the
    features mode's onnxruntime codes graph when it is already made for these weights
    (``architecture`` names it), else from torch."""
    most = most if most is not None else stats_images(pre.img_size)
    if len(train) > most:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        train = train.subset(pick[:most].sort().values)
    graph = None
    if (architecture is not None and device.type == "cpu"
            and codes_onnx.graph_path(model, pre, architecture).is_file()):
        graph = codes_onnx.runner(model, pre, device, architecture)
    with torch.inference_mode(), evaluating(model), autocast(device, precision):
        feats = extract(model, train, pre, device, channels_last=channels_last,
                        label="feature statistics", graph=graph)
    return fit_stats(feats.double().numpy(), train.labels.cpu().numpy(), len(train.classes))


def stats_images(side: int) -> int:
    """Training images the statistics are fitted on at input ``side``: :data:`STATS_IMAGES`
    for small images, fewer for large ones (the pass is eager torch's outside the
    features mode; docs/design-notes.md), never under 1,000."""
    return max(1000, min(STATS_IMAGES, STATS_IMAGES * 64 * 64 // (side * side)))
