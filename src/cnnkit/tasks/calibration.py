"""Calibrated probabilities: one temperature on the logits, fitted on held-out images.

A network trained with cross-entropy (and label smoothing above all) prints
probabilities that do not mean what they say: smoothing caps the top probability near
``1 - smoothing``, so a threshold of 0.9 rejects images the model gets right. Temperature
scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") divides the logits
by one number ``T`` chosen to minimise the negative log-likelihood of the validation
images: it changes no argmax (accuracy stays exactly the same) and makes the top
probability match the accuracy at that confidence. The expected calibration error
(:func:`cnnkit.tasks.threshold.reliability`) measures how far they are apart.

Scores may be logits or log-probabilities: ``softmax(z / T)`` is the same for both,
since they differ by one number per image. Plain NumPy (SciPy to fit): a server that
applies a stored temperature imports nothing heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.tasks.threshold import reliability

# The range searched for T (on a log scale): wide enough for any network seen in practice
# (smoothed nets need about 0.5-0.8, overconfident ones 1.5-3).
T_RANGE = (0.05, 20.0)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``(N, K)`` scores, in float64."""
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def tempered(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Log-probabilities of ``scores`` (logits or log-probabilities) at ``temperature``."""
    return log_softmax(np.asarray(scores, dtype=np.float64) / temperature)


def nll(scores: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes at ``temperature``."""
    lp = tempered(scores, temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``labels`` (class indices) under
    ``scores`` ``(N, K)``: a bounded 1-D search on ``log T``. When every top class is
    right, the NLL has no minimum: see :func:`_rule_of_succession`."""
    from scipy.optimize import minimize_scalar

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
        raise ValueError(f"need scores (N, K) and N labels; got {scores.shape} and "
                         f"{labels.shape}")
    lo, hi = (math.log(t) for t in T_RANGE)
    if (scores.argmax(1) == labels).all():
        return _rule_of_succession(scores, len(labels))
    found = minimize_scalar(lambda u: nll(scores, labels, math.exp(u)), bounds=(lo, hi),
                            method="bounded", options={"xatol": 1e-4})
    return float(math.exp(found.x))


def mean_confidence(scores: np.ndarray, temperature: float) -> float:
    """The mean top probability of ``scores`` at ``temperature``."""
    return float(np.exp(tempered(scores, temperature).max(1)).mean())


def _rule_of_succession(scores: np.ndarray, n: int) -> float:
    """The temperature for held-out images the model gets all right: there the NLL falls
    on as ``T`` shrinks (every image at 100%, whatever the next one's chance of being
    wrong), so the fit would end at the search's floor. Instead, the ``T`` at which the
    mean top probability is Laplace's estimate of the accuracy after ``n`` right of
    ``n``, ``(n + 1) / (n + 2)``."""
    from scipy.optimize import brentq

    lo, hi = (math.log(t) for t in T_RANGE)
    target = (n + 1) / (n + 2)

    def gap(u: float) -> float:
        return mean_confidence(scores, math.exp(u)) - target

    if gap(lo) <= 0:  # even the sharpest temperature is below it
        return T_RANGE[0]
    if gap(hi) >= 0:
        return T_RANGE[1]
    return float(math.exp(brentq(gap, lo, hi, xtol=1e-6)))


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did on the images it was fitted on (the
    validation split) and, when given, on images it never saw (the test split)."""

    temperature: float
    fitted_on: int  # validation images
    ece_before: float  # on the validation split, at T = 1
    ece_after: float
    nll_before: float
    nll_after: float

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": round(self.temperature, 6), "fitted_on": self.fitted_on,
                "ece_before": round(self.ece_before, 6), "ece_after": round(self.ece_after, 6),
                "nll_before": round(self.nll_before, 6), "nll_after": round(self.nll_after, 6)}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Calibration:
        """From a model card; ValueError when a field is missing or not a number."""
        if not isinstance(doc, dict):
            raise ValueError("the task's calibration must be an object")
        values = []
        for name in ("temperature", "fitted_on", "ece_before", "ece_after", "nll_before",
                     "nll_after"):
            v = doc.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"the task's calibration needs a number {name!r}; "
                                 f"received {v!r}")
            values.append(v)
        return cls(float(values[0]), int(values[1]), *(float(v) for v in values[2:]))


def calibrate(scores: np.ndarray, labels: np.ndarray, bins: int = 15) -> Calibration:
    """Fit a temperature on ``scores`` and ``labels`` and measure it there."""
    t = fit_temperature(scores, labels)
    return Calibration(t, len(labels), ece(scores, labels, 1.0, bins), ece(scores, labels, t, bins),
                       nll(scores, labels, 1.0), nll(scores, labels, t))


def ece(scores: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
        bins: int = 15) -> float:
    """Expected calibration error of the top probability at ``temperature``."""
    lp = tempered(scores, temperature)
    top = lp.argmax(1)
    return reliability(np.exp(lp.max(1)), top == np.asarray(labels), bins).ece
