"""At the end of training: the task fits its post-processing on the validation split.

For single-label classification that is a temperature (calibrated probabilities,
:mod:`cnnkit.tasks.calibration`) and the rule that answers "unknown" for images unlike
every class (:mod:`cnnkit.tasks.ood`). Both are chosen on images the model never trained
on (the test split stays untouched for measuring them); neither changes the weights, so
the model file's hash, its exports and its accuracy stay as they were. The model card
keeps them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnkit.base import log
from cnnkit.data.imageset import ImageSet
from cnnkit.data.pipeline import Preprocess
from cnnkit.runtime.inference import view_logits
from cnnkit.tasks.base import Task

# Fewer held-out images than this fit neither a temperature nor a quantile worth keeping.
MIN_IMAGES = 30


def fit_on_validation(task: Task, model: nn.Module, val: ImageSet | None, pre: Preprocess,
                      device: torch.device, *, tta: bool = False, precision: str = "fp32",
                      channels_last: bool = False) -> Task:
    """``task`` fitted on ``val`` (:meth:`~cnnkit.tasks.base.Task.fit_held_out`); the task
    as it was, said in one line, when there is no validation split or too small a one:
    the run still ends, with the model's own probabilities and no unknown rule."""
    if not task.fits_held_out:
        return task
    (unfitted, instead), fits = task.held_out_unfitted, task.held_out_fits
    if val is None or len(val) == 0:
        log.warn(f"{unfitted}: the run has no validation split to fit {fits} on, so "
                 f"{instead}. Train with --val-fraction 0.1 (or a val/ folder) to fit them.")
        return task
    if len(val) < MIN_IMAGES:
        log.warn(f"{unfitted}: {log.plural(len(val), 'validation image')} are too few to "
                 f"fit {fits} on (at least {MIN_IMAGES}), so {instead}; use more images or "
                 "a larger --val-fraction.")
        return task
    views = view_logits(model, val, pre, device, tta=tta, precision=precision,
                        channels_last=channels_last)
    fitted = task.fit_held_out([v.astype(np.float64) for v in views],
                               val.labels.cpu().numpy())
    line = fitted.held_out_summary()
    if line:
        log.info(line)
    return fitted
