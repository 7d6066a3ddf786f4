"""Unknown inputs: an image unlike every class the model knows, told by its logits.

A classifier's top probability says how sure it is *between its classes*; it does not
say whether the image is of any of them (a Fashion-MNIST model calls a cat photo a
pullover at 95%). The energy score (Liu et al. 2020, "Energy-based Out-of-distribution
Detection") reads it from the logits themselves: ``energy = -logsumexp(logits)``. Images
like the training images drive some logit high (low energy); images unlike all of them
leave every logit low (high energy). It needs no change to the model and no extra
output, so every backend and export gives it; docs/design-notes.md ("Unknown inputs")
has the measurements against max-softmax and a feature-distance score.

:class:`UnknownRule` is the operating point, chosen on held-out known images (the
validation split, never trained on): it keeps the energies of those images at fixed
quantiles, and an image's *unknown score* is the share of known images with a lower
energy (0.5: as typical as the median known image; 0.999: stranger than 99.9% of them).
An image is unknown when its score is above ``kept`` (0.95: 95% of known images are
answered, 5% are not).

Plain NumPy: a server imports nothing heavy for it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

KEPT = 0.95  # share of the held-out known images that keep their answer
LEVELS = 201  # stored quantiles of the known images' energies (every 0.5%)


def energy(logits: np.ndarray) -> np.ndarray:
    """``-logsumexp`` of each row of raw logits ``(N, K)``: lower is more familiar."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1)
    return -(m + np.log(np.exp(z - m[:, None]).sum(axis=1)))


@dataclass(frozen=True)
class UnknownRule:
    """Unknown above an energy: the known images' energies at :data:`LEVELS` quantiles
    (from 0 to 1), and the share ``kept`` of them that keep an answer."""

    quantiles: tuple[float, ...]
    kept: float = KEPT
    fitted_on: int = 0  # held-out known images

    @property
    def threshold(self) -> float:
        """The energy above which an image is unknown."""
        return float(np.interp(self.kept, self.levels, self.quantiles))

    @property
    def levels(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(self.quantiles))

    def score(self, energies: np.ndarray) -> np.ndarray:
        """Each energy's unknown score: the share of the known images with a lower one
        (0 below all of them, 1 above all of them)."""
        e = np.asarray(energies, dtype=np.float64)
        q = np.asarray(self.quantiles)
        # np.interp needs increasing x: equal quantiles (a tie) get the higher level
        return np.interp(e, q, self.levels, left=0.0, right=1.0)

    def unknown(self, energies: np.ndarray) -> np.ndarray:
        """Whether each image is unlike every class (its energy above :attr:`threshold`)."""
        return np.asarray(energies, dtype=np.float64) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"score": "energy", "kept": self.kept, "fitted_on": self.fitted_on,
                "threshold": round(self.threshold, 6),
                "quantiles": [round(float(v), 6) for v in self.quantiles]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> UnknownRule:
        """A rule from a model card; ValueError with ``where`` when it is damaged."""
        q = doc.get("quantiles") if isinstance(doc, dict) else None
        kept = doc.get("kept", KEPT) if isinstance(doc, dict) else None
        if (doc.get("score", "energy") if isinstance(doc, dict) else None) != "energy":
            raise ValueError(f"{where}: unknown rule's score must be 'energy'")
        if (not isinstance(q, list) or not 2 <= len(q) <= 10_001
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) for v in q)
                or any(b < a for a, b in itertools.pairwise(q))):
            raise ValueError(f"{where}: unknown rule's quantiles must be 2 to 10,001 "
                             "increasing numbers")
        if isinstance(kept, bool) or not isinstance(kept, (int, float)) or not 0 < kept < 1:
            raise ValueError(f"{where}: unknown rule's 'kept' must be between 0 and 1; "
                             f"received {kept!r}")
        fitted = doc.get("fitted_on", 0)
        return cls(tuple(float(v) for v in q), float(kept),
                   int(fitted) if isinstance(fitted, int) and not isinstance(fitted, bool)
                   else 0)


def fit_rule(known_energies: np.ndarray, kept: float = KEPT) -> UnknownRule:
    """The rule that keeps ``kept`` of these held-out known images' answers."""
    e = np.asarray(known_energies, dtype=np.float64)
    e = e[np.isfinite(e)]
    if len(e) < 2:
        raise ValueError(f"an unknown rule needs 2 or more held-out images; got {len(e)}")
    if not 0 < kept < 1:
        raise ValueError(f"kept must be between 0 and 1; got {kept!r}")
    q = np.quantile(e, np.linspace(0.0, 1.0, LEVELS))
    return UnknownRule(tuple(float(v) for v in np.maximum.accumulate(q)), kept, len(e))


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of telling ``unknown`` images from ``known`` ones by a
    score that is *higher for unknown* (0.5: chance, 1: every unknown above every known)."""
    from sklearn.metrics import roc_auc_score

    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(roc_auc_score(y, np.r_[known, unknown]))
