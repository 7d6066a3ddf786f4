"""Words for counts in the lines cnnkit prints."""

from __future__ import annotations

from cnnkit.base import log


def test_plural_names_one_or_many_with_an_irregular_plural_given() -> None:
    assert log.plural(1, "epoch") == "1 epoch"
    assert log.plural(1_200, "epoch") == "1,200 epochs"
    assert log.plural(1, "class", "classes") == "1 class"
    assert log.plural(3, "class", "classes") == "3 classes"
    assert log.plural(0, "label") == "0 labels"
