"""The threshold module: validation, the unknown label, coverage and reliability figures."""

from __future__ import annotations

import math

import pytest

from cnnkit.base.errors import CnnkitError
from cnnkit.tasks.threshold import UNKNOWN, check_threshold, coverage, label_or_unknown, reliability


def test_thresholds_are_probabilities() -> None:
    assert check_threshold(None) is None
    assert check_threshold("0.75") == 0.75
    assert check_threshold(0) == 0.0 and check_threshold(1) == 1.0
    with pytest.raises(CnnkitError, match=r"between 0 and 1.*as a share: 0\.6.*Received: 60"):
        check_threshold(60)
    with pytest.raises(CnnkitError) as err:  # not read as 1.5%: no share suggested
        check_threshold(1.5)
    assert "as a share" not in str(err.value) and "Received: 1.5" in str(err.value)
    for bad in (-0.1, "high", math.nan, True):
        with pytest.raises(CnnkitError, match="--threshold is a probability"):
            check_threshold(bad)


def test_below_the_threshold_is_unknown() -> None:
    assert label_or_unknown("cup", 0.976, None) == "cup"
    assert label_or_unknown("cup", 0.976, 0.99) == UNKNOWN
    assert label_or_unknown("cup", 0.99, 0.99) == "cup"  # at P the answer stands


def test_coverage_counts_answers_and_their_accuracy() -> None:
    conf = [0.95, 0.9, 0.6, 0.4]
    right = [True, True, False, True]
    rows = {c.threshold: c for c in coverage(conf, right, (0.0, 0.5, 0.9, 0.99))}
    assert rows[0.0].answered == 1.0 and rows[0.0].accuracy == 0.75
    assert rows[0.5].count == 3 and rows[0.5].accuracy == pytest.approx(2 / 3)
    assert rows[0.9].answered == 0.5 and rows[0.9].accuracy == 1.0
    assert rows[0.99].count == 0 and math.isnan(rows[0.99].accuracy)


def test_reliability_bins_and_calibration_error() -> None:
    # Confident and always right in the top bin; 0.55 and right half the time in bin 5.
    rel = reliability([0.95, 0.95, 0.55, 0.55], [True, True, True, False])
    assert rel.counts[9] == 2 and rel.counts[5] == 2 and sum(rel.counts) == 4
    assert rel.accuracy[9] == 1.0 and rel.accuracy[5] == 0.5
    assert rel.ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
