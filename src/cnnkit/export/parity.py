"""How closely an exported file answers as the torch model did, on the same real images:
the largest difference in probabilities, the share of images given the same answer (the
class, or a multi-label model's label set at its thresholds) and the share whose top
class agrees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cnnkit.tasks.base import Task


@dataclass(frozen=True)
class Parity:
    """One runtime's file against torch on ``images`` images (``where``: which ones)."""

    runtime: str  # onnx, onnx-int8, executorch, ...
    file: str
    images: int
    where: str
    max_prob_diff: float
    top1_agreement: float
    limit: float | None = None  # the largest difference allowed; None: reported only
    answer_agreement: float | None = None  # the same answer (None: not measured, older)

    @classmethod
    def of(cls, runtime: str, file: str, probs: np.ndarray, reference: np.ndarray,
           where: str, task: Task, classes: tuple[str, ...],
           limit: float | None = None) -> Parity:
        """``probs`` against torch's ``reference`` (both ``(N, classes)``), each read
        into answers by ``task``."""
        probs, reference = np.asarray(probs), np.asarray(reference)
        if not len(probs):
            return cls(runtime, file, 0, where, 0.0, 1.0, limit, 1.0)
        diff = float(np.abs(probs - reference).max())
        agree = float((probs.argmax(1) == reference.argmax(1)).mean())
        names = [str(i) for i in range(len(probs))]
        same = [a.label == b.label for a, b in zip(task.answers(probs, names, classes, top_k=1),
                                                   task.answers(reference, names, classes,
                                                                top_k=1))]
        return cls(runtime, file, len(probs), where, diff, agree, limit,
                   float(np.mean(same)))

    @property
    def ok(self) -> bool:
        return self.limit is None or self.max_prob_diff <= self.limit

    def line(self) -> str:
        """``onnx parity on 32 images of the run's test split: ...`` for the terminal."""
        limit = f" (limit {self.limit:g})" if self.limit is not None else ""
        same = self.answer_agreement
        answers = "" if same is None or same == self.top1_agreement else \
            f", the same answers for {same:.1%}"
        return (f"{self.runtime} parity with torch on {self.where}: largest difference in "
                f"probabilities {self.max_prob_diff:.1e}{limit}, top-1 agreement "
                f"{self.top1_agreement:.1%}{answers}")

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "file": self.file, "images": self.images,
                "where": self.where, "max_prob_diff": self.max_prob_diff,
                "top1_agreement": self.top1_agreement, "limit": self.limit,
                "answer_agreement": self.answer_agreement}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Parity:
        return cls(str(d["runtime"]), str(d["file"]), int(d["images"]), str(d["where"]),
                   float(d["max_prob_diff"]), float(d["top1_agreement"]),
                   None if d.get("limit") is None else float(d["limit"]),
                   None if d.get("answer_agreement") is None
                   else float(d["answer_agreement"]))
