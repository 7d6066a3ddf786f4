"""What an audit of a data set found (:mod:`cnnkit.data.audit`): each finding, and the
counts, statistics and verdict they add up to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Finding:
    level: str  # "problem", "warning" or "note"
    what: str
    files: tuple[str, ...] = ()
    advice: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "what": self.what, "files": list(self.files),
                "advice": self.advice}


@dataclass
class Audit:
    data: str
    kind: str
    img_size: int
    classes: list[str] = field(default_factory=list)
    counts: dict[str, list[int]] = field(default_factory=dict)  # split -> images per class
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    multilabel: bool = False  # label sets per image; counts are images with each label
    unlabelled: dict[str, int] = field(default_factory=dict)  # split -> images with none
    images: dict[str, int] = field(default_factory=dict)  # split -> usable images

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def trainable(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        if self.problems:
            n = len(self.problems)
            return (f"cannot be trained on: {n} problem{'s' if n > 1 else ''} to fix first")
        if self.warnings:
            n = len(self.warnings)
            return (f"can be trained on, but {n} thing{'s' if n > 1 else ''} will make the "
                    "model worse or its test score misleading until fixed")
        return "ready to train: no problems found"

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "kind": self.kind, "img_size": self.img_size,
                "trainable": self.trainable, "verdict": self.verdict,
                "classes": self.classes,
                "counts": {s: dict(zip(self.classes, c)) for s, c in self.counts.items()},
                "multilabel": self.multilabel, "images": self.images,
                **({"unlabelled": self.unlabelled} if self.multilabel else {}),
                "findings": [f.to_dict() for f in self.findings], **self.stats}

    def add(self, level: str, what: str, files: list[str] | tuple[str, ...] = (),
            advice: str = "") -> None:
        self.findings.append(Finding(level, what, tuple(files), advice))
