"""Single-label metrics against scikit-learn on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from cnnkit.tasks.metrics import compute


def _log_probs(predicted: list[int], k: int) -> torch.Tensor:
    scores = torch.full((len(predicted), k), -5.0)
    scores[torch.arange(len(predicted)), torch.tensor(predicted)] = 0.0
    return scores.log_softmax(1)


def test_a_class_absent_from_the_data_stays_out_of_the_macro_average() -> None:
    """Every image right, one of three classes not in the data and never answered: macro
    F1 is 1 (scikit-learn's own average over the classes in the data or the answers),
    not 2/3 from a class that has nothing to measure."""
    truth = [0, 0, 0, 2, 2, 2]
    r = compute(_log_probs(truth, 3), torch.tensor(truth), ("cat", "coffee", "rocket"))
    assert r.accuracy == 1.0
    assert r.macro == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    coffee = r.per_class[1]
    assert coffee["support"] == 0 and coffee["predicted"] == 0


def test_averages_match_scikit_learn_with_an_absent_class_answered() -> None:
    truth = [0, 0, 1, 1, 1, 3, 3]
    predicted = [0, 2, 1, 1, 0, 3, 2]  # class 2: not in the truth but answered twice
    r = compute(_log_probs(predicted, 4), torch.tensor(truth), ("a", "b", "c", "d"))
    for how, got in (("macro", r.macro), ("weighted", r.weighted)):
        p, rec, f, _ = precision_recall_fscore_support(truth, predicted, average=how,
                                                       zero_division=0)
        assert got == pytest.approx({"precision": p, "recall": rec, "f1": f})
    p, rec, f, s = precision_recall_fscore_support(truth, predicted, labels=[0, 1, 2, 3],
                                                   zero_division=0)
    assert [c["precision"] for c in r.per_class] == pytest.approx(p)
    assert [c["recall"] for c in r.per_class] == pytest.approx(rec)
    assert [c["support"] for c in r.per_class] == s.tolist()
    assert [c["predicted"] for c in r.per_class] == [2, 2, 2, 1]
    assert np.array(r.confusion)[:, 2].tolist() == [1, 0, 0, 1]  # columns: answers
