"""An export's parity with torch: probabilities, top class and the task's answers."""

from __future__ import annotations

import numpy as np

from cnnkit.export.parity import Parity
from cnnkit.tasks.multi_label import MultiLabel
from cnnkit.tasks.single_label import SingleLabel

LABELS = ("cat", "dog", "hat")


def test_a_label_set_that_changes_at_its_threshold_is_counted_and_said() -> None:
    task = MultiLabel(thresholds=(0.5, 0.3, 0.5))
    torch_probs = np.array([[0.9, 0.31, 0.1], [0.2, 0.8, 0.6]])
    file_probs = np.array([[0.9, 0.29, 0.1], [0.2, 0.8, 0.6]])  # dog falls below 0.3
    p = Parity.of("onnx-int8", "m.int8.onnx", file_probs, torch_probs, "4 images", task, LABELS)
    assert p.top1_agreement == 1.0 and p.answer_agreement == 0.5
    assert "top-1 agreement 100.0%, the same answers for 50.0%" in p.line()
    assert Parity.from_dict(p.to_dict()) == p


def test_one_class_per_image_the_answer_is_the_top_class() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1]])
    other = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]])
    p = Parity.of("onnx", "m.onnx", other, probs, "2 images", SingleLabel(), LABELS)
    assert p.top1_agreement == p.answer_agreement == 0.5
    assert p.line().endswith("top-1 agreement 50.0%")
    old = {k: v for k, v in p.to_dict().items() if k != "answer_agreement"}  # an older card
    assert Parity.from_dict(old).answer_agreement is None
