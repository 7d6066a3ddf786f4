"""The unknown rule: fitted on held-out known images (their energies, and with feature
statistics their distances to the classes), it keeps the share of them it was asked to
and flags what scores beyond them."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.tasks.ood import FlatFeatures, UnknownRule, auroc, energy, fit_rule, fit_stats


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


def test_feature_distance_is_the_mahalanobis_distance_to_the_nearest_class():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    labels = rng.integers(0, 3, 3000)
    feats = centres[labels] + rng.normal(0, 1, (3000, 3)) * [1.0, 2.0, 0.5]
    stats = fit_stats(feats, labels, 3)
    cov = np.cov((feats - stats.means[labels]).T, bias=True)
    x = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 4.0], [6.2, 0.1, 0.0]])
    brute = [min(float((v - m) @ np.linalg.inv(cov) @ (v - m)) for m in stats.means)
             for v in x]
    np.testing.assert_allclose(stats.distance(x), brute, rtol=0.02)
    # a step along the narrow axis (std 0.5) is stranger than a longer one along the wide
    assert stats.distance(np.array([[0.0, 0.0, 1.5]]))[0] > \
        stats.distance(np.array([[0.0, 2.5, 0.0]]))[0]


def test_a_class_absent_from_the_statistics_is_never_the_nearest():
    feats = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1]])
    stats = fit_stats(feats, np.array([0, 0, 0, 0]), 2)
    assert np.isfinite(stats.distance(np.array([[5.0, 5.0]]))).all()
    assert stats.distance(np.array([[0.05, 0.05]]))[0] < 1.0


@pytest.mark.parametrize("feats", [np.ones((40, 6)), np.full((40, 600), 2.5),
                                   np.r_[np.zeros((39, 6)), np.full((1, 6), np.nan)]])
def test_features_with_no_spread_or_not_finite_give_no_statistics_and_no_numpy_warning(
        feats):
    """A collapsed model gives every image the same features (a diverged one NaN): there
    is no covariance to whiten, said as such, not an infinite whitening and a warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FlatFeatures):
            fit_stats(feats, np.arange(40) % 2, 2)


def test_a_rule_on_both_scores_flags_an_image_strange_by_either_and_keeps_the_share():
    rng = np.random.default_rng(1)
    e, d = rng.normal(-8, 1, 6000), rng.gamma(4, 1, 6000)
    rule = fit_rule(e[:3000], kept=0.95, known_distances=d[:3000],
                    features={"file": "model.unknown.safetensors", "sha256": "0" * 64,
                              "dim": 8})
    assert rule.uses_distance and rule.to_dict()["score"] == "energy+distance"
    kept = 1 - rule.unknown(e[3000:], d[3000:]).mean()
    assert kept == pytest.approx(0.95, abs=0.015)
    typical_e, typical_d = np.median(e), np.median(d)
    # familiar logits but features far from every class (a near unknown), and the reverse
    flags = rule.unknown(np.array([typical_e, -2.0, typical_e]),
                         np.array([40.0, typical_d, typical_d]))
    assert flags.tolist() == [True, True, False]
    # without the distance (a file that lacks it) the rule is the energy's alone
    assert rule.unknown(np.array([typical_e]))[0] == (typical_e > rule.threshold)
    again = UnknownRule.from_dict(rule.to_dict(), "model.json")
    np.testing.assert_allclose(again.score(e[:50], d[:50]), rule.score(e[:50], d[:50]),
                               atol=1e-5)


@pytest.mark.parametrize("name", ["../model.unknown.safetensors", "/etc/x.safetensors",
                                  "model.unknown.pickle", ""])
def test_a_rule_whose_statistics_file_leaves_the_model_folder_is_refused(name):
    rule = fit_rule(np.linspace(-10, -5, 100), known_distances=np.linspace(1, 9, 100),
                    features={"file": "model.unknown.safetensors", "sha256": "0" * 64,
                              "dim": 4})
    doc = rule.to_dict()
    with pytest.raises(ValueError, match=r"model\.json.*features"):
        UnknownRule.from_dict({**doc, "features": {**doc["features"], "file": name}},
                              "model.json")


def test_wide_features_keep_their_top_directions_and_one_variance_for_the_rest():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 4000)
    centres = rng.normal(0, 3, (4, 40))
    feats = centres[labels] + rng.normal(0, 1, (4000, 40)) * np.r_[np.full(8, 4.0),
                                                                  np.full(32, 1.0)]
    full, low = fit_stats(feats, labels, 4), fit_stats(feats, labels, 4, rank=8)
    assert full.whiten.shape == (40, 40) and full.iso == 0.0
    assert low.whiten.shape == (40, 8) and low.iso > 0
    # the rest is near isotropic here, so the two agree
    x = centres[labels[:200]] + rng.normal(0, 1.5, (200, 40))
    np.testing.assert_allclose(low.distance(x), full.distance(x), rtol=0.1)


@pytest.mark.parametrize("n", [30, 90])  # fewer images than the rank kept, and more
def test_fewer_images_than_features_give_the_shrunk_covariances_own_distance(n):
    """Wider features than images take the images' Gram matrix, not the features'
    covariance: the distance is still the low-rank model of Ledoit-Wolf's covariance."""
    from sklearn.covariance import ledoit_wolf

    rng = np.random.default_rng(3)
    labels = np.arange(n) % 3
    feats = rng.normal(0, 2, (3, 120))[labels] + rng.normal(0, 1, (n, 120)) @ \
        rng.normal(0, 1, (120, 120)) * 0.1
    stats = fit_stats(feats, labels, 3, rank=40)
    assert stats.whiten.shape == (120, 40) and stats.iso > 0
    means = np.stack([feats[labels == c].mean(0) for c in range(3)])
    values, vectors = np.linalg.eigh(ledoit_wolf(feats - means[labels],
                                                 assume_centered=True)[0])
    top, rest = vectors[:, -40:], values[:-40].mean()
    inverse = top @ np.diag(1 / values[-40:]) @ top.T + (np.eye(120) - top @ top.T) / rest
    x = means[[0, 1, 2, 0]] + rng.normal(0, 1, (4, 120))
    brute = [min(float((v - m) @ inverse @ (v - m)) for m in means) for v in x]
    np.testing.assert_allclose(stats.distance(x), brute, rtol=1e-4)
