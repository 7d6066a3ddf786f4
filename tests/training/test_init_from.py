"""--init-from RUN: a run starts from a finished run's weights (the features -> fine-tune
recipe), its classes checked against the data's."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.training.optim import trained_start_share

DATA = "shapes:count=60,size=32"
FAST = {"img_size": 32, "plots": False, "device": "cpu", "seed": 0}


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def features_run(lite0_features_run: cnnkit.TrainResult) -> Iterator[cnnkit.TrainResult]:
    """The session's features run of Lite0 on DATA (tests/conftest.py), that the
    fine-tunes start from: --init-from only reads it (checked after the module's tests)."""
    before = _files(lite0_features_run.run_dir)
    yield lite0_features_run
    assert _files(lite0_features_run.run_dir) == before


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cnnkit.TrainResult]:
    """One short seed-cnn run that others start from, shared read-only as above."""
    out = tmp_path_factory.mktemp("init-from-seed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cnnkit-cache"))
        first = cnnkit.train(DATA, model="seed-cnn", epochs=1, out=str(out), name="a", **FAST)
    before = _files(first.run_dir)
    yield first
    assert _files(first.run_dir) == before


def test_features_then_fine_tune_from_it(features_run: cnnkit.TrainResult, tmp_path: Path,
                                         capsys) -> None:
    first = features_run
    second = cnnkit.train(DATA, mode="fine-tune", init_from=str(first.run_dir), epochs=1,
                          batch_size=16, out=str(tmp_path), name="tuned",
                          **{**FAST, "img_size": None, "plots": True})
    out = capsys.readouterr().out
    assert f"init: the weights of {first.run_dir} (features of efficientnet_lite0)" in out
    config = json.loads((second.run_dir / "config.json").read_text())
    assert config["init_from"] == str(first.run_dir) and config["model"] == "efficientnet_lite0"
    assert config["probe"] is False and config["head_epochs"] == 0  # its head is trained
    phases = json.loads((second.run_dir / "phases.json").read_text())
    assert [p["name"] for p in phases] == ["fine-tune"]
    # same architecture (the features run's tapped backbone); the weights moved on from
    # it unless the start did better on validation (kept.json says which)
    a = load_file(first.run_dir / "model.safetensors")
    b = load_file(second.run_dir / "model.safetensors")
    assert a.keys() == b.keys()
    kept = json.loads((second.run_dir / "kept.json").read_text())
    assert all(torch.equal(a[k], b[k]) for k in a) == (kept["kept"] == "start")
    html = (second.run_dir / "report.html").read_text()
    assert "Started from the weights of the run" in html and str(first.run_dir) in html


def test_a_scratch_run_continues_from_another(seed_run: cnnkit.TrainResult,
                                              tmp_path: Path) -> None:
    first = seed_run
    second = cnnkit.train(DATA, init_from=str(first.run_dir), epochs=1, lr=1e-9,
                          schedule="constant", out=str(tmp_path), name="b", **FAST)
    a = load_file(first.run_dir / "model.safetensors")
    b = load_file(second.run_dir / "model.safetensors")
    # at a rate of 1e-9 one epoch leaves the first run's weights (nearly) as they were
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    card = json.loads((second.run_dir / "model.json").read_text())
    assert card["input"] == json.loads((first.run_dir / "model.json").read_text())["input"]


def test_mistakes_with_init_from(seed_run: cnnkit.TrainResult, tmp_path: Path,
                                 capsys) -> None:
    first = seed_run
    with pytest.raises(CnnkitError, match=r"other classes .*the data adds 0, 1"):
        cnnkit.train("digits", init_from=str(first.run_dir), epochs=1, out=str(tmp_path),
                     **{**FAST, "img_size": None, "channels": None})
    for argv, message in (
            (["--model", "lenet5"], "Drop --model"),
            (["--img-size", "64"], "drop --img-size"),
            (["--mode", "features"], "--weights"),
            (["--weights", str(first.run_dir / "model.safetensors")], "pass one of them")):
        code = main(["train", DATA, "--init-from", str(first.run_dir), "--out",
                     str(tmp_path / "no"), *argv])
        assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
    code = main(["train", DATA, "--init-from", str(tmp_path / "nowhere")])
    assert code == 2 and "Not found" in capsys.readouterr().err


def test_a_short_fine_tune_never_ends_worse_than_its_start(features_run: cnnkit.TrainResult,
                                                           tmp_path: Path, capsys) -> None:
    # Issue 28: two epochs of fine-tuning from a features run at 70% ended at 40% (the
    # full fine-tuning rate, 2e-3, shook off what the start knew in a few steps).
    first = features_run
    capsys.readouterr()
    second = cnnkit.train(DATA, mode="fine-tune", init_from=str(first.run_dir), epochs=2,
                          batch_size=16, out=str(tmp_path), name="tuned",
                          **{**FAST, "img_size": None})
    out = capsys.readouterr().out
    # 54 training images in batches of 16, two epochs: 8 steps, a quarter of the rate
    assert "a trained start (--init-from) and 8 steps: peak rate 0.0005, 0.25 of 0.002" in out
    assert json.loads((second.run_dir / "config.json").read_text())["lr"] == 5e-4
    start = f"start (the weights of {first.run_dir}): val loss"
    assert start in out
    # the epochs themselves: never worse than guessing among 3 classes (before: a training
    # loss of 2.26, then 4.13)
    assert all(row["train_loss"] < math.log(3) for row in second.history)
    kept = json.loads((second.run_dir / "kept.json").read_text())
    assert kept["val_acc"] >= kept["start"]["val_acc"]
    assert second.test_accuracy >= first.test_accuracy
    assert not (second.run_dir / "checkpoints").exists()  # the start's copy is gone too


