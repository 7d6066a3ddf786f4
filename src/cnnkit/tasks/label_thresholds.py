"""Per-label decision thresholds for multi-label answers, chosen on validation images.

A sigmoid output is a probability per label; where to cut it depends on the label (a
rare one is seldom above 0.5 even when present). Each label gets the threshold that
maximises its F1 on the validation images: the midpoint between two neighbouring
scores, so the cut generalises rather than sitting on one image's score. A label with
fewer than :data:`MIN_POSITIVES` positive validation images keeps :data:`DEFAULT`
(too few to choose from without fitting noise).

Plain numpy: a server or a command line imports it for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT = 0.5
MIN_POSITIVES = 5


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """The cut of ``scores`` that maximises F1 against boolean ``truth``, and that F1."""
    positives = int(truth.sum())
    if positives == 0:
        return DEFAULT, 0.0
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order].astype(np.int64)
    tp = np.cumsum(t)
    answered = np.arange(1, len(s) + 1)
    # cut only between different scores: images with equal scores get the same answer
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    f1 = 2 * tp[ends] / (answered[ends] + positives)
    best = int(np.argmax(f1))  # the first maximum: the highest such cut
    j = ends[best]
    below = s[j + 1] if j + 1 < len(s) else max(0.0, s[j] - 1e-3)
    return _short_cut(float(s[j]), float(below)), float(f1[best])


def _short_cut(lowest_in: float, highest_out: float) -> float:
    """The midpoint of two neighbouring scores, to 6 decimals (as model.json shows it)
    where that still falls between them, else the exact midpoint, else (scores one
    float32 step apart, as sigmoids near 1 are) the lowest admitted score itself: the
    cut never lands above the score it admits, in float64 or float32 comparisons."""
    mid = (lowest_in + highest_out) / 2
    for cut in (round(mid, 6), mid):
        if (highest_out < cut <= lowest_in
                and np.float32(highest_out) < np.float32(cut) <= np.float32(lowest_in)):
            return cut
    return lowest_in


def choose_thresholds(probs: Any, targets: Any) -> tuple[list[float], list[int]]:
    """Each label's threshold from validation ``probs`` ``(N, K)`` and multi-hot
    ``targets``, and the labels left at the default (too few positive images)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets) > 0.5
    out, defaulted = [], []
    for k in range(p.shape[1]):
        if int(y[:, k].sum()) < MIN_POSITIVES:
            out.append(DEFAULT)
            defaulted.append(k)
            continue
        out.append(best_f1_threshold(p[:, k], y[:, k])[0])
    return out, defaulted


def check_thresholds(values: Sequence[Any], classes: Sequence[str], where: str) -> list[float]:
    """Stored thresholds as floats in [0, 1], one per label, or a clear error."""
    from cnnkit.base.errors import CnnkitError

    if len(values) != len(classes):
        raise CnnkitError(f"{where} holds {len(values)} thresholds for {len(classes)} labels; "
                          "use the model.json saved with the weights.")
    out = []
    for name, v in zip(classes, values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise CnnkitError(f"{where}: the threshold of label {name!r} must be a number in "
                              f"[0, 1]. Received: {v!r}")
        out.append(float(v))
    return out
