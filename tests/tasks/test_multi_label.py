"""The multi-label task: its loss, scores, figures, answers and model-card fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.base.errors import CnnkitError
from cnnkit.tasks.multi_label import MultiLabel

CLASSES = ("cat", "dog", "bird")


def test_the_loss_is_binary_cross_entropy_summed_over_labels() -> None:
    task = MultiLabel()
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 0.3, -2.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    by_hand = -(y * F.logsigmoid(logits) + (1 - y) * F.logsigmoid(-logits)).sum() / 2
    assert task.loss(logits, y).item() == pytest.approx(by_hand.item(), rel=1e-6)
    summed = task.loss(logits, y, reduction="sum") / task.loss_denominator(y, None)
    assert summed.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # per-label positive weights weigh only the positives
    w = torch.tensor([1.0, 1.0, 3.0])
    heavier = -(y * w * F.logsigmoid(logits) + (1 - y) * F.logsigmoid(-logits)).sum() / 2
    assert task.loss(logits, y, weight=w).item() == pytest.approx(heavier.item(), rel=1e-6)
    # smoothing pulls the targets towards 0.5
    soft = y * 0.9 + 0.05
    smooth = -(soft * F.logsigmoid(logits) + (1 - soft) * F.logsigmoid(-logits)).sum() / 2
    assert task.loss(logits, y, smoothing=0.1).item() == pytest.approx(smooth.item(), rel=1e-6)


def test_scores_are_log_sigmoids_in_torch_and_numpy_alike() -> None:
    task = MultiLabel()
    logits = torch.tensor([[30.0, -30.0, 0.0], [1.0, 2.0, -3.0]])
    scores = task.scores(logits)
    assert torch.allclose(scores.exp(), torch.sigmoid(logits))
    np.testing.assert_allclose(task.scores_np(logits.numpy()), scores.numpy(), rtol=1e-6,
                               atol=1e-7)
    views = [scores, task.scores(logits * 0.5)]
    merged = task.merge_views(views).exp()
    assert torch.allclose(merged, (torch.sigmoid(logits) + torch.sigmoid(logits * 0.5)) / 2)
    np.testing.assert_allclose(task.merge_views_np([v.numpy() for v in views]),
                               task.merge_views(views).numpy(), rtol=1e-5, atol=1e-6)


def test_validation_sums_match_the_loss_and_exact_match() -> None:
    task = MultiLabel()
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 0.3, -2.0], [1.0, -3.0, -1.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    bce, hits = task.validation_sums(task.scores(logits), y)
    assert bce.item() == pytest.approx(task.loss(logits, y, reduction="sum").item(), rel=1e-5)
    assert hits.item() == 2 == task.hits(logits, y).item()  # image 1 answers dog wrongly


def test_answers_are_label_sets_at_each_labels_threshold() -> None:
    task = MultiLabel((0.3, 0.6, 0.5))
    probs = np.array([[0.35, 0.55, 0.9], [0.1, 0.2, 0.3]])
    first, second = task.answers(probs, ["a.png", "b.png"], CLASSES, top_k=2)
    assert first.labels == [("bird", pytest.approx(0.9)), ("cat", pytest.approx(0.35))]
    assert first.label == "bird|cat" and [c for c, _ in first.top] == ["bird", "dog"]
    assert second.labels == [] and second.label == "" and second.probability == 0.3
    d = first.to_dict()
    assert d["labels"][0] == {"label": "bird", "probability": pytest.approx(0.9)}
    assert d["thresholds"] == {"cat": 0.3, "dog": 0.6, "bird": 0.5}
    # one --threshold for all labels overrides the card's
    (over,) = task.answers(probs[:1], ["a.png"], CLASSES, threshold=0.5)
    assert over.label == "bird|dog"
    columns = task.answer_columns(2)
    cells = task.answer_fields(first, 2)
    assert columns == ["path", "labels", "probabilities", "label1", "prob1", "label2", "prob2",
                       "error"]
    assert cells == ["bird|cat", "0.900000|0.350000", "bird", "0.900000", "dog", "0.550000"]
    assert len(task.answer_fields(None, 2)) == len(columns) - 2


def test_thresholds_live_in_the_card_and_are_checked_when_read() -> None:
    task = MultiLabel((0.25, 0.5, 0.75))
    fields = task.card_fields()
    assert fields == {"name": "multi-label", "thresholds": [0.25, 0.5, 0.75]}
    assert MultiLabel.from_card(fields, CLASSES, "model.json") == task
    assert MultiLabel.from_card({"name": "multi-label"}, CLASSES, "m.json").thresholds is None
    with pytest.raises(CnnkitError, match="3 thresholds for 2 labels"):
        MultiLabel.from_card(fields, ("a", "b"), "model.json")
    with pytest.raises(CnnkitError, match="must be a list"):
        MultiLabel.from_card({"name": "multi-label", "thresholds": "0.5"}, CLASSES, "m.json")



def test_the_card_keeps_a_fitted_threshold_as_fitted() -> None:
    # a cut between scores closer than 1e-6 was rounded a second time for model.json,
    # so the saved model answered differently from the one the thresholds were fitted on
    task = MultiLabel((0.12345665, 0.5, 0.99999992))
    assert MultiLabel.from_card(task.card_fields(), CLASSES, "model.json") == task

def test_imbalance_gives_positive_weights_or_sampling_weights() -> None:
    task = MultiLabel()
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    counts = torch.tensor(task.class_counts(y, 2), dtype=torch.float)
    assert counts.tolist() == [3, 1]
    weights, none = task.balance(y, counts, "weighted-loss")
    assert none is None and weights.tolist() == pytest.approx([1 / 3, 3.0])
    none, sampling = task.balance(y, counts, "balanced-sampling")
    assert none is None and sampling.tolist() == pytest.approx([1 / 3, 1 / 3, 1.0, 1.0])
    assert task.balance(y, counts, "none") == (None, None)



def test_a_label_every_image_has_keeps_its_positives_weighed() -> None:
    # negatives/positives is 0 for a label on every training image: its positives
    # weighed nothing, only label smoothing's pull towards 0 trained it, and the model
    # answered a label present in 100% of the images with probability 0.3 and falling
    task = MultiLabel()
    y = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    counts = torch.tensor(task.class_counts(y, 2), dtype=torch.float)
    weights, _ = task.balance(y, counts, "weighted-loss")
    assert weights.tolist() == pytest.approx([1.0, 3.0])
    logits = torch.zeros(4, 2, requires_grad=True)
    task.loss(logits, y, weight=weights, smoothing=0.1).backward()
    assert (logits.grad[:, 0] < 0).all()  # every image pushes the ubiquitous label up

def test_evaluate_uses_the_cards_thresholds_or_one_given() -> None:
    task = MultiLabel((0.3, 0.6, 0.5))
    probs = torch.tensor([[0.35, 0.55, 0.9], [0.1, 0.7, 0.3]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    result = task.evaluate(probs.log(), y, CLASSES)
    assert result.exact_match == 1.0 and result.thresholds == (0.3, 0.6, 0.5)
    assert task.evaluate(probs.log(), y, CLASSES, threshold=0.5).exact_match == 0.5
    assert "mAP 1.0000" in task.summary(result)
    assert math.isclose(result.scalars()["mAP"], 1.0)
    with pytest.raises(CnnkitError, match="give one class each"):
        task.evaluate(probs.log(), torch.tensor([0, 1]), CLASSES)


def test_the_thresholds_line_shows_small_thresholds_as_they_are() -> None:
    task = MultiLabel(thresholds=(0.003, 0.42, 0.05), fitted_on=40)
    line = task.held_out_summary()
    assert line is not None and "0.003, 0.42, 0.05 (in model.json" in line
