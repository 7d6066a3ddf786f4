"""Abstaining below a confidence: the ``unknown`` answer of predict, the API and a server.

A classifier always names one of its classes, even for an image of none of them. With a
threshold P, a prediction whose top probability is below P answers :data:`UNKNOWN`
instead. :func:`coverage` tells, on labelled images, what each P costs (how many images
get no answer) and buys (the accuracy of the answered ones), so a user can choose P.

Plain Python and numpy only: a server or a command line imports it for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

UNKNOWN = "unknown"
# The thresholds the report tabulates.
REPORT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def check_threshold(value: Any, what: str = "--threshold") -> float | None:
    """``value`` as a probability in [0, 1] (None stays None); a clear error otherwise."""
    from cnnkit.base.errors import CnnkitError

    if value is None:
        return None
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = math.nan
    if isinstance(value, bool) or math.isnan(p) or not 0.0 <= p <= 1.0:
        # 60 reads as a percentage; 1.5 is no share of anything a user meant
        hint = f" (as a share: {p / 100:g})" if 5.0 <= p <= 100.0 else ""
        raise CnnkitError(f"{what} is a probability between 0 and 1, e.g. 0.6{hint}. "
                          f"Received: {value!r}")
    return p


def is_unknown(probability: float, threshold: float | None) -> bool:
    """Whether a top-class ``probability`` is below ``threshold`` (never with no threshold)."""
    return threshold is not None and probability < threshold


def label_or_unknown(label: str, probability: float, threshold: float | None) -> str:
    return UNKNOWN if is_unknown(probability, threshold) else label


@dataclass(frozen=True)
class Coverage:
    """At threshold ``threshold``: the share of images answered and their accuracy."""

    threshold: float
    answered: float  # share of the images whose top probability is at least the threshold
    accuracy: float  # accuracy on those (nan when none is answered)
    count: int  # images answered


def coverage(confidence: Sequence[float], correct: Sequence[bool],
             thresholds: Sequence[float] = REPORT_THRESHOLDS) -> list[Coverage]:
    """For each threshold, how many labelled images keep an answer and how many of those
    are right (``confidence``: top probabilities; ``correct``: whether the top class was
    the true one)."""
    import numpy as np

    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    out = []
    for t in thresholds:
        kept = conf >= t
        n = int(kept.sum())
        out.append(Coverage(float(t), n / max(len(conf), 1),
                            float(ok[kept].mean()) if n else math.nan, n))
    return out


@dataclass(frozen=True)
class Reliability:
    """Confidence bins: mean confidence, accuracy and count per bin, and the expected
    calibration error (the count-weighted gap between the two)."""

    edges: tuple[float, ...]
    confidence: tuple[float, ...]
    accuracy: tuple[float, ...]
    counts: tuple[int, ...]
    ece: float


def reliability(confidence: Sequence[float], correct: Sequence[bool],
                bins: int = 10) -> Reliability:
    """Equal-width bins of the top probability, as in a reliability diagram."""
    import numpy as np

    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    mean_conf, acc, counts = [], [], []
    ece = 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        counts.append(n)
        if n:
            c, a = float(conf[sel].mean()), float(ok[sel].mean())
            ece += n / len(conf) * abs(c - a)
        else:
            c = a = math.nan
        mean_conf.append(c)
        acc.append(a)
    return Reliability(tuple(float(e) for e in edges), tuple(mean_conf), tuple(acc),
                       tuple(counts), ece)
