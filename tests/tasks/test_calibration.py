"""Temperature scaling: fitted on held-out scores, it makes the top probability match the
accuracy and never changes the predicted class."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.tasks.calibration import calibrate, ece, fit_temperature, nll, tempered


def _scores(n: int, k: int, scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose true calibration temperature is ``scale``: labels drawn from
    softmax(z), logits handed out as ``z * scale``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return z * scale, labels


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.5])
def test_fit_temperature_finds_the_scale_the_logits_were_stretched_by(scale):
    logits, labels = _scores(4000, 5, scale)
    assert fit_temperature(logits, labels) == pytest.approx(scale, rel=0.1)


def test_calibration_lowers_ece_and_keeps_every_argmax():
    logits, labels = _scores(3000, 10, 3.0, seed=1)  # overconfident, as nets are
    cal = calibrate(logits, labels)
    assert cal.temperature > 2.0
    assert cal.ece_after < cal.ece_before / 3
    assert cal.nll_after < cal.nll_before
    assert (tempered(logits, cal.temperature).argmax(1) == logits.argmax(1)).all()
    # measured on images it was not fitted on, too
    other, other_labels = _scores(3000, 10, 3.0, seed=2)
    assert ece(other, other_labels, cal.temperature) < ece(other, other_labels) / 3


def test_log_probabilities_calibrate_as_their_logits_do():
    logits, labels = _scores(1000, 4, 2.0, seed=3)
    shifted = logits - np.log(np.exp(logits).sum(1, keepdims=True))  # log-softmax
    assert fit_temperature(shifted, labels) == pytest.approx(fit_temperature(logits, labels),
                                                             rel=1e-3)
    assert nll(shifted, labels, 1.7) == pytest.approx(nll(logits, labels, 1.7))


def test_fit_temperature_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="N labels"):
        fit_temperature(np.zeros((3, 2)), np.zeros(2, dtype=int))


def test_a_validation_split_with_no_error_does_not_send_the_temperature_to_its_floor():
    """A digits run right on all 100 validation images fitted T = 0.05 (the search's
    floor): every held-out answer then read 100.0%, its wrong ones too (10 of 797).
    With no error the NLL has no minimum; the mean top probability is instead set to
    Laplace's (n + 1) / (n + 2)."""
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 1.0, (100, 10))
    labels = logits.argmax(1)
    logits[np.arange(100), labels] += 2.0  # all right, none by far
    t = fit_temperature(logits, labels)
    assert t > 0.06
    top = np.exp(tempered(logits, t).max(1))
    assert top.mean() == pytest.approx(101 / 102, abs=1e-4)
    cal = calibrate(logits, labels)
    assert cal.ece_after == pytest.approx(1 / 102, abs=1e-3)  # not a flawless 0.000
