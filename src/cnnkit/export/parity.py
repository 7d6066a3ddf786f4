"""How closely an exported file answers as the torch model did, on the same real images:
the largest difference in probabilities and the share of images whose top class agrees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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

    @classmethod
    def of(cls, runtime: str, file: str, probs: np.ndarray, reference: np.ndarray,
           where: str, limit: float | None = None) -> Parity:
        """``probs`` against torch's ``reference`` (both ``(N, classes)``)."""
        probs, reference = np.asarray(probs), np.asarray(reference)
        diff = float(np.abs(probs - reference).max()) if len(probs) else 0.0
        agree = float((probs.argmax(1) == reference.argmax(1)).mean()) if len(probs) else 1.0
        return cls(runtime, file, len(probs), where, diff, agree, limit)

    @property
    def ok(self) -> bool:
        return self.limit is None or self.max_prob_diff <= self.limit

    def line(self) -> str:
        """``onnx parity on 32 images of the run's test split: ...`` for the terminal."""
        limit = f" (limit {self.limit:g})" if self.limit is not None else ""
        return (f"{self.runtime} parity with torch on {self.where}: largest difference in "
                f"probabilities {self.max_prob_diff:.1e}{limit}, top-1 agreement "
                f"{self.top1_agreement:.1%}")

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "file": self.file, "images": self.images,
                "where": self.where, "max_prob_diff": self.max_prob_diff,
                "top1_agreement": self.top1_agreement, "limit": self.limit}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Parity:
        return cls(str(d["runtime"]), str(d["file"]), int(d["images"]), str(d["where"]),
                   float(d["max_prob_diff"]), float(d["top1_agreement"]),
                   None if d.get("limit") is None else float(d["limit"]))
