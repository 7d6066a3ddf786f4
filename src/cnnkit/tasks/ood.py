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

At full size the energy alone tells unseen *similar* classes (the near case) no better
than the top probability, while a distance of the penultimate features to the class
means does (Lee et al. 2018, "A Simple Unified Framework for Detecting Out-of-Distribution
Samples and Adversarial Attacks"); the distance alone is the weaker score for images of
another kind (digits, photos). So a run keeps both: :class:`FeatureStats` (the class means
and a whitening of the features' shared covariance, fitted on training images) gives each
image its squared Mahalanobis distance to the nearest class, and the rule reads the two
scores as shares of the held-out known images (each "less strange than this"), keeps the
larger, and reads that again against the held-out images' own combined values. A rule
without the distance (older files, models whose features are unavailable) is the energy
alone, and the energy quantiles stay in every rule as its fallback.

Plain NumPy: a server imports nothing heavy for it.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

KEPT = 0.95  # share of the held-out known images that keep their answer
# Fewer held-out images than this fit neither a temperature nor a quantile worth keeping.
MIN_HELD_OUT = 30
LEVELS = 201  # stored quantiles of the known images' energies (every 0.5%)


def energy(logits: np.ndarray) -> np.ndarray:
    """``-logsumexp`` of each row of raw logits ``(N, K)``: lower is more familiar."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=1)
    return -(m + np.log(np.exp(z - m[:, None]).sum(axis=1)))


def _quantiles(values: np.ndarray) -> tuple[float, ...] | None:
    """:data:`LEVELS` increasing quantiles of the finite ``values`` (None: fewer than 2)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return None
    q = np.quantile(v, np.linspace(0.0, 1.0, LEVELS))
    return tuple(float(x) for x in np.maximum.accumulate(q))


def _share(values: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """Each value's share of the held-out images with a lower one, read from their
    quantiles (0 below all of them, 1 above all of them)."""
    q = np.asarray(quantiles)
    # np.interp needs increasing x: equal quantiles (a tie) get the higher level
    return np.interp(np.asarray(values, dtype=np.float64), q,
                     np.linspace(0.0, 1.0, len(q)), left=0.0, right=1.0)


def _check_quantiles(q: Any, name: str, where: str) -> tuple[float, ...]:
    if (not isinstance(q, list) or not 2 <= len(q) <= 10_001
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in q)
            or any(b < a for a, b in itertools.pairwise(q))):
        raise ValueError(f"{where}: unknown rule's {name} must be 2 to 10,001 increasing "
                         "numbers")
    return tuple(float(v) for v in q)


# Directions of the features' covariance kept whole; beyond them the covariance is one
# variance (the mean of the rest), so the statistics of a wide backbone (3,328 features
# of the features mode's taps) stay a few megabytes rather than the square of its width.
MAX_RANK = 512


@dataclass(frozen=True)
class FeatureStats:
    """Where the known classes sit in the model's penultimate features: each class's
    mean ``(K, D)``, a matrix ``W`` ``(D, r)`` and an isotropic weight ``iso`` of their
    shared covariance. With ``iso = 0`` (``r = D``), ``W`` whitens and an image's squared
    Mahalanobis distance to class ``c`` is ``|f W - mu_c W|^2``. With ``iso > 0``
    (``r < D``) the covariance is its top ``r`` directions plus one variance ``1 / iso``
    for the rest, as probabilistic PCA models it; its inverse is ``iso I`` less a part
    along those directions, so the distance is ``iso |f - mu_c|^2 - |f W - mu_c W|^2``."""

    means: np.ndarray
    whiten: np.ndarray
    iso: float = 0.0

    @property
    def dim(self) -> int:
        return int(self.whiten.shape[0])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Each row's squared distance to each class ``(N, K)``."""
        f = np.asarray(features, dtype=np.float64)
        m = self.means.astype(np.float64)
        z = f @ self.whiten
        centres = m @ self.whiten
        d = (z * z).sum(1)[:, None] - 2 * z @ centres.T + (centres * centres).sum(1)[None]
        if self.iso:
            d = self.iso * ((f * f).sum(1)[:, None] - 2 * f @ m.T + (m * m).sum(1)[None]) - d
        return d

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Each row's squared Mahalanobis distance to the nearest class mean."""
        return np.maximum(self.distances(features).min(axis=1), 0.0)


class FlatFeatures(ValueError):
    """Training features with no spread around their class means (a collapsed model gives
    every image the same features) or with non-finite values (a diverged one): there is
    no covariance to whiten, so no distance to measure."""


def fit_stats(features: np.ndarray, labels: np.ndarray, n_classes: int,
              rank: int = MAX_RANK) -> FeatureStats:
    """Class means and a whitening of the shared covariance of training ``features``
    ``(N, D)``, shrunk toward a multiple of the identity as Ledoit and Wolf choose (a
    covariance of more dimensions than images is otherwise singular); beyond ``rank``
    dimensions, its top ``rank`` directions and one variance for the rest.
    :class:`FlatFeatures` when the features give no covariance to whiten."""
    from sklearn.covariance import ledoit_wolf

    f = np.asarray(features, dtype=np.float64)
    if not np.isfinite(f).all():
        raise FlatFeatures("the model's features are not all finite numbers")
    y = np.asarray(labels)
    present = np.bincount(y, minlength=n_classes) > 0
    means = np.stack([f[y == c].mean(0) if present[c] else np.zeros(f.shape[1])
                      for c in range(n_classes)])
    centred = f - means[y]
    if len(f) < f.shape[1] > rank:  # fewer images than features: the images' Gram matrix
        values, vectors = _shrunk_top(centred, rank)
    else:
        cov, _ = ledoit_wolf(centred, assume_centered=True)
        values, vectors = np.linalg.eigh(cov)  # ascending
    if not values.max() > 0:
        raise FlatFeatures("the model's features are the same for every training image "
                           "of a class")
    values = np.maximum(values, values.max() * 1e-9)
    iso = 0.0
    if len(values) > rank:
        rest = float(values[:-rank].mean())
        values, vectors = values[-rank:], vectors[:, -rank:]
        iso = 1.0 / rest
        whiten = vectors * np.sqrt(np.maximum(iso - 1.0 / values, 0.0))[None]
    else:
        whiten = vectors / np.sqrt(values)[None]
    # a class with no training image is never the nearest: its mean sits far away
    far = np.abs(f).max() * 1e3 + 1e3
    keep = np.where(present[:, None], means, far)
    return FeatureStats(keep.astype(np.float32), whiten.astype(np.float32), iso)


def _shrunk_top(x: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """What ``np.linalg.eigh`` of ``ledoit_wolf(x, assume_centered=True)`` gives, for
    ``x`` ``(N, D)`` with ``N < D``, from the ``N x N`` Gram matrix instead of the
    ``D x D`` covariance: all ``D`` eigenvalues (ascending) and the eigenvectors of the
    top ``rank`` of them ``(D, rank)``. The covariance's other ``D - N`` eigenvalues are
    the shrinkage's ``s mu`` alone; those of their directions that fall in the top
    ``rank`` get a zero column (:func:`fit_stats` gives them no weight, as the rest's
    variance is theirs)."""
    n, d = x.shape
    gram = x @ x.T
    sq = np.einsum("ij,ij->i", x, x)  # each image's squared length
    trace = sq.sum() / n  # of the empirical covariance x'x / n
    mu = trace / d
    # Ledoit-Wolf's shrinkage as sklearn computes it: the sum of the squared entries of
    # x'x is that of x x', and that of (x^2)'(x^2) is the sum of the fourth powers of
    # the images' lengths
    delta_ = (gram * gram).sum() / n ** 2
    delta = (delta_ - mu * trace) / d
    beta = min(((sq * sq).sum() / n - delta_) / (d * n), delta)
    shrink = 0.0 if beta == 0 else beta / delta
    lam, u = np.linalg.eigh(gram)  # ascending; x'x shares its non-zero eigenvalues
    real = lam > lam.max() * n * np.finfo(np.float64).eps
    lam, u = lam[real], u[:, real]
    values = np.concatenate([np.zeros(d - len(lam)), lam / n]) * (1 - shrink) + shrink * mu
    top = min(rank, len(lam))
    vectors = np.zeros((d, rank))
    if top:
        vectors[:, rank - top:] = (x.T @ u[:, -top:]) / np.sqrt(lam[-top:])[None]
    return values, vectors


@dataclass(frozen=True)
class UnknownRule:
    """Unknown above an energy (and, with ``distances``, a feature distance): the known
    images' energies at :data:`LEVELS` quantiles (from 0 to 1), and the share ``kept`` of
    them that keep an answer.

    With a distance: ``distances`` holds the held-out images' distance quantiles,
    ``combined`` their combined scores' (the larger of the two shares), and ``features``
    names the file of :class:`FeatureStats` beside the weights (``file``, its
    ``sha256``, ``dim``). The energy alone (``quantiles``, :attr:`threshold`) stays the
    fallback when the distance is unavailable."""

    quantiles: tuple[float, ...]
    kept: float = KEPT
    fitted_on: int = 0  # held-out known images
    distances: tuple[float, ...] | None = None
    combined: tuple[float, ...] | None = None
    features: dict[str, Any] | None = None

    @property
    def threshold(self) -> float:
        """The energy above which an image is unknown by the energy alone."""
        return float(np.interp(self.kept, self.levels, self.quantiles))

    @property
    def uses_distance(self) -> bool:
        return self.distances is not None and self.combined is not None

    @property
    def levels(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(self.quantiles))

    def score(self, energies: np.ndarray, distances: np.ndarray | None = None
              ) -> np.ndarray:
        """Each image's unknown score: the share of the held-out known images less strange
        (0 below all of them, 1 above all of them). With the distance, strangeness is the
        larger of the energy's and the distance's shares; without it, the energy's."""
        e = _share(energies, self.quantiles)
        if distances is None or not self.uses_distance:
            return e
        assert self.distances is not None and self.combined is not None
        return _share(np.maximum(e, _share(distances, self.distances)), self.combined)

    def unknown(self, energies: np.ndarray, distances: np.ndarray | None = None
                ) -> np.ndarray:
        """Whether each image is unlike every class: its score above ``kept`` (by the
        energy alone: its energy above :attr:`threshold`)."""
        if distances is None or not self.uses_distance:
            return np.asarray(energies, dtype=np.float64) > self.threshold
        return self.score(energies, distances) > self.kept

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "score": "energy+distance" if self.uses_distance else "energy",
            "kept": self.kept, "fitted_on": self.fitted_on,
            "threshold": round(self.threshold, 6),
            "quantiles": [round(float(v), 6) for v in self.quantiles]}
        if self.uses_distance:
            assert self.distances is not None and self.combined is not None
            out.update(distances=[round(float(v), 6) for v in self.distances],
                       combined=[round(float(v), 6) for v in self.combined],
                       features=dict(self.features or {}))
        return out

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> UnknownRule:
        """A rule from a model card; ValueError with ``where`` when it is damaged."""
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: unknown rule must be a mapping")
        kind = doc.get("score", "energy")
        if kind not in ("energy", "energy+distance"):
            raise ValueError(f"{where}: unknown rule's score must be 'energy' or "
                             "'energy+distance'")
        q = _check_quantiles(doc.get("quantiles"), "quantiles", where)
        kept = doc.get("kept", KEPT)
        if isinstance(kept, bool) or not isinstance(kept, (int, float)) or not 0 < kept < 1:
            raise ValueError(f"{where}: unknown rule's 'kept' must be between 0 and 1; "
                             f"received {kept!r}")
        fitted = doc.get("fitted_on", 0)
        fitted = fitted if isinstance(fitted, int) and not isinstance(fitted, bool) else 0
        if kind == "energy":
            return cls(q, float(kept), fitted)
        feats = doc.get("features")
        if (not isinstance(feats, dict) or not isinstance(feats.get("file"), str)
                or not _SAFE_NAME.fullmatch(feats["file"])
                or not isinstance(feats.get("sha256"), str)
                or not isinstance(feats.get("dim"), int) or isinstance(feats["dim"], bool)
                or not 1 <= feats["dim"] <= 65_536):
            raise ValueError(f"{where}: unknown rule's 'features' must name its statistics "
                             "file (a plain .safetensors name), its sha256 and dim")
        return cls(q, float(kept), fitted,
                   _check_quantiles(doc.get("distances"), "distances", where),
                   _check_quantiles(doc.get("combined"), "combined", where),
                   {"file": feats["file"], "sha256": feats["sha256"], "dim": feats["dim"]})


# A statistics file's name in a card: a plain name in the model's own folder, nothing that
# walks out of it.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.safetensors")


def fit_rule(known_energies: np.ndarray, kept: float = KEPT,
             known_distances: np.ndarray | None = None,
             features: dict[str, Any] | None = None) -> UnknownRule:
    """The rule that keeps ``kept`` of these held-out known images' answers; with their
    feature ``known_distances`` (and the ``features`` file that gives them), the rule on
    both scores."""
    if not 0 < kept < 1:
        raise ValueError(f"kept must be between 0 and 1; got {kept!r}")
    e = np.asarray(known_energies, dtype=np.float64)
    q = _quantiles(e)
    if q is None:
        n = int(np.isfinite(e).sum())
        raise ValueError(f"an unknown rule needs 2 or more held-out images; got {n}")
    rule = UnknownRule(q, kept, int(np.isfinite(e).sum()))
    if known_distances is None:
        return rule
    d = np.asarray(known_distances, dtype=np.float64)
    qd = _quantiles(d)
    ok = np.isfinite(e) & np.isfinite(d)
    if qd is None or ok.sum() < 2:
        return rule
    combined = np.maximum(_share(e[ok], q), _share(d[ok], qd))
    qc = _quantiles(combined)
    return replace(rule, distances=qd, combined=qc, features=features)


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of telling ``unknown`` images from ``known`` ones by a
    score that is *higher for unknown* (0.5: chance, 1: every unknown above every known)."""
    from sklearn.metrics import roc_auc_score

    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(roc_auc_score(y, np.r_[known, unknown]))
