"""The end of training fits the task's temperature and unknown rule on the validation
split, keeps them in the model card, and never moves the accuracy; without a validation
split it says so in one line and the run still ends."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit.artifacts.modelfile import load_model
from cnnkit.data.imageset import ImageSet
from cnnkit.tasks.ood import MIN_HELD_OUT
from cnnkit.tasks.single_label import SingleLabel
from cnnkit.training.calibrate import fit_on_validation


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrated")
    return cnnkit.train("digits", model="conv8k3same-pool2-conv16k3-gap", img_size=16,
                        epochs=1, batch_size=64, val_fraction=0.2, test_fraction=0.2,
                        plots=False, device="cpu", out=str(out), name="digits-run")


def test_training_keeps_a_temperature_and_an_unknown_rule_in_the_card(digits_run, capsys):
    doc = json.loads((digits_run.run_dir / "model.json").read_text())
    task = doc["task"]
    assert task["name"] == "single-label"
    cal, rule = task["calibration"], task["unknown"]
    assert cal["fitted_on"] == rule["fitted_on"] > MIN_HELD_OUT  # the validation split
    assert task["temperature"] == pytest.approx(cal["temperature"], rel=1e-5)
    assert cal["nll_after"] <= cal["nll_before"]
    assert len(rule["quantiles"]) == 201 and rule["kept"] == 0.95


def test_the_temperature_never_moves_the_predicted_class(digits_run):
    from sklearn.datasets import load_digits

    from cnnkit.runtime.predict import Classifier

    model, card = load_model(digits_run.run_dir)
    assert card.task.temperature != 1.0
    calibrated = Classifier(model, card, torch.device("cpu"), "torch")
    plain = Classifier(model, replace(card, task=SingleLabel()), torch.device("cpu"), "torch")
    images = list((load_digits().images * 255 / 16).astype(np.uint8)[:400])
    p, q = calibrated.predict_proba(images), plain.predict_proba(images)
    assert (p.argmax(1) == q.argmax(1)).all()
    assert not np.allclose(p, q, atol=1e-3)  # the probabilities themselves did change


def _val(n: int) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 3, ("a", "b", "c"))


def test_no_or_too_small_a_validation_split_is_one_line_and_the_task_as_it_was(digits_run,
                                                                              capsys):
    model, card = load_model(digits_run.run_dir)
    plain = SingleLabel()
    assert fit_on_validation(plain, model, None, card.preprocess, torch.device("cpu")) is plain
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not calibrated" in err and "--val-fraction" in err
    assert fit_on_validation(plain, model, _val(MIN_HELD_OUT - 1), card.preprocess,
                             torch.device("cpu")) is plain
    assert "too few" in capsys.readouterr().err


def test_fitted_on_held_out_images_with_test_time_augmentation(digits_run):
    model, card = load_model(digits_run.run_dir)
    net = torch.nn.Sequential(model, torch.nn.Identity())
    fitted = fit_on_validation(SingleLabel(), net, _val(60), card.preprocess,
                               torch.device("cpu"), tta=True)
    assert fitted.calibration.fitted_on == 60 and fitted.unknown.fitted_on == 60
    assert np.isfinite(fitted.unknown.threshold)


def test_a_tta_run_fits_its_rule_on_single_images_as_answers_read_them(tmp_path):
    from cnnkit.data.sources import load_run_splits
    from cnnkit.runtime.inference import view_outputs
    from cnnkit.tasks.ood import energy

    run = cnnkit.train("digits", model="conv8k3same-pool2-conv16k3-gap", img_size=16,
                       epochs=1, batch_size=64, val_fraction=0.2, test_fraction=0.2,
                       tta=True, plots=False, device="cpu", out=str(tmp_path), name="tta")
    model, card = load_model(run.run_dir)
    val = load_run_splits(run.config, card.preprocess).val
    one, _ = view_outputs(model, val, card.preprocess, torch.device("cpu"))
    both, _ = view_outputs(model, val, card.preprocess, torch.device("cpu"), tta=True)
    rule = card.task.unknown
    single = np.quantile(energy(one[0]), [0.5, 0.95])
    merged = np.quantile(np.mean([energy(v) for v in both], axis=0), [0.5, 0.95])
    assert np.interp([0.5, 0.95], rule.levels, rule.quantiles) == pytest.approx(single,
                                                                                  rel=1e-4)
    assert not np.allclose(single, merged, rtol=1e-4)  # the pair's would differ


def test_a_collapsed_model_says_its_rule_reads_the_energy_alone(digits_run, tmp_path, capsys):
    """Features the same for every image give no distance: the rule is the energy's, the
    run says so in a warning line, and no statistics file is left beside the weights."""
    model, card = load_model(digits_run.run_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    weights = tmp_path / "model.safetensors"
    fitted = fit_on_validation(SingleLabel(), model, _val(60), card.preprocess,
                               torch.device("cpu"), train=_val(60), weights=weights)
    err = capsys.readouterr().err
    assert "warning:" in err and "energy alone" in err and "RuntimeWarning" not in err
    assert fitted.unknown is not None and not fitted.unknown.uses_distance
    assert list(tmp_path.iterdir()) == []
