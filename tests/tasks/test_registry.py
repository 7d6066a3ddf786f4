"""The tasks by name: what a sidecar's ``task`` turns into."""

from __future__ import annotations

import pytest

from cnnkit.base.errors import CnnkitError
from cnnkit.tasks.multi_label import MultiLabel
from cnnkit.tasks.registry import DEFAULT, TASKS, get_task, task_from_card
from cnnkit.tasks.single_label import SingleLabel

CLASSES = ("a", "b")


def test_every_task_is_found_by_its_own_name_and_reads_back_its_card_fields() -> None:
    assert DEFAULT == "single-label" and DEFAULT in TASKS
    for name, kind in TASKS.items():
        task = get_task(name)
        assert isinstance(task, kind) and task.name == name
        assert task.card_fields()["name"] == name
        assert task_from_card(task.card_fields(), CLASSES, "m.json") == task


def test_a_card_without_a_task_or_with_its_name_alone_is_read() -> None:
    assert task_from_card(None, CLASSES, "m.json") == SingleLabel()
    assert task_from_card("single-label", CLASSES, "m.json") == SingleLabel()


def test_unknown_or_damaged_tasks_are_one_clear_line() -> None:
    with pytest.raises(CnnkitError, match=r"Unknown task 'boxes'; cnnkit knows single-label"):
        get_task("boxes")
    with pytest.raises(CnnkitError, match=r"m\.json holds a model for the task 'boxes', which "
                                          r"this cnnkit does not know .*upgrade cnnkit"):
        task_from_card({"name": "boxes"}, CLASSES, "m.json")
    with pytest.raises(CnnkitError, match=r"m\.json is incomplete or damaged: task must be"):
        task_from_card(["single-label"], CLASSES, "m.json")


def test_a_card_whose_task_name_was_edited_is_refused_not_answered_as_that_task() -> None:
    # A single-label model.json with "name" changed to multi-label loaded and answered
    # label sets ('3|5|9|2') from the softmax model's logits at 0.5 per label.
    single = {"name": "single-label", "temperature": 0.4,
              "calibration": {"temperature": 0.4, "fitted_on": 160}}
    with pytest.raises(CnnkitError, match=r"m\.json is incomplete or damaged: its task is "
                                          r"'multi-label', but the task holds calibration, "
                                          r"temperature, which a multi-label model never has"):
        task_from_card({**single, "name": "multi-label"}, CLASSES, "m.json")
    with pytest.raises(CnnkitError, match=r"its task is 'single-label', but the task holds "
                                          r"thresholds"):
        task_from_card({"name": "single-label", "thresholds": [0.5, 0.5]}, CLASSES, "m.json")
    # each task's own fields stay readable
    for task in (SingleLabel(temperature=0.4), MultiLabel(thresholds=(0.3, 0.6))):
        assert task_from_card(task.card_fields(), CLASSES, "m.json") == task
