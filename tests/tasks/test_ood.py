"""The energy rule for unknown inputs: fitted on held-out known images, it keeps the
share of them it was asked to and flags what scores beyond them."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.tasks.ood import UnknownRule, auroc, energy, fit_rule


def test_energy_is_minus_logsumexp_and_lower_for_a_confident_logit():
    logits = np.array([[10.0, 0.0, 0.0], [0.1, 0.0, -0.1]])
    assert energy(logits) == pytest.approx(-np.log(np.exp(logits).sum(1)))
    assert energy(logits)[0] < energy(logits)[1]
    assert energy(np.array([[1000.0, 999.0]]))[0] == pytest.approx(-1000.3132617)  # no overflow


def test_rule_keeps_the_asked_share_of_known_images_and_flags_stranger_ones():
    rng = np.random.default_rng(0)
    known = rng.normal(-8, 1, 5000)
    rule = fit_rule(known[:2500], kept=0.95)
    assert rule.fitted_on == 2500
    assert 1 - rule.unknown(known[2500:]).mean() == pytest.approx(0.95, abs=0.015)
    strange = rng.normal(-2, 1, 1000)
    assert rule.unknown(strange).mean() > 0.95
    scores = rule.score(np.array([-20.0, -8.0, 0.0]))
    assert scores[0] == 0.0 and scores[2] == 1.0 and 0.4 < scores[1] < 0.6
    assert auroc(rule.score(known[2500:]), rule.score(strange)) > 0.99


def test_rule_round_trips_through_the_card_and_refuses_damage():
    rule = fit_rule(np.linspace(-10, -5, 400))
    again = UnknownRule.from_dict(rule.to_dict(), "model.json")
    assert again.threshold == pytest.approx(rule.threshold, abs=1e-5)
    assert again.kept == rule.kept and again.fitted_on == 400
    doc = rule.to_dict()
    for bad in ({**doc, "quantiles": doc["quantiles"][::-1]}, {**doc, "kept": 1.5},
                {**doc, "quantiles": ["a", "b"]}, {**doc, "score": "msp"}):
        with pytest.raises(ValueError, match=r"model\.json"):
            UnknownRule.from_dict(bad, "model.json")


def test_fit_rule_needs_held_out_images():
    with pytest.raises(ValueError, match="2 or more held-out"):
        fit_rule(np.array([1.0]))
