"""Classification metrics from predicted scores: accuracy, top-k, per-class P/R/F1, confusion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class EvalResult:
    classes: tuple[str, ...]
    n: int
    loss: float
    accuracy: float
    top_k: dict[int, float]
    per_class: list[dict[str, Any]]
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion: list[list[int]]
    predicted: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    probs: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "loss": self.loss, "accuracy": self.accuracy,
            "top_k_accuracy": {str(k): v for k, v in self.top_k.items()},
            "macro": self.macro, "weighted": self.weighted,
            "per_class": self.per_class, "classes": list(self.classes),
            "confusion_matrix": self.confusion,
        }

    def scalars(self) -> dict[str, float]:
        """The headline numbers, as an experiment tracker logs them (``test_`` before each)."""
        out = {"acc": float(self.accuracy), "macro_f1": float(self.macro["f1"])}
        out.update({f"top{k}_acc": float(v) for k, v in self.top_k.items() if k > 1})
        return out


def compute(log_probs: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...],
            ks: tuple[int, ...] = (1, 3, 5)) -> EvalResult:
    """Metrics of ``log_probs`` ``(N, K)`` against integer ``labels``."""
    # Imported here: scikit-learn takes about a second to import, which `cnnkit predict`
    # and every other command that computes no metrics should not pay.
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    lp = log_probs.float()
    y = labels.long().cpu()
    k_max = len(classes)
    pred = lp.argmax(1)
    loss = torch.nn.functional.nll_loss(lp, y).item() if len(y) else float("nan")
    top = {}
    for k in ks:  # top-k of all K classes is 100% whatever the model: not a figure
        if k == 1 or k < k_max:
            hits = (lp.topk(k, dim=1).indices == y[:, None]).any(1)
            top[k] = hits.float().mean().item()
    index = list(range(k_max))
    p, r, f, s = precision_recall_fscore_support(y.numpy(), pred.numpy(), labels=index,
                                                 zero_division=0)
    answered = np.bincount(pred.numpy(), minlength=k_max)
    per_class = [{"class": c, "precision": float(p[i]), "recall": float(r[i]),
                  "f1": float(f[i]), "support": int(s[i]), "predicted": int(answered[i])}
                 for i, c in enumerate(classes)]
    # Averages over the classes in the data or the answers (scikit-learn's own default):
    # a class with no image and no answer has nothing to measure, and a 0 for it would
    # pull the macro average down.
    seen = [i for i in index if s[i] or answered[i]] or index
    avg = {}
    for how in ("macro", "weighted"):
        pa, ra, fa, _ = precision_recall_fscore_support(y.numpy(), pred.numpy(), labels=seen,
                                                        average=how, zero_division=0)
        avg[how] = {"precision": float(pa), "recall": float(ra), "f1": float(fa)}
    cm = confusion_matrix(y.numpy(), pred.numpy(), labels=index).tolist()
    return EvalResult(classes, len(y), loss, (pred == y).float().mean().item() if len(y) else 0.0,
                      top, per_class, avg["macro"], avg["weighted"], cm, pred.numpy(),
                      y.numpy(), lp.exp().numpy())


def class_cells(row: dict[str, Any]) -> list[str]:
    """A class's precision, recall and F1 as table cells: '-' where the data gives nothing
    to measure (recall without an image of the class; all three without an answer either)."""
    if row["support"]:
        return [f"{row[k]:.4f}" for k in ("precision", "recall", "f1")]
    if row.get("predicted", 0):  # answered, never right: precision 0
        return [f"{row['precision']:.4f}", "-", f"{row['f1']:.4f}"]
    return ["-", "-", "-"]