def test_the_start_is_kept_when_training_does_worse(features_run: cnnkit.TrainResult,
                                                    tmp_path: Path, capsys) -> None:
    first = features_run
    capsys.readouterr()
    # a rate given by hand is taken as given: 0.5 wrecks the model in a step
    second = cnnkit.train(DATA, mode="fine-tune", init_from=str(first.run_dir), epochs=1,
                          lr=0.5, batch_size=16, out=str(tmp_path), name="wrecked",
                          **{**FAST, "img_size": None, "plots": True})
    captured = capsys.readouterr()
    assert "peak rate" not in captured.out
    kept = json.loads((second.run_dir / "kept.json").read_text())
    assert kept["kept"] == "start" and kept["epoch"] == 0
    assert kept["end"]["val_acc"] < kept["start"]["val_acc"] == kept["val_acc"]
    assert (f"kept the starting weights (the weights of {first.run_dir}): validation "
            f"{kept['start']['val_acc']:.2%}") in captured.err
    a = load_file(first.run_dir / "model.safetensors")
    b = load_file(second.run_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.test_accuracy == first.test_accuracy  # the same model, the same split
    assert cnnkit.load(str(second.run_dir), backend="torch") is not None  # sidecar matches
    html = (second.run_dir / "report.html").read_text()
    assert "Metrics of the starting weights" in html


def test_a_resumed_run_still_compares_with_its_start(features_run: cnnkit.TrainResult,
                                                     tmp_path: Path) -> None:
    first = features_run

    def stop(trainer, row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cnnkit.train(DATA, mode="fine-tune", init_from=str(first.run_dir), epochs=2, lr=0.5,
                     batch_size=16, out=str(tmp_path), name="cut", callbacks=[stop],
                     **{**FAST, "img_size": None})
    cut = tmp_path / "cut"
    assert (cut / "checkpoints" / "start.safetensors").is_file()
    assert not (cut / "kept.json").exists()
    cnnkit.resume(cut)
    kept = json.loads((cut / "kept.json").read_text())
    assert kept["kept"] == "start" and kept["end"]["epoch"] == 2
    a = load_file(first.run_dir / "model.safetensors")
    b = load_file(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_share_of_the_rate_grows_with_the_run() -> None:
    assert trained_start_share(8) == trained_start_share(100) == 0.25
    assert trained_start_share(200) == 0.5
    assert trained_start_share(400) == trained_start_share(5000) == 1.0


@pytest.mark.parametrize("copied, said", [(False, "--seed 6 there, 0 here"),
                                           (True, "the same files at other paths")])
def test_a_start_that_learnt_this_runs_test_images_is_refused(
        make_tree, tmp_path: Path, capsys, copied: bool, said: str) -> None:
    """A folder split with another --seed puts the start's training images in this run's
    test split: its test figures would look held out and not be (a seed-6 start had
    learnt 32 of a seed-0 run's 40 test images, and the run printed their accuracy). A
    copy of the start's folder (cp -r) holds them at other paths: the check compared
    paths, so it let the run test and validate on them."""
    tree = make_tree(tmp_path / "photos", per_class=10)
    opts = {**FAST, "img_size": None, "out": str(tmp_path / "runs")}
    first = cnnkit.train(str(tree), model="lenet5", epochs=1, **{**opts, "seed": 6})
    data = shutil.copytree(tree, tmp_path / "copy") if copied else tree
    capsys.readouterr()
    code = main(["train", str(data), "--init-from", str(first.run_dir), "-e", "1",
                 "--no-plots", "--out", str(tmp_path / "no"), "--seed", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "test images" in err and said in err
    assert not (tmp_path / "no").exists()
    # the same split (same seed and fractions) starts as before
    second = cnnkit.train(str(data), init_from=str(first.run_dir), epochs=1,
                          **{**opts, "seed": 6})
    assert (second.run_dir / "test_metrics.json").is_file()


def test_a_run_that_ends_on_the_clock_still_keeps_a_better_start(
        seed_run: cnnkit.TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys) -> None:
    """A --time run whose last phase ended on the clock returned before comparing its end
    with its start: a fine-tune that fell from 70% (the probe) to 50% validation kept the
    50% model, wrote no kept.json and left checkpoints/start.safetensors behind."""
    from cnnkit.training import estimate

    real = estimate.measure
    monkeypatch.setattr(estimate, "measure", lambda *a, **k: estimate.Rates(
        {n: v / 1e6 for n, v in real(*a, **k).train.items()}, 1e-9, 2))
    # far more epochs than the budget holds, at a rate that wrecks the model in a step
    second = cnnkit.train(DATA, init_from=str(seed_run.run_dir), epochs=100_000, lr=0.5,
                          time=4.0, out=str(tmp_path), name="clock", **FAST)
    out = capsys.readouterr()
    assert "ended on the clock" in out.out
    kept = json.loads((second.run_dir / "kept.json").read_text())
    assert kept["kept"] == "start" and "kept the starting weights" in out.err
    a = load_file(seed_run.run_dir / "model.safetensors")
    b = load_file(second.run_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (second.run_dir / "checkpoints").exists()
