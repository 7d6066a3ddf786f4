"""The learning-rate finder: its suggestion trains well, it never suggests a rate past the
loss's rise, it says so when its curve cannot be read, and it changes nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

import cnnkit
from cnnkit.base.config import TrainConfig
from cnnkit.base.paths import cache_dir
from cnnkit.cli import main
from cnnkit.data.sources import load_run_splits
from cnnkit.models.build import create_model
from cnnkit.training.lrfind import MIN_POINTS, SUGGESTIONS, TRAIN_PICK, find_lr, read_curve
from cnnkit.training.recipe import finalize, resolve_config

LRS = np.logspace(-7, 1, 100)


def _falling_then_diverging(noise: float, seed: int = 0) -> np.ndarray:
    """Flat at 2.3, falling to 0.8 around 1e-3, blowing up past 0.05: plus batch noise."""
    x = np.log10(LRS)
    clean = 2.3 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.where(LRS > 0.05, 40 * (LRS - 0.05), 0)
    return clean + np.random.default_rng(seed).normal(0, noise, len(LRS))


def test_suggestions_lie_before_the_rise_on_a_clear_curve():
    finding = read_curve(list(LRS), list(_falling_then_diverging(0.02)))
    assert finding.trusted, finding.doubt
    assert 0.01 < finding.bottom <= 0.08  # the loss's lowest point, where it turns up
    assert set(finding.suggestions) == set(SUGGESTIONS)
    assert all(lr <= finding.bottom for lr in finding.suggestions.values())
    # the knee: 80% of the fall is made by about 3x the centre of the fall (1e-3)
    assert 1e-3 < finding.knee < 1e-2
    assert 3e-4 < finding.steepest < 3e-3
    assert finding.suggestion() == finding.suggestions[TRAIN_PICK]


def test_a_spike_past_the_bottom_is_never_suggested():
    # The 160-image case of issue 28: after the bottom the loss spikes and the average
    # decays from the spike, a slope the old steepest-descent rule took for a fall.
    losses = _falling_then_diverging(0.02)
    losses[80:] = 2.5 + 30 * np.exp(-np.arange(20) / 4)
    finding = read_curve(list(LRS), list(losses))
    assert finding.bottom < LRS[80]
    assert all(lr <= finding.bottom for lr in finding.suggestions.values())


def test_a_curve_too_noisy_short_or_flat_suggests_nothing():
    noisy = read_curve(list(LRS), list(_falling_then_diverging(2.0)))
    assert not noisy.trusted and noisy.doubt.startswith("too noisy")
    assert noisy.suggestion() is None
    short = read_curve(list(LRS[:MIN_POINTS]), list(_falling_then_diverging(0.02)[:MIN_POINTS]))
    assert short.doubt.startswith("too short")
    flat = read_curve(list(LRS), list(2.3 + np.random.default_rng(0).normal(0, 0.01, 100)))
    assert flat.doubt.startswith("too flat") and flat.suggestion() is None
    for seed in range(20):  # nothing but noise: never a suggestion
        noise = 2.3 + np.random.default_rng(seed).normal(0, 0.5, 100)
        assert read_curve(list(LRS), list(noise)).suggestion() is None


def test_160_images_train_at_a_rate_before_the_rise(tmp_path, capsys):
    # Issue 28: 160 Fashion-MNIST PNGs; the finder took 0.509, a point past the loss's
    # blow-up, and the run ended at chance (10%) where the default rate reached 55%.
    assert main(["data", "export", "fashion-mnist", str(tmp_path / "fm"), "--per-class",
                 "20"]) == 0
    train, test = str(tmp_path / "fm" / "train"), str(tmp_path / "fm" / "test")
    common = dict(model="seed-cnn", epochs=3, plots=False, out=str(tmp_path / "runs"), seed=0)
    found = cnnkit.train(train, lr="find", **common)
    assert "--lr find: training at the finder's" in capsys.readouterr().out
    default = cnnkit.train(train, **common)
    saved = json.loads((found.run_dir / "lr_find.json").read_text())
    assert saved["picked"] == TRAIN_PICK and saved["default"] == default.config.lr
    assert found.config.lr <= saved["bottom"] < 0.05
    # on the folder's own 200 test images (the run's held-out split has 20)
    ours = cnnkit.evaluate(str(found.run_dir), test, backend="torch").accuracy
    theirs = cnnkit.evaluate(str(default.run_dir), test, backend="torch").accuracy
    assert ours >= theirs - 0.01 and ours > 0.3


def test_a_trained_start_has_a_flat_curve_and_keeps_the_default(tmp_path, capsys):
    first = cnnkit.train("digits", model="lenet5", epochs=3, plots=False, out=str(tmp_path),
                         seed=0)
    capsys.readouterr()
    again = cnnkit.train("digits", init_from=str(first.run_dir), lr="find", epochs=1,
                         plots=False, out=str(tmp_path), seed=0)
    line = next(t for t in capsys.readouterr().out.splitlines()
                if t.startswith("--lr find:"))
    assert "the curve is too flat" in line
    assert f"training at the default rate, {again.config.lr:g}" in line
    saved = json.loads((again.run_dir / "lr_find.json").read_text())
    assert saved["picked"] == "default" and saved["trusted"] is False
    assert again.config.lr == saved["default"]
    assert (again.run_dir / "plots" / "lr_find.png").is_file()


def test_the_suggestion_trains_at_least_as_well_as_the_default(tmp_path):
    common = dict(model="lenet5", epochs=2, plots=False, out=str(tmp_path), seed=0)
    default = cnnkit.train("digits", **common)
    found = cnnkit.train("digits", lr="find", **common)
    saved = json.loads((found.run_dir / "lr_find.json").read_text())
    assert saved["picked"] == TRAIN_PICK and saved["trusted"] is True
    assert found.config.lr == float(f"{saved[TRAIN_PICK]:.3g}") != default.config.lr
    assert found.config.lr <= saved["bottom"]
    assert json.loads((found.run_dir / "config.json").read_text())["lr"] == found.config.lr
    assert (found.run_dir / "plots" / "lr_find.png").stat().st_size > 10_000
    assert found.test_accuracy >= default.test_accuracy


def test_the_finder_leaves_weights_random_state_and_cache_as_they_were(tmp_path):
    plan = resolve_config(TrainConfig("shapes:size=16", model="fast-cnn", per_class=20))
    splits = load_run_splits(plan.config, plan.pre, plan.source)
    plan = finalize(plan, splits)
    model = create_model(plan.arch, len(splits.classes), plan.pre.channels, plan.pre.img_size,
                         pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cache = cache_dir()
    files = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    rng = torch.get_rng_state()
    finding = find_lr(plan, model, splits, steps=100)
    assert len(finding.lrs) >= 10 and all(math.isfinite(v) for v in finding.smoothed)
    assert finding.lrs[0] == 1e-7 and finding.lrs[1] > finding.lrs[0]
    # it stopped where the loss diverged, well before the last rate (10)
    assert finding.diverged and len(finding.lrs) < 100 and finding.lrs[-1] < 10
    assert finding.bottom < finding.lrs[-1]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == files


def test_cli_prints_the_suggestion_and_draws_the_curve(tmp_path, capsys):
    out = tmp_path / "curve.png"
    code = main(["lr-find", "shapes:size=16", "-m", "fast-cnn", "--per-class", "20",
                 "--steps", "30", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    # 30 steps leave too few points before the lowest one: no number, and why
    assert "suggested lr: none (the curve is too short" in printed
    assert "keep the default" in printed
    assert out.stat().st_size > 10_000


def test_bad_lr_is_one_line(tmp_path, capsys):
    code = main(["train", "digits", "--lr", "fast", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--lr takes a positive number or 'find'" in err
    assert not list(Path(tmp_path).iterdir())


def test_lr_find_with_the_features_mode_is_refused_before_any_work(tmp_path, capsys):
    code = main(["train", "digits", "-m", "efficientnet_lite0", "--mode", "features",
                 "--lr", "find", "--out", str(tmp_path)])
    assert code == 2 and "--lr find picks a rate" in capsys.readouterr().err
    assert not list(Path(tmp_path).iterdir())


def test_rates_that_are_not_finite_are_one_line_before_any_work(tmp_path, capsys):
    for start, end in (("1e-7", "inf"), ("nan", "10"), ("1", "0.1")):
        code = main(["lr-find", "digits", "-m", "lenet5", "--start", start, "--end", end,
                     "--out", str(tmp_path / "curve.png")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert "finite rates with 0 < start < end" in err
    assert not list(Path(tmp_path).iterdir())
