"""The task seam: a task that is not single-label trains, tests, saves, loads and
answers through the same code, which holds nothing of its own about the task.

The task here is a toy made for the test (one sigmoid per class, trained on the same
one-class labels), registered for the duration of the test only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnnkit
from cnnkit.cli import main
from cnnkit.data import shapes
from cnnkit.data.source_folder import FolderSource
from cnnkit.tasks import registry
from cnnkit.tasks.single_label import SingleLabel


@dataclass(frozen=True)
class Tags:
    """The toy task's answer: every class at or above the cut-off."""

    source: str
    labels: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.source, "labels": [{"label": c, "probability": p}
                                                for c, p in self.labels]}


@dataclass(frozen=True)
class ToyResult:
    n: int
    hamming: float

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "hamming_accuracy": self.hamming}

    def scalars(self) -> dict[str, float]:
        return {"hamming": self.hamming}


@dataclass(frozen=True)
class OneSigmoidPerClass(SingleLabel):
    name: ClassVar[str] = "toy-sigmoids"
    figure: ClassVar[str] = "hamming"
    figure_name: ClassVar[str] = "per-class accuracy"
    cut: float = 0.5  # a setting the model card keeps
    card_keys: ClassVar[tuple[str, ...]] = ("cut",)

    def card_fields(self) -> dict[str, Any]:
        return {"name": self.name, "cut": self.cut}

    @classmethod
    def from_card(cls, fields: dict[str, Any], classes: tuple[str, ...], where: str) -> Any:
        return cls(cut=float(fields["cut"]))

    def _targets(self, targets: torch.Tensor, k: int) -> torch.Tensor:
        return F.one_hot(targets, k).float() if targets.ndim == 1 else targets.float()

    def loss(self, logits, targets, *, weight=None, smoothing=0.0, reduction="mean"):
        per = F.binary_cross_entropy_with_logits(
            logits.float(), self._targets(targets, logits.shape[1]), reduction="none").sum(1)
        return per.sum() if reduction == "sum" else per.mean()

    def loss_denominator(self, targets, weight):
        return len(targets)

    def scores(self, logits):
        return F.logsigmoid(logits.float())

    def merge_views(self, views):
        return torch.stack(list(views)).exp().mean(0).log()

    def scores_np(self, logits):
        return -np.logaddexp(0.0, -logits)

    def merge_views_np(self, views):
        return np.log(np.mean(np.exp(np.stack(views)), 0))

    def hits(self, logits, targets):
        return ((logits > 0).float() == self._targets(targets, logits.shape[1])).sum()

    def units(self, targets):  # a decision per class: the shapes tree has three
        return len(targets) * len(shapes.CLASSES)

    def validation_sums(self, scores, targets):
        t = self._targets(targets, scores.shape[1])
        log_not = torch.log1p(-scores.exp().clamp(max=1 - 1e-7))
        loss = -(t * scores + (1 - t) * log_not).sum()
        return loss, ((scores.exp() >= self.cut).float() == t).sum()

    def evaluate(self, scores, targets, classes):
        t = self._targets(targets, len(classes))
        right = ((scores.exp() >= self.cut).float() == t).float().mean().item()
        return ToyResult(len(targets), right)

    def summary(self, result):
        return f"per-class accuracy {result.hamming:.2%} on {result.n} images"

    def answers(self, probs, sources, classes, *, top_k=5, threshold=None):
        cut = self.cut if threshold is None else threshold
        return [Tags(s, [(c, float(p)) for c, p in zip(classes, row) if p >= cut])
                for s, row in zip(sources, probs)]

    def answer_columns(self, top_k):
        return ["path", "labels", "error"]

    def answer_fields(self, answer, top_k):
        return ["" if answer is None else "|".join(c for c, _ in answer.labels)]


@pytest.fixture
def toy_task(monkeypatch: pytest.MonkeyPatch) -> type[OneSigmoidPerClass]:
    monkeypatch.setitem(registry.TASKS, OneSigmoidPerClass.name, OneSigmoidPerClass)
    monkeypatch.setattr(FolderSource, "task", property(lambda self: OneSigmoidPerClass.name))
    return OneSigmoidPerClass


def test_a_second_task_trains_tests_and_answers_through_the_seam(
        toy_task, make_tree, tmp_path: Path, capsys) -> None:
    data = make_tree(tmp_path / "shapes", per_class=10, size=16, seed=2)
    result = cnnkit.train(str(data), model="conv6k3same-pool2-conv8k3-gap", img_size=16,
                          epochs=2, batch_size=8, val_fraction=0.2, test_fraction=0.2,
                          plots=False, device="cpu", out=str(tmp_path / "runs"), name="toy")
    run = result.run_dir
    # the loop's rows, the bar and the test line speak of the task's figure
    rows = (run / "metrics.csv").read_text().splitlines()
    assert {"train_hamming", "val_hamming"} <= set(rows[0].split(","))
    assert "train_acc" not in rows[0]
    said = capsys.readouterr().out
    assert "hamming" in said and "test: per-class accuracy" in said
    # the test metrics are the task's
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["n"] == result.test.n and 0 <= test["hamming_accuracy"] <= 1
    # the model card says which task, with its settings; loading gives them back
    card = json.loads((run / "model.json").read_text())
    assert card["task"] == {"name": "toy-sigmoids", "cut": 0.5}
    clf = cnnkit.load(str(run), device="cpu", backend="torch")
    assert clf.task == toy_task(cut=0.5)
    # answers are the task's, and the scores its sigmoids (they need not sum to one)
    files = sorted(str(p) for p in (data / "circle").iterdir())[:3]
    answers = clf.predict(files)
    assert all(isinstance(a, Tags) for a in answers)
    probs = clf.predict_proba(files)
    assert probs.shape == (3, 3) and not np.allclose(probs.sum(1), 1.0)
    for answer, row in zip(answers, probs):
        assert [c for c, _ in answer.labels] == [c for c, p in zip(clf.classes, row)
                                                 if p >= 0.5]
    # evaluation is the task's too
    assert isinstance(clf.evaluate(str(data)), ToyResult)
    # the predictions file takes the task's columns
    out = tmp_path / "tags.csv"
    assert main(["predict", str(run), *files, "--output", str(out),
                 "--backend", "torch"]) == 0
    assert out.read_text().splitlines()[0] == "path,labels,error"
    assert math.isfinite(result.history[-1]["val_loss"])
