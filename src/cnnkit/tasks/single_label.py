"""Single-label classification: one class per image.

Targets are class indices; the head gives one logit per class; the loss is
cross-entropy (label smoothing, class weights); scores are the log-softmax; the
headline figure is accuracy; metrics are accuracy, top-k, per-class P/R/F1 and the
confusion matrix (:mod:`cnnkit.tasks.metrics`); an answer is the top-k classes with
their probabilities, ``unknown`` below a threshold (:mod:`cnnkit.tasks.threshold`) or
when the image is unlike every class (:mod:`cnnkit.tasks.ood`).

Its settings, fitted at the end of training on the validation split and kept in the model
card: a ``temperature`` that divides the logits before the softmax (calibrated
probabilities, :mod:`cnnkit.tasks.calibration`; the argmax never changes) and an
``unknown`` rule on the logits' energy. A card without them (an older file, or a run
without a validation split) is temperature 1 with no unknown rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cnnkit.base import log
from cnnkit.tasks.base import Task
from cnnkit.tasks.calibration import T_RANGE, Calibration, calibrate, log_softmax
from cnnkit.tasks.ood import MIN_HELD_OUT, UnknownRule, energy, fit_rule
from cnnkit.tasks.threshold import UNKNOWN, is_unknown

if TYPE_CHECKING:
    import torch

    from cnnkit.tasks.metrics import EvalResult


@dataclass(frozen=True)
class Prediction:
    """One image's top classes. ``label`` is ``"unknown"`` when the image is unlike every
    class the model knows (``unlike``: its unknown score is above the rule the run chose
    on its validation split) or, with a ``threshold``, when the top probability is below
    it; ``top`` still holds the model's classes either way."""

    source: str
    top: list[tuple[str, float]]
    threshold: float | None = None
    # The share of the run's known validation images less strange than this one (None:
    # the model has no unknown rule), and whether it is above the rule's line.
    unknown_score: float | None = None
    unlike: bool = False
    energy: float | None = None  # -logsumexp of the logits: what the score is read from
    distance: float | None = None  # to the nearest class in the features, when the rule reads it

    @property
    def unknown(self) -> bool:
        return self.unlike or is_unknown(self.probability, self.threshold)

    @property
    def label(self) -> str:
        return UNKNOWN if self.unknown else self.top[0][0]

    @property
    def probability(self) -> float:
        """The top class's probability (also when the label is ``unknown``)."""
        return self.top[0][1]

    @property
    def reason(self) -> str | None:
        """Why the answer is ``unknown``: ``unlike every class`` or ``below the threshold``."""
        if self.unlike:
            return "unlike every class"
        return "below the threshold" if self.unknown else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.source, "label": self.label,
                               "probability": self.probability}
        if self.threshold is not None or self.unknown_score is not None:
            out["unknown"] = self.unknown
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.unknown_score is not None:
            out.update(unknown_score=round(self.unknown_score, 6), unlike=self.unlike)
        if self.unknown:
            out["reason"] = self.reason
        out["top"] = [{"label": c, "probability": p} for c, p in self.top]
        return out


