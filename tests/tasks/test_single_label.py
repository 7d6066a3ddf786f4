"""Single-label classification as a task: the same numbers as the code it replaced."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.tasks.single_label import Prediction, SingleLabel
from cnnkit.tasks.threshold import UNKNOWN

TASK = SingleLabel()


def test_the_loss_is_cross_entropy_and_its_denominator_gives_the_weighted_mean() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(7, 4), torch.tensor([0, 1, 2, 3, 3, 1, 0])
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0])
    mean = F.cross_entropy(logits, y, weight=weight, label_smoothing=0.1)
    summed = TASK.loss(logits, y, weight=weight, smoothing=0.1, reduction="sum")
    torch.testing.assert_close(summed / TASK.loss_denominator(y, weight), mean)
    torch.testing.assert_close(TASK.loss(logits, y, weight=weight, smoothing=0.1), mean)
    soft = torch.softmax(torch.randn(7, 4), 1)  # MixUp targets: the mean is over images
    assert TASK.loss_denominator(soft, weight) == 7
    assert TASK.loss_denominator(y, None) == 7


def test_scores_are_log_probabilities_and_views_merge_to_a_renormalised_mean() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    sa, sb = TASK.scores(a), TASK.scores(b)
    torch.testing.assert_close(sa.exp().sum(1), torch.ones(5))
    merged = TASK.merge_views([sa, sb])
    torch.testing.assert_close(merged, ((sa + sb) / 2).log_softmax(1))
    torch.testing.assert_close(merged.exp().sum(1), torch.ones(5))
    assert TASK.merge_views([sa]) is sa
    # NumPy (onnxruntime without torch) gives the same numbers
    np.testing.assert_allclose(TASK.scores_np(a.numpy()), sa.numpy(), atol=1e-6)
    np.testing.assert_allclose(TASK.merge_views_np([sa.numpy(), sb.numpy()]), merged.numpy(),
                               atol=1e-6)


def test_hits_count_the_larger_share_of_mixed_targets() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert TASK.hits(logits, torch.tensor([0, 0, 0])).item() == 2
    mixed = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    assert TASK.hits(logits, mixed).item() == 2
    assert TASK.units(mixed) == 3


def test_validation_sums_add_up_to_the_mean_loss_and_accuracy() -> None:
    torch.manual_seed(1)
    scores = torch.randn(9, 4).log_softmax(1)
    y = torch.randint(0, 4, (9,))
    loss, hits = TASK.validation_sums(scores, y)
    torch.testing.assert_close(loss / 9, F.nll_loss(scores, y))
    assert hits.item() == int((scores.argmax(1) == y).sum())
    empty_loss, empty_hits = TASK.validation_sums(scores[:0], y[:0])
    assert empty_loss.item() == 0 and empty_hits.item() == 0


def test_answers_are_the_top_classes_and_unknown_below_the_threshold() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.4, 0.35, 0.25]], dtype=np.float32)
    classes = ("cat", "dog", "cow")
    sure, unsure = TASK.answers(probs, ["a.png", "b.png"], classes, top_k=2, threshold=0.5)
    assert isinstance(sure, Prediction)
    assert sure.top == [("dog", pytest.approx(0.7)), ("cow", pytest.approx(0.2))]
    assert (sure.label, unsure.label, unsure.top[0][0]) == ("dog", UNKNOWN, "cat")
    assert unsure.to_dict()["unknown"] is True
    # top-k is at least 1 and at most the number of classes
    assert len(TASK.answers(probs, ["a", "b"], classes, top_k=9)[0].top) == 3
    assert len(TASK.answers(probs, ["a", "b"], classes, top_k=0)[0].top) == 1


def test_answer_columns_and_cells_are_the_predictions_file_layout() -> None:
    assert TASK.answer_columns(2) == ["path", "label", "probability", "label1", "prob1",
                                      "label2", "prob2", "error"]
    answer = Prediction("a.png", [("dog", 0.75)])
    assert TASK.answer_fields(answer, 2) == ["dog", "0.750000", "dog", "0.750000", "", ""]
    assert TASK.answer_fields(None, 2) == [""] * 6  # an unreadable file's row


def test_a_task_with_an_unknown_rule_writes_the_score_beside_the_label() -> None:
    from cnnkit.tasks.ood import UnknownRule

    task = replace(TASK, unknown=UnknownRule((0.0, 1.0, 2.0), kept=0.95, fitted_on=20))
    assert task.answer_columns(1) == ["path", "label", "probability", "unknown_score",
                                      "label1", "prob1", "error"]
    answer = Prediction("a.png", [("dog", 0.75)], unknown_score=0.99, unlike=True)
    assert task.answer_fields(answer, 1) == ["unknown", "0.750000", "0.990000", "dog",
                                             "0.750000"]
    assert task.answer_fields(None, 1) == [""] * 5


def test_imbalance_weights_the_loss_or_the_draws() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    counts = torch.tensor(TASK.class_counts(labels, 3), dtype=torch.float)
    assert counts.tolist() == [3, 1, 0]
    weight, draws = TASK.balance(labels, counts, "weighted-loss")
    assert draws is None and weight.tolist() == pytest.approx([4 / 9, 4 / 3, 4 / 3])
    weight, draws = TASK.balance(labels, counts, "balanced-sampling")
    assert weight is None and draws.tolist() == pytest.approx([1 / 3] * 3 + [1.0])
    assert TASK.balance(labels, counts, "none") == (None, None)


def test_a_model_without_calibration_is_told_why_it_may_have_none() -> None:
    # training with too few validation images (or none) fits no temperature or rule; the
    # note at load names that first, not only an older cnnkit
    from cnnkit.tasks.ood import MIN_HELD_OUT

    note = SingleLabel().load_note()
    assert note is not None and f"fewer than {MIN_HELD_OUT} validation images" in note
    assert "--threshold still applies" in note


def test_a_temperature_calibration_could_not_have_fitted_is_refused() -> None:
    # 1e-6 answered every image at 100% (and --threshold never said 'unknown'), 1e30 every
    # class at 1/K, both without a word; calibration only ever fits 0.05 to 20
    from cnnkit.base.errors import CnnkitError
    from cnnkit.tasks.calibration import T_RANGE

    for t in (1e-6, 0.049, 20.5, 1e30, -1.0, 0, "0.4", True, float("nan")):
        with pytest.raises(CnnkitError, match=r"m\.json is incomplete or damaged: the task's "
                                              r"temperature must be a number from 0\.05 to 20"):
            SingleLabel.from_card({"name": "single-label", "temperature": t}, ("a", "b"),
                                  "m.json")
    for t in (*T_RANGE, 0.4, 1):  # the ends of the search (and 1, the default) load
        assert SingleLabel.from_card({"temperature": t}, ("a", "b"), "m.json").temperature == t


def test_top_k_is_reported_only_below_the_number_of_classes() -> None:
    """Top-k of all K classes is 100% for any model: a figure that says nothing."""
    from cnnkit.tasks.metrics import compute

    torch.manual_seed(0)
    labels = torch.randint(0, 5, (40,))
    log_probs = torch.randn(40, 5).log_softmax(1)
    five = compute(log_probs, labels, tuple("abcde"))
    assert set(five.top_k) == {1, 3}
    three = compute(log_probs[:, :3].log_softmax(1), labels % 3, ("a", "b", "c"))
    assert set(three.top_k) == {1}
