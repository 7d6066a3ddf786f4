"""Multi-label classification: a set of labels per image (none, one or several).

Targets are a multi-hot matrix ``(N, K)``; the head gives one logit per label; the loss
is binary cross-entropy summed over the labels (``--imbalance weighted-loss``: each label's
positives weighted by its negatives-to-positives ratio); scores are log-sigmoids, so
each label's probability stands on its own; the headline figure while training is
exact match (every label of an image right at 0.5); metrics are mAP and the rest of
:mod:`cnnkit.tasks.multilabel_metrics`; an answer is the set of labels whose
probability reaches the label's threshold, chosen on validation images
(:mod:`cnnkit.tasks.label_thresholds`) and kept in the model card, or one
``--threshold`` for all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cnnkit.base import log
from cnnkit.tasks.base import Task
from cnnkit.tasks.label_thresholds import DEFAULT, MIN_POSITIVES, check_thresholds

if TYPE_CHECKING:
    import torch

    from cnnkit.tasks.multilabel_metrics import MultiLabelResult

MAX_POS_WEIGHT = 100.0  # a label seen once in 10,000 images is not weighted 10,000-fold


@dataclass(frozen=True)
class LabelSet:
    """One image's labels (those at or above their threshold) with their probabilities,
    and the ``top`` labels by probability (answered or not)."""

    source: str
    labels: list[tuple[str, float]]
    top: list[tuple[str, float]]
    thresholds: dict[str, float]

    @property
    def label(self) -> str:
        """The set as a CSV writes it: ``cat|dog`` (empty: no label)."""
        return "|".join(name for name, _ in self.labels)

    @property
    def probability(self) -> float:
        """The highest probability of any label (also when none is answered)."""
        return self.top[0][1] if self.top else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.source, "label": self.label,
                "labels": [{"label": c, "probability": p} for c, p in self.labels],
                "top": [{"label": c, "probability": p} for c, p in self.top],
                "thresholds": self.thresholds}


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


@dataclass(frozen=True)
class MultiLabel(Task):
    """Several labels per image (a sigmoid per label)."""

    name: ClassVar[str] = "multi-label"
    figure: ClassVar[str] = "exact"
    figure_name: ClassVar[str] = "exact match"

    # One per label, chosen on validation images when training ends; None: 0.5 each.
    thresholds: tuple[float, ...] | None = None
    # One for every label in place of those (--threshold); never saved in a card.
    override: float | None = None
    # What the last fit saw (for its log line; not saved in a card).
    fitted_on: int = field(default=0, compare=False)
    defaulted: tuple[int, ...] = field(default=(), compare=False)

    def cut(self, n_classes: int, threshold: float | None = None) -> np.ndarray:
        """The threshold of each label: ``threshold`` for all when given, else the
        card's (0.5 where none was chosen)."""
        if threshold is None:
            threshold = self.override
        if threshold is not None:
            return np.full(n_classes, float(threshold))
        if self.thresholds is None:
            return np.full(n_classes, DEFAULT)
        return np.asarray(self.thresholds, dtype=np.float64)

    # --- the model card -------------------------------------------------------------

    def card_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"name": self.name}
        if self.thresholds is not None:
            fields["thresholds"] = [float(t) for t in self.thresholds]  # as fitted
        return fields

    card_keys: ClassVar[tuple[str, ...]] = ("thresholds",)

    @classmethod
    def from_card(cls, fields: dict[str, Any], classes: tuple[str, ...], where: str
                  ) -> MultiLabel:
        values = fields.get("thresholds")
        if values is None:
            return cls()
        if not isinstance(values, list):
            from cnnkit.base.errors import CnnkitError

            raise CnnkitError(f"{where} is incomplete or damaged: task.thresholds must be a "
                              "list of numbers. Use the model.json saved with the weights.")
        return cls(tuple(check_thresholds(values, classes, where)))

    fits_held_out: ClassVar[bool] = True
    held_out_fits: ClassVar[str] = "per-label thresholds"
    held_out_unfitted: ClassVar[tuple[str, str]] = (
        "thresholds not chosen", "every label is answered at 0.5 (--threshold to choose "
        "another)")

    def fit_held_out(self, views: Sequence[np.ndarray], targets: np.ndarray, *,
                     distances: Sequence[np.ndarray] | None = None,
                     features: dict[str, Any] | None = None) -> MultiLabel:
        """Each label's threshold for the best F1 on the validation images (the views'
        merged probabilities, as prediction merges them); 0.5 for a label with too few
        positive images among them."""
        from cnnkit.tasks.label_thresholds import choose_thresholds

        if np.asarray(targets).ndim != 2:
            return self
        probs = np.exp(self.merge_views_np([self.scores_np(np.asarray(v)) for v in views]))
        chosen, defaulted = choose_thresholds(probs, targets)
        return MultiLabel(tuple(chosen), fitted_on=len(probs), defaulted=tuple(defaulted))

    def held_out_summary(self) -> str | None:
        if self.thresholds is None or not self.fitted_on:
            return None
        shown = ", ".join(f"{t:.2g}" if t < 0.1 else f"{t:.2f}" for t in self.thresholds[:12])
        more = f" and {len(self.thresholds) - 12} more" if len(self.thresholds) > 12 else ""
        line = (f"thresholds per label, for the best F1 on "
                f"{log.plural(self.fitted_on, 'validation image')}: {shown}{more} (in "
                "model.json; --threshold overrides them)")
        if self.defaulted:
            n = len(self.defaulted)
            line += (f"; {log.plural(n, 'label')} with fewer than {MIN_POSITIVES} positive "
                     f"images there {'keeps' if n == 1 else 'keep'} 0.5")
        return line

    def with_threshold(self, threshold: float) -> MultiLabel:
        return MultiLabel(self.thresholds, float(threshold))

    def with_file_task(self, file_task: Task) -> MultiLabel:
        return self  # an export copies the card's thresholds; it fits none of its own

    # --- targets --------------------------------------------------------------------

    def class_counts(self, labels: torch.Tensor, n_classes: int) -> list[int]:
        return [int(v) for v in (labels > 0.5).sum(0).tolist()]

    def balance(self, labels: torch.Tensor, counts: torch.Tensor, how: str
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        import torch

        if how == "weighted-loss":  # each label's positives weigh as much as its negatives
            negatives = len(labels) - counts
            ratio = (negatives / counts.clamp(min=1)).clamp(max=MAX_POS_WEIGHT)
            # a label with no negative image has nothing to balance against: weight 0
            # would leave only label smoothing's pull towards 0 to train it
            return torch.where(negatives > 0, ratio, torch.ones_like(ratio)), None
        if how == "balanced-sampling":  # an image drawn as often as its rarest label asks
            per_label = 1.0 / counts.clamp(min=1)
            hot = (labels > 0.5).float()
            weights = (hot * per_label).amax(1)
            none = hot.sum(1) == 0
            if none.any():  # images with no label: as a label of their own
                weights[none] = 1.0 / int(none.sum())
            return None, weights.to(torch.float)
        return None, None

    # --- the loss -------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, *,
             weight: torch.Tensor | None = None, smoothing: float = 0.0,
             reduction: str = "mean") -> torch.Tensor:
        """Binary cross-entropy summed over the labels (``mean``: averaged over the
        images, so that L2 on a linear head is one-vs-rest logistic regression's);
        ``weight``: per-label positive weights; ``smoothing`` pulls each target towards
        0.5 by that share."""
        import torch.nn.functional as F

        y = targets.float()
        if smoothing:
            y = y * (1.0 - smoothing) + 0.5 * smoothing
        total = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=weight,
                                                   reduction="sum")
        return total / max(len(y), 1) if reduction == "mean" else total

    def loss_denominator(self, targets: torch.Tensor, weight: torch.Tensor | None
                         ) -> torch.Tensor | int:
        return len(targets)

    # --- scores ---------------------------------------------------------------------

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.logsigmoid(logits.float())

    def merge_views(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(views) == 1:
            return views[0]
        import torch

        # the views' mean probability of each label
        return torch.stack(list(views)).exp().mean(0).clamp(min=1e-30).log()

    def scores_np(self, logits: np.ndarray) -> np.ndarray:
        return _log_sigmoid(logits.astype(np.float32, copy=False)).astype(np.float32)

    def merge_views_np(self, views: Sequence[np.ndarray]) -> np.ndarray:
        if len(views) == 1:
            return views[0]
        mean = np.mean([np.exp(v) for v in views], axis=0)
        return np.log(np.maximum(mean, 1e-30)).astype(np.float32)

    # --- figures while training -----------------------------------------------------

    def hits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Images whose every label is right at 0.5 (MixUp/CutMix: the mixed targets
        rounded)."""
        return ((logits > 0) == (targets > 0.5)).all(1).sum()

    def chance(self, targets: torch.Tensor) -> float | None:
        """None: exact match can sit at the score of answering the most common label set
        (often "no label") while the labels' ranking (mAP) is already good, so a chance
        line drawn from it would misfire on models that learnt."""
        return None

    def validation_sums(self, scores: torch.Tensor, targets: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if not len(targets):
            return torch.zeros(()), torch.zeros((), dtype=torch.long)
        y = targets.float()
        # log(1 - p) from log(p), kept finite where p rounds to 1
        log_not = torch.log1p(-scores.exp().clamp(max=1 - 1e-7))
        bce = -(y * scores + (1 - y) * log_not).sum()
        hits = ((scores > math.log(0.5)) == (y > 0.5)).all(1).sum()
        return bce, hits

    # --- metrics --------------------------------------------------------------------

    def evaluate(self, scores: torch.Tensor, targets: torch.Tensor,
                 classes: tuple[str, ...], threshold: float | None = None
                 ) -> MultiLabelResult:
        from cnnkit.tasks.multilabel_metrics import compute_multilabel

        if targets.ndim != 2:
            from cnnkit.base.errors import CnnkitError

            raise CnnkitError("The images to evaluate on give one class each, and the model "
                              "is multi-label; evaluate it on multi-label data (a CSV of "
                              "'path,labels' rows, labels separated by '|').")
        probs = scores.float().exp().cpu().numpy()
        return compute_multilabel(probs, targets.cpu().numpy(), classes,
                                  self.cut(len(classes), threshold))

    def summary(self, result: MultiLabelResult) -> str:
        return (f"mAP {result.map_macro:.4f} (micro {result.map_micro:.4f}), exact match "
                f"{result.exact_match:.2%}, Hamming loss {result.hamming_loss:.4f}, micro F1 "
                f"{result.micro['f1']:.4f} on {log.plural(result.n, 'image')}")

    # --- answers --------------------------------------------------------------------

    def answers(self, probs: np.ndarray, sources: Sequence[str], classes: tuple[str, ...],
                *, top_k: int = 5, threshold: float | None = None) -> list[LabelSet]:
        cut = self.cut(len(classes), threshold)
        k = max(1, min(top_k, len(classes)))
        named = dict(zip(classes, (float(t) for t in cut)))
        out = []
        for name, row in zip(sources, probs):
            order = np.argsort(-row, kind="stable")
            chosen = [(classes[j], float(row[j])) for j in order if row[j] >= cut[j]]
            out.append(LabelSet(name, chosen, [(classes[j], float(row[j])) for j in order[:k]],
                                named))
        return out

    def answer_columns(self, top_k: int) -> list[str]:
        return ["path", "labels", "probabilities"] + [
            f"{w}{i}" for i in range(1, top_k + 1) for w in ("label", "prob")] + ["error"]

    def answer_fields(self, answer: LabelSet | None, top_k: int) -> list[str]:
        if answer is None:
            return ["", ""] + [""] * (2 * top_k)
        tops = [v for c, pr in answer.top for v in (c, f"{pr:.6f}")]
        tops += [""] * (2 * top_k - len(tops))
        return [answer.label, "|".join(f"{p:.6f}" for _, p in answer.labels), *tops]