@dataclass(frozen=True)
class SingleLabel(Task):
    """One class per image (softmax over the classes, at ``temperature``)."""

    name: ClassVar[str] = "single-label"
    temperature: float = 1.0
    unknown: UnknownRule | None = None
    calibration: Calibration | None = None  # how the temperature was fitted (the report)

    # --- the model card ---------------------------------------------------------------

    def card_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.calibration is not None or self.temperature != 1.0:
            out["temperature"] = self.temperature
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.unknown is not None:
            out["unknown"] = self.unknown.to_dict()
        return out

    card_keys: ClassVar[tuple[str, ...]] = ("temperature", "calibration", "unknown")

    @classmethod
    def from_card(cls, fields: dict[str, Any], classes: tuple[str, ...], where: str
                  ) -> SingleLabel:
        from cnnkit.base.errors import CnnkitError

        t = fields.get("temperature", 1.0)
        lo, hi = T_RANGE  # where calibration searches; a little slack for rounding
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (
                math.isfinite(t) and lo * (1 - 1e-6) <= t <= hi * (1 + 1e-6)):
            raise CnnkitError(f"{where} is incomplete or damaged: the task's temperature "
                              f"must be a number from {lo:g} to {hi:g} (where calibration "
                              f"fits it). Received: {log.shown(t)}. Use the model.json that "
                              "was saved with the weights.")
        try:
            rule = (UnknownRule.from_dict(fields["unknown"], "the task")
                    if fields.get("unknown") is not None else None)
            cal = (Calibration.from_dict(fields["calibration"])
                   if fields.get("calibration") is not None else None)
        except (ValueError, TypeError, KeyError) as exc:
            raise CnnkitError(f"{where} is incomplete or damaged ({exc}). Use the "
                              "model.json that was saved with the weights.") from None
        return cls(float(t), rule, cal)

    fits_held_out: ClassVar[bool] = True

    reads_distance: ClassVar[bool] = True

    def fit_held_out(self, views: Sequence[np.ndarray], targets: np.ndarray, *,
                     distances: Sequence[np.ndarray] | None = None,
                     features: dict[str, Any] | None = None) -> SingleLabel:
        """The temperature that calibrates the views' merged probabilities (as prediction
        merges them) and the unknown rule on their mean energy, and with ``distances``
        on their mean feature distance too."""
        labels = np.asarray(targets)
        if labels.ndim != 1:
            return self
        merged = log_softmax(sum(log_softmax(v) for v in views) / len(views))
        cal = calibrate(merged, labels)
        mean_distance = (np.mean(distances, axis=0)
                         if distances is not None and features is not None else None)
        rule = fit_rule(np.mean([energy(v) for v in views], axis=0),
                        known_distances=mean_distance, features=features)
        return replace(self, temperature=cal.temperature, unknown=rule, calibration=cal)

    @property
    def answers_read_distance(self) -> bool:
        return self.unknown is not None and self.unknown.uses_distance

    def held_out_summary(self) -> str | None:
        cal, rule = self.calibration, self.unknown
        if cal is None or rule is None:
            return None
        how = (f"'unknown' when the energy or the distance to the classes in "
               f"{(rule.features or {}).get('dim', '?')} features is stranger than "
               f"{rule.kept:.0%} of them" if rule.uses_distance
               else f"'unknown' above energy {rule.threshold:.2f} (keeps {rule.kept:.0%} of them)")
        return (f"calibrated on {log.plural(cal.fitted_on, 'validation image')}: temperature "
                f"{cal.temperature:.3f} (expected calibration error {cal.ece_before:.3f} -> "
                f"{cal.ece_after:.3f}); {how}")

    def load_note(self) -> str | None:
        if self.calibration is not None or self.unknown is not None:
            return None
        return ("its probabilities are not calibrated and it answers no image 'unknown' "
                "by itself (no temperature or unknown rule in its model card: it was "
                f"trained with fewer than {MIN_HELD_OUT} validation images, or none, or by "
                "an older cnnkit); --threshold still applies")

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
        return (logits.float() / self.temperature).log_softmax(1)

    def merge_views(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(views) == 1:
            return views[0]
        total = views[0]
        for v in views[1:]:
            total = total + v
        # Averaged log-probabilities, renormalised: the views' geometric mean sums to 1.
        return (total / len(views)).log_softmax(1)

    def scores_np(self, logits: np.ndarray) -> np.ndarray:
        return _log_softmax(logits / self.temperature if self.temperature != 1.0 else logits)

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

    def chance(self, targets: torch.Tensor) -> float | None:
        """The most common class's share: 1/K on balanced classes, more on others."""
        import torch

        if not len(targets):
            return None
        return torch.bincount(targets.long()).max().item() / len(targets)

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

    def answer_inputs_np(self, views: Sequence[np.ndarray],
                         distances: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """The probabilities, and with an unknown rule more columns: the views' mean
        energy (of the raw logits, as the rule was fitted), and with a rule on both scores
        and ``distances`` their mean feature distance."""
        probs = super().answer_inputs_np(views)
        if self.unknown is None:
            return probs
        cols = [np.mean([energy(v) for v in views], axis=0)]
        if distances is not None and self.unknown.uses_distance:
            cols.append(np.mean(distances, axis=0))
        return np.concatenate([probs, np.stack(cols, 1).astype(probs.dtype)], axis=1)

    def answers(self, probs: np.ndarray, sources: Sequence[str], classes: tuple[str, ...],
                *, top_k: int = 5, threshold: float | None = None) -> list[Prediction]:
        """``probs``: probabilities ``(N, K)``, or :meth:`answer_inputs_np`'s ``(N, K + 1)``
        with the energy last, or ``(N, K + 2)`` with the energy and the feature distance
        (read by the unknown rule)."""
        k = max(1, min(top_k, len(classes)))
        rule, n = self.unknown, len(classes)
        extra = probs.shape[1] - n if probs.ndim == 2 else 0
        energies = probs[:, n].astype(np.float64) if rule is not None and extra >= 1 else None
        dists = probs[:, n + 1].astype(np.float64) if rule is not None and extra >= 2 else None
        if energies is not None:
            assert rule is not None
            scores, flags = rule.score(energies, dists), rule.unknown(energies, dists)
        out = []
        for i, (name, row) in enumerate(zip(sources, probs)):
            order = np.argsort(-row[:n])[:k]
            top = [(classes[j], float(row[j])) for j in order]
            if energies is None:
                out.append(Prediction(name, top, threshold))
            else:
                out.append(Prediction(name, top, threshold, float(scores[i]), bool(flags[i]),
                                      float(energies[i]),
                                      float(dists[i]) if dists is not None else None))
        return out

    def answer_columns(self, top_k: int) -> list[str]:
        """``path, label, probability``, with an unknown rule ``unknown_score`` (why a
        label is ``unknown``), the top ``k`` classes, ``error``."""
        scored = ["unknown_score"] if self.unknown is not None else []
        return ["path", "label", "probability", *scored] + [
            f"{w}{i}" for i in range(1, top_k + 1) for w in ("label", "prob")] + ["error"]

    def answer_fields(self, answer: Prediction | None, top_k: int) -> list[str]:
        scored = self.unknown is not None
        if answer is None:
            return ["", ""] + [""] * (scored + 2 * top_k)
        tops = [v for c, pr in answer.top for v in (c, f"{pr:.6f}")]
        tops += [""] * (2 * top_k - len(tops))
        score = ([f"{answer.unknown_score:.6f}" if answer.unknown_score is not None else ""]
                 if scored else [])
        return [answer.label, f"{answer.probability:.6f}", *score, *tops]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))
