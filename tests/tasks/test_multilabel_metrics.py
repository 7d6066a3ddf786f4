"""Multi-label metrics and per-label thresholds, checked against hand-worked figures."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.tasks.label_thresholds import (
    DEFAULT,
    best_f1_threshold,
    check_thresholds,
    choose_thresholds,
)
from cnnkit.tasks.multilabel_metrics import compute_multilabel

TRUTH = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
PROBS = np.array([[0.9, 0.2, 0.1], [0.4, 0.8, 0.3], [0.6, 0.7, 0.2], [0.1, 0.6, 0.05]])


def test_metrics_of_a_worked_example() -> None:
    r = compute_multilabel(PROBS, TRUTH, ("a", "b", "c"))
    # at 0.5: a = {0, 2} (truth {0, 1}), b = {1, 2, 3} (truth {1, 2}), c = {}
    assert r.predicted.tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]]
    a, b, c = r.per_label
    assert (a["precision"], a["recall"]) == (0.5, 0.5)
    assert b["precision"] == pytest.approx(2 / 3) and b["recall"] == 1.0
    # AP of a: ranking 0.9 (pos), 0.6 (neg), 0.4 (pos) -> (1 + 2/3) / 2
    assert a["ap"] == pytest.approx(5 / 6) and b["ap"] == pytest.approx(1.0)
    assert c["ap"] is None and c["support"] == 0  # no positive image: no AP
    assert r.map_macro == pytest.approx((5 / 6 + 1) / 2)  # over the labels that have one
    assert r.exact_match == 0.25  # only image 0 is wholly right
    assert r.hamming_loss == pytest.approx(3 / 12)
    assert r.unlabelled == 1
    assert r.cooccurrence == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert r.predicted_cooccurrence[0][1] == 1 and r.predicted_cooccurrence[1][1] == 3
    bce = -np.log([0.9, 0.8, 0.9, 0.4, 0.8, 0.7, 0.4, 0.7, 0.8, 0.9, 0.4, 0.95]).sum() / 4
    assert r.loss == pytest.approx(bce, rel=1e-6)



def test_a_model_of_one_label_gets_that_labels_figures() -> None:
    # scikit-learn reads one column as binary data: per-label precision, recall and F1
    # were the absent class's (0, 0, 0 for a label answered on every image) and micro
    # recall was accuracy
    y = np.array([[1], [1], [0], [0], [0]], dtype=np.float32)
    p = np.array([[0.9], [0.6], [0.7], [0.4], [0.1]])
    r = compute_multilabel(p, y, ("bag",), thresholds=0.5)
    (bag,) = r.per_label
    assert (bag["precision"], bag["recall"], bag["support"], bag["predicted"]) == (
        pytest.approx(2 / 3), 1.0, 2, 3)
    assert bag["f1"] == pytest.approx(0.8)
    assert r.micro == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})
    assert r.macro == r.micro
    assert r.exact_match == pytest.approx(0.8) and r.hamming_loss == pytest.approx(0.2)

def test_thresholds_change_the_answers_not_the_ranking_metrics() -> None:
    r = compute_multilabel(PROBS, TRUTH, ("a", "b", "c"), thresholds=[0.35, 0.65, 0.5])
    assert r.exact_match == 0.75 and r.per_label[0]["recall"] == 1.0  # only image 2 wrong
    assert r.map_macro == compute_multilabel(PROBS, TRUTH, ("a", "b", "c")).map_macro
    d = r.to_dict()
    assert d["mAP"]["macro"] == r.map_macro and d["thresholds"] == [0.35, 0.65, 0.5]
    assert set(d["pr_curves"]) == {"a", "b"}
    curve = d["pr_curves"]["a"]
    assert len(curve["recall"]) == 101 and curve["precision"][0] == 1.0
    assert curve["precision"][-1] == pytest.approx(2 / 3, abs=1e-4)


def test_top_losses_per_label_are_the_worst_answers() -> None:
    r = compute_multilabel(PROBS, TRUTH, ("a", "b", "c"))
    worst = r.top_losses(2)
    assert [w["index"] for w in worst["a"]] == [2, 1]  # 0.6 but absent, 0.4 but present
    assert worst["a"][1]["truth"] and not worst["a"][0]["truth"]


def test_the_best_f1_cut_sits_between_two_scores() -> None:
    scores = np.array([0.95, 0.9, 0.7, 0.6, 0.3, 0.2])
    truth = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    t, f1 = best_f1_threshold(scores, truth)
    assert t == pytest.approx(0.45) and f1 == pytest.approx(6 / 7)
    assert ((scores >= t) == np.array([1, 1, 1, 1, 0, 0], bool)).all()



@pytest.mark.parametrize("positive, negative", [
    (0.1234567, 0.1234566),              # the midpoint rounds up to 0.123457
    (0.99999994, 0.9999999),             # float32 sigmoids near 1: it rounded to 1.0
])
def test_a_cut_between_close_scores_still_answers_the_images_above_it(
        positive: float, negative: float) -> None:
    # rounded to 6 decimals, the cut landed above the positives' score: a label the
    # validation images separated perfectly (F1 1) was then never answered
    p = np.float32([positive] * 5 + [negative] * 3 + [0.01] * 10)[:, None]
    y = np.array([1] * 5 + [0] * 13)[:, None]
    (t,), _ = choose_thresholds(p, y)
    assert (p[:, 0] >= t).tolist() == [True] * 5 + [False] * 13
    assert best_f1_threshold(p[:, 0].astype(np.float64), y[:, 0] > 0)[1] == 1.0

def test_labels_with_few_positives_keep_the_default() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros((100, 2))
    y[:30, 0] = 1
    y[:3, 1] = 1
    p = np.clip(y * 0.3 + rng.random((100, 2)) * 0.4, 0, 1)
    thresholds, defaulted = choose_thresholds(p, y)
    assert defaulted == [1] and thresholds[1] == DEFAULT
    assert thresholds[0] < 0.5  # positives score 0.3-0.7 here: the best cut is below 0.5
    r_tuned = compute_multilabel(p, y, ("a", "b"), thresholds)
    r_half = compute_multilabel(p, y, ("a", "b"))
    assert r_tuned.per_label[0]["f1"] > r_half.per_label[0]["f1"]


def test_stored_thresholds_are_checked() -> None:
    assert check_thresholds([0.2, 1], ("a", "b"), "x") == [0.2, 1.0]
    with pytest.raises(Exception, match="2 thresholds for 3 labels"):
        check_thresholds([0.2, 0.3], ("a", "b", "c"), "model.json")
    with pytest.raises(Exception, match=r"label 'b'.*Received: 1\.5"):
        check_thresholds([0.2, 1.5], ("a", "b"), "model.json")
