"""Multi-label metrics from per-label probabilities, by scikit-learn's implementations.

mAP (macro: the mean of the labels' average precisions; micro: one average precision
over every image-label pair), per-label precision, recall, F1 and AP at the model's
thresholds, exact match (every label of an image right), Hamming loss (the share of
image-label pairs wrong), precision-recall curves per label, and how often labels occur
together (in the truth and in the answers). A label with no positive image in the
evaluated set has no AP (``None``): macro mAP averages over the labels that have one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RECALL_LEVELS = 101  # points of each stored precision-recall curve (as COCO's)


@dataclass(frozen=True)
class MultiLabelResult:
    classes: tuple[str, ...]
    n: int
    loss: float  # binary cross-entropy summed over the labels, averaged over the images
    map_macro: float
    map_micro: float
    exact_match: float
    hamming_loss: float
    per_label: list[dict[str, Any]]
    micro: dict[str, float]
    macro: dict[str, float]
    thresholds: tuple[float, ...]
    cooccurrence: list[list[int]]  # images with both labels (diagonal: with the label)
    predicted_cooccurrence: list[list[int]]
    unlabelled: int  # evaluated images with no label
    probs: np.ndarray = field(repr=False)
    targets: np.ndarray = field(repr=False)
    predicted: np.ndarray = field(repr=False)

    @property
    def task(self) -> str:
        return "multi-label"

    @property
    def score(self) -> float:
        """The figure that ranks models: macro mAP."""
        return self.map_macro

    def scalars(self) -> dict[str, float]:
        """The headline numbers by name, as an experiment tracker logs them."""
        return {"mAP": self.map_macro, "mAP_micro": self.map_micro,
                "exact_match": self.exact_match, "hamming_loss": self.hamming_loss,
                "micro_f1": self.micro["f1"], "loss": self.loss}

    def pr_curve(self, label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Precision, recall and thresholds of one label (scikit-learn's
        ``precision_recall_curve``); empty when the label has no positive image."""
        from sklearn.metrics import precision_recall_curve

        y = self.targets[:, label]
        if not y.any():
            return np.zeros(0), np.zeros(0), np.zeros(0)
        return precision_recall_curve(y, self.probs[:, label])

    def pr_curves(self) -> dict[str, dict[str, list[float]]]:
        """Each label's interpolated precision at 101 recall levels (0, 0.01, ... 1)."""
        levels = np.linspace(0, 1, RECALL_LEVELS)
        out = {}
        for k, name in enumerate(self.classes):
            precision, recall, _ = self.pr_curve(k)
            if not len(precision):
                continue
            # interpolated precision at r: the best precision at any recall >= r (recall
            # falls along scikit-learn's arrays, so those points are a prefix)
            best = np.maximum.accumulate(precision)
            count = (recall[None, :] >= levels[:, None]).sum(1)
            values = np.where(count > 0, best[np.maximum(count - 1, 0)], 0.0).tolist()
            out[name] = {"recall": [round(float(v), 4) for v in levels],
                         "precision": [round(v, 4) for v in values]}
        return out

    def top_losses(self, per_label: int = 4) -> dict[str, list[dict[str, Any]]]:
        """For each label, the images whose answer for it was worst (highest binary
        cross-entropy): missed labels with a low probability, absent ones with a high."""
        p = np.clip(self.probs, 1e-7, 1 - 1e-7)
        loss = -(self.targets * np.log(p) + (1 - self.targets) * np.log(1 - p))
        out = {}
        for k, name in enumerate(self.classes):
            order = np.argsort(-loss[:, k], kind="stable")[:per_label]
            out[name] = [{"index": int(i), "probability": float(self.probs[i, k]),
                          "truth": bool(self.targets[i, k] > 0.5), "loss": float(loss[i, k])}
                         for i in order]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "n": self.n, "loss": self.loss,
            "mAP": {"macro": self.map_macro, "micro": self.map_micro},
            "exact_match": self.exact_match, "hamming_loss": self.hamming_loss,
            "micro": self.micro, "macro": self.macro, "per_label": self.per_label,
            "classes": list(self.classes), "thresholds": list(self.thresholds),
            "unlabelled": self.unlabelled,
            "cooccurrence": self.cooccurrence,
            "predicted_cooccurrence": self.predicted_cooccurrence,
            "pr_curves": self.pr_curves(),
        }


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _prf(pred: np.ndarray, y: np.ndarray, axis: int | None
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of 0/1 answers against 0/1 truth, per label (``axis``
    0) or over every image-label pair (None); 0 where a ratio has nothing to divide
    (scikit-learn's ``zero_division=0``). Counted here: scikit-learn reads a single
    column as binary data and reports its absent class."""
    tp = (pred * y).sum(axis)
    answered, present = pred.sum(axis), y.sum(axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(answered > 0, tp / np.maximum(answered, 1), 0.0)
        recall = np.where(present > 0, tp / np.maximum(present, 1), 0.0)
        f1 = np.where(answered + present > 0, 2 * tp / np.maximum(answered + present, 1),
                      0.0)
    return precision, recall, f1


def compute_multilabel(probs: Any, targets: Any, classes: Sequence[str],
                       thresholds: Sequence[float] | float = 0.5) -> MultiLabelResult:
    """Metrics of probabilities ``(N, K)`` against multi-hot ``targets`` ``(N, K)``; a
    label is answered where its probability is at least its threshold."""
    # Imported here: scikit-learn takes about a second to import.
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        hamming_loss,
    )

    p = np.asarray(getattr(probs, "numpy", lambda: probs)(), dtype=np.float64)
    y = (np.asarray(getattr(targets, "numpy", lambda: targets)()) > 0.5).astype(np.int64)
    k = len(classes)
    if p.shape != y.shape or p.ndim != 2 or p.shape[1] != k:
        raise ValueError(f"probabilities {p.shape} and targets {y.shape} must both be "
                         f"(images, {k})")
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (k,))
    pred = (p >= t).astype(np.int64)
    n = len(y)
    support = y.sum(0)
    ap = np.full(k, math.nan)
    for j in range(k):
        if support[j] > 0:
            ap[j] = average_precision_score(y[:, j], p[:, j])
    has = support > 0
    map_macro = float(ap[has].mean()) if has.any() else math.nan
    map_micro = float(average_precision_score(y, p, average="micro")) if y.any() else math.nan
    prec, rec, f1 = _prf(pred, y, axis=0)
    per_label = [{"label": name, "precision": float(prec[j]), "recall": float(rec[j]),
                  "f1": float(f1[j]), "ap": _none_if_nan(ap[j]), "support": int(support[j]),
                  "predicted": int(pred[:, j].sum()), "threshold": float(t[j])}
                 for j, name in enumerate(classes)]
    pm, rm, fm = _prf(pred, y, axis=None)
    avg = {"micro": {"precision": float(pm), "recall": float(rm), "f1": float(fm)},
           "macro": {"precision": float(prec.mean()), "recall": float(rec.mean()),
                     "f1": float(f1.mean())}}
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    bce = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    return MultiLabelResult(
        tuple(classes), n, float(bce.sum(1).mean()) if n else math.nan, map_macro, map_micro,
        float(accuracy_score(y, pred)) if n else 0.0,
        float(hamming_loss(y, pred)) if n else 0.0,
        per_label, avg["micro"], avg["macro"], tuple(float(v) for v in t),
        (y.T @ y).tolist(), (pred.T @ pred).tolist(), int((y.sum(1) == 0).sum()),
        p.astype(np.float32), y.astype(np.float32), pred.astype(np.int8))
