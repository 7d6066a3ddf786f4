"""Single-label classification: one class per image.

Targets are class indices; the head gives one logit per class; the loss is
cross-entropy (label smoothing, class weights); scores are the log-softmax; the
headline figure is accuracy; metrics are accuracy, top-k, per-class P/R/F1 and the
confusion matrix (:mod:`cnnkit.tasks.metrics`); an answer is the top-k classes with
their probabilities, ``unknown`` below a threshold (:mod:`cnnkit.tasks.threshold`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cnnkit.base import log
from cnnkit.tasks.base import Task
from cnnkit.tasks.threshold import UNKNOWN, is_unknown

if TYPE_CHECKING:
    import torch

    from cnnkit.tasks.metrics import EvalResult


@dataclass(frozen=True)
class Prediction:
    """One image's top classes; with a ``threshold``, ``label`` is ``"unknown"`` when the
    top probability is below it (``top`` still holds the model's classes)."""

    source: str
    top: list[tuple[str, float]]
    threshold: float | None = None

    @property
    def unknown(self) -> bool:
        return is_unknown(self.probability, self.threshold)

    @property
    def label(self) -> str:
        return UNKNOWN if self.unknown else self.top[0][0]

    @property
    def probability(self) -> float:
        """The top class's probability (also when the label is ``unknown``)."""
        return self.top[0][1]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.source, "label": self.label,
                               "probability": self.probability}
        if self.threshold is not None:
            out.update(unknown=self.unknown, threshold=self.threshold)
        out["top"] = [{"label": c, "probability": p} for c, p in self.top]
        return out


@dataclass(frozen=True)
class SingleLabel(Task):
    """One class per image (softmax over the classes)."""

    name: ClassVar[str] = "single-label"

    # --- targets --------------------------------------------------------------------

    def class_counts(self, labels: torch.Tensor, n_classes: int) -> list[int]:
        import torch

        return torch.bincount(labels, minlength=n_classes).tolist()

    def balance(self, labels: torch.Tensor, counts: torch.Tensor, how: str
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if how == "weighted-loss":  # each class weighs as much in the loss as any other
            return counts.sum() / (len(counts) * counts.clamp(min=1)), None
        if how == "balanced-sampling":  # each class drawn as often as any other
            return None, (1.0 / counts.clamp(min=1))[labels]
        return None, None

    # --- the loss -------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, *,
             weight: torch.Tensor | None = None, smoothing: float = 0.0,
             reduction: str = "mean") -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), targets, weight=weight, reduction=reduction,
                               label_smoothing=smoothing)

    def loss_denominator(self, targets: torch.Tensor, weight: torch.Tensor | None
                         ) -> torch.Tensor | int:
        # PyTorch's mean: over the targets' class weights for labels, over N for soft targets
        return weight[targets].sum() if weight is not None and targets.ndim == 1 \
            else len(targets)

    # --- scores ---------------------------------------------------------------------

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().log_softmax(1)

    def merge_views(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(views) == 1:
            return views[0]
        total = views[0]
        for v in views[1:]:
            total = total + v
        # Averaged log-probabilities, renormalised: the views' geometric mean sums to 1.
        return (total / len(views)).log_softmax(1)

    def scores_np(self, logits: np.ndarray) -> np.ndarray:
        return _log_softmax(logits)

    def merge_views_np(self, views: Sequence[np.ndarray]) -> np.ndarray:
        if len(views) == 1:
            return views[0]
        return _log_softmax(sum(views[1:], views[0]) / len(views))

    # --- figures while training -----------------------------------------------------

    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hard = targets if targets.ndim == 1 else targets.argmax(1)  # MixUp: the larger share
        return (logits.argmax(1) == hard).sum()

    def validation_sums(self, scores: torch.Tensor, targets: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        if not len(targets):
            return torch.zeros(()), torch.zeros((), dtype=torch.long)
        return (F.nll_loss(scores, targets, reduction="sum"),
                (scores.argmax(1) == targets).sum())

    # --- metrics --------------------------------------------------------------------

    def evaluate(self, scores: torch.Tensor, targets: torch.Tensor,
                 classes: tuple[str, ...]) -> EvalResult:
        from cnnkit.tasks.metrics import compute

        return compute(scores, targets, classes)

    def summary(self, result: EvalResult) -> str:
        figures = [f"accuracy {result.accuracy:.2%}",
                   *(f"top-{k} {v:.2%}" for k, v in result.top_k.items() if k > 1)]
        return (f"{' '.join(figures)} on {log.plural(result.n, 'image')} "
                f"(macro F1 {result.macro['f1']:.4f})")

    # --- answers --------------------------------------------------------------------

    def answers(self, probs: np.ndarray, sources: Sequence[str], classes: tuple[str, ...],
                *, top_k: int = 5, threshold: float | None = None) -> list[Prediction]:
        k = max(1, min(top_k, len(classes)))
        out = []
        for name, row in zip(sources, probs):
            order = np.argsort(-row)[:k]
            out.append(Prediction(name, [(classes[j], float(row[j])) for j in order],
                                  threshold))
        return out

    def answer_columns(self, top_k: int) -> list[str]:
        return ["path", "label", "probability"] + [
            f"{w}{i}" for i in range(1, top_k + 1) for w in ("label", "prob")] + ["error"]

    def answer_fields(self, answer: Prediction | None, top_k: int) -> list[str]:
        if answer is None:
            return ["", ""] + [""] * (2 * top_k)
        tops = [v for c, pr in answer.top for v in (c, f"{pr:.6f}")]
        tops += [""] * (2 * top_k - len(tops))
        return [answer.label, f"{answer.probability:.6f}", *tops]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))
