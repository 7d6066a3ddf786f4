"""The learning-rate finder: its suggestion trains well, and it changes nothing."""

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
from cnnkit.training.lrfind import TRAIN_PICK, find_lr, suggest
from cnnkit.training.recipe import finalize, resolve_config


def test_suggestions_on_a_known_curve():
    # flat, then falling steepest around lr 1e-3, then diverging
    lrs = np.logspace(-6, 0, 100)
    losses = 2.0 - 1.5 / (1 + np.exp(-(np.log10(lrs) + 3) * 4)) + (lrs > 0.1) * 10 * lrs
    steepest, valley = suggest(list(lrs), list(losses))
    assert 5e-4 < steepest < 2e-3
    assert 1e-4 < valley < 0.1


def test_the_suggestion_trains_at_least_as_well_as_the_default(tmp_path):
    common = dict(model="lenet5", epochs=2, plots=False, out=str(tmp_path), seed=0)
    default = cnnkit.train("digits", **common)
    found = cnnkit.train("digits", lr="find", **common)
    saved = json.loads((found.run_dir / "lr_find.json").read_text())
    assert found.config.lr == float(f"{saved[TRAIN_PICK]:.3g}") != default.config.lr
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
    finding = find_lr(plan, model, splits, steps=30)
    assert len(finding.lrs) >= 10 and all(math.isfinite(v) for v in finding.smoothed)
    assert finding.lrs[0] == 1e-7 and finding.lrs[1] > finding.lrs[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == files


def test_cli_prints_the_suggestion_and_draws_the_curve(tmp_path, capsys):
    out = tmp_path / "curve.png"
    code = main(["lr-find", "shapes:size=16", "-m", "fast-cnn", "--per-class", "20",
                 "--steps", "30", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "suggested lr:" in printed and "steepest" in printed
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
