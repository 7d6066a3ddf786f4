"""What a run costs, said before its first epoch, and --time: a budget that picks the
epochs (and a pretrained model's input side) to fit, and a run that ends on time with
an annealed schedule and a usable model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import cnnkit
from cnnkit.artifacts.modelfile import load_model
from cnnkit.base.config import TrainConfig, load_config_file
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.training import estimate
from cnnkit.training.clock import duration
from cnnkit.training.recipe import resolve_config

MODEL = "conv4k3-pool2-dense8"


def _cli(tree: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", str(tree), "-m", MODEL, "--batch-size", "8", "--no-plots",
            "--device", "cpu", "--out", str(tmp_path / "runs"), "--name", "r", *extra]


def test_the_estimate_line_comes_before_the_first_epoch(
        make_tree, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_tree(tmp_path / "shapes", per_class=8, size=16)
    assert main(_cli(tree, tmp_path, "-e", "2")) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(i for i, t in enumerate(lines) if t.startswith("estimate: about "))
    first_epoch = next(i for i, t in enumerate(lines) if "train loss" in t)
    assert line < first_epoch
    assert "2 epochs x " in lines[line] and "images at 16 px on the CPU" in lines[line]
    assert "timed from" in lines[line] and "steps here" in lines[line]


def test_timing_a_run_changes_nothing_it_trains(make_tree, tmp_path: Path) -> None:
    from cnnkit.training.planner import decide

    tree = make_tree(tmp_path / "shapes", per_class=6, size=16)
    decided = decide(TrainConfig(str(tree), model=MODEL, device="cpu", check=False),
                     cost=False)
    plan, splits, model = decided.plan, decided.splits, decided.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    rates = estimate.measure(plan, model, len(splits.classes), splits.train, splits.val)
    assert rates.steps >= 1 and rates.train["train"] > 0 and rates.infer > 0
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(("seconds", "text"), [
    (7.4, "about 7 s"), (42, "about 40 s"), (95, "about 2 min"), (754, "about 13 min"),
    (8400, "about 2 h 20 min"), (3600, "about 1 h"),
])
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def _pretrained_plan(make_tree, tmp_path: Path, budget: float, **options):
    tree = make_tree(tmp_path / "shapes", per_class=2, size=16)
    return resolve_config(TrainConfig(str(tree), model="efficientnet_lite0", device="cpu",
                                      epochs=6, time=budget, **options))


def _cost(per_epoch_at_224: float):
    def cost(plan) -> float:
        return plan.config.epochs * per_epoch_at_224 * (plan.pre.img_size / 224) ** 2
    return cost


@pytest.mark.parametrize(("budget", "epochs", "side", "says"), [
    (700, 6, 224, "--time 11m40s: the plan fits (6 epochs at 224 px, about 10 min)"),
    (400, 3, 224, "--time 6m40s: 3 epochs at 224 px (about 5 min) instead of 6 at 224 px, "
                  "to fit"),
    (222, 3, 160, "3 epochs at 160 px"),  # 2 at 224 px, 2 at 192: 3 at 160 px instead
    (12, 1, 64, "1 epoch at 64 px"),  # one epoch, and only at the smallest side
])
def test_a_budget_picks_fewer_epochs_before_a_smaller_input(
        make_tree, tmp_path: Path, budget: float, epochs: int, side: int, says: str) -> None:
    """Planned for 90% of the budget; 100 s an epoch at 224 px, by pixels below."""
    plan = _pretrained_plan(make_tree, tmp_path, budget)
    fitted, line = estimate.fit_budget(plan, budget, _cost(100))
    assert (fitted.config.epochs, fitted.pre.img_size, fitted.config.img_size) == \
        (epochs, side, side)
    assert says in line


def test_a_budget_too_short_for_anything_says_what_would_do(make_tree, tmp_path: Path
                                                            ) -> None:
    plan = _pretrained_plan(make_tree, tmp_path, 60)
    with pytest.raises(CnnkitError, match=r"^--time 1m is too short for this run: one epoch "
                                          r"at 64 px takes about 8 s here, after about 55 s "
                                          r"of loading and timing. Allow --time 1m10s or "
                                          r"more, or train on fewer images"):
        estimate.fit_budget(plan, 6, _cost(100))


def test_a_budget_never_changes_an_input_side_that_was_asked_for(make_tree,
                                                                 tmp_path: Path) -> None:
    plan = _pretrained_plan(make_tree, tmp_path, 230, img_size=224)
    fitted, _ = estimate.fit_budget(plan, 230, _cost(100))  # 2 epochs at 224 px, not 3 at 160
    assert (fitted.config.epochs, fitted.pre.img_size) == (2, 224)


def test_a_run_ends_on_time_annealed_with_a_usable_model(
        make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The estimate is made a million times too hopeful, so all 100,000 epochs are
    planned (more than any machine trains in the budget): the loop's clock must still end
    the run on time, its learning rate annealed."""
    real = estimate.measure

    def hopeful(*args, **kwargs):
        rates = real(*args, **kwargs)
        return estimate.Rates({k: v / 1e6 for k, v in rates.train.items()},
                              rates.infer / 1e6, rates.steps)
    monkeypatch.setattr(estimate, "measure", hopeful)
    tree = make_tree(tmp_path / "shapes", per_class=8, size=16)
    budget = 6.0
    start = time.monotonic()
    result = cnnkit.train(str(tree), model=MODEL, epochs=100_000, batch_size=8, time=budget,
                          plots=False, device="cpu", out=str(tmp_path / "runs"))
    elapsed = time.monotonic() - start
    assert elapsed < budget + 4  # the last validation, the test and the files
    history = result.history
    assert 1 <= len(history) < 100_000
    assert history[-1]["lr"] < 0.02 * result.config.lr  # annealed, not cut off at the peak
    assert "ended on the clock" in capsys.readouterr().out
    model, card = load_model(result.run_dir, torch.device("cpu"))
    assert result.test is not None and len(card.classes) == 3
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3)
    assert not (result.run_dir / "checkpoints" / "last.safetensors").exists()
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["time"] == "6s" and config["epochs"] == 100_000  # as --time takes it


def test_a_budget_that_fits_fewer_epochs_trains_fewer(
        make_tree, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_tree(tmp_path / "shapes", per_class=8, size=16)
    assert main(_cli(tree, tmp_path, "-e", "100000", "--time", "5s")) == 0
    out = capsys.readouterr().out
    line = next(t for t in out.splitlines() if t.startswith("--time 5s: "))
    epochs = int(line.split(": ")[1].split(" epoch")[0])
    assert 1 <= epochs < 100000 and "instead of 100000 at 16 px, to fit" in line
    config = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert config["epochs"] == epochs and config["time"] == "5s"
    # the run's config.json repeats it through --config, whose time needs its unit
    again = load_config_file(tmp_path / "runs" / "r" / "config.json")
    assert TrainConfig.from_dict(again).time == 5.0


def test_a_bare_number_of_time_in_a_config_file_is_one_line(
        make_tree, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """time: 90 in a YAML file trained for 90 s where --time 90 is refused."""
    tree = make_tree(tmp_path / "shapes", per_class=2, size=16)
    (tmp_path / "c.yaml").write_text("time: 90\n")
    assert main(_cli(tree, tmp_path, "--config", str(tmp_path / "c.yaml"))) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path / 'c.yaml'}: time takes a duration with units, as "
                   "--time does, such as 90s, 10m, 1.5h or 1h30m ('90m' for minutes, '90s' "
                   "for seconds). Received: 90")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("value", "message"), [
    ("10", "--time takes a duration with units, such as 90s, 10m, 1.5h or 1h30m "
           "(--time 10m for minutes). Received: '10'"),
    ("0m", "--time must be longer than 0 s. Received: '0m'"),
    ("soon", "Received: 'soon'"),
    ("-5m", "Received: '-5m'"),
])
def test_bad_budgets_get_one_clear_line(make_tree, tmp_path: Path, value: str, message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_tree(tmp_path / "shapes", per_class=2, size=16)
    assert main(_cli(tree, tmp_path, "--time", value)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_budget_too_short_for_one_epoch_is_one_line(
        make_tree, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_tree(tmp_path / "shapes", per_class=2, size=16)
    assert main(_cli(tree, tmp_path, "--time", "0.01s")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --time 0.01s is too short for this run: one epoch at 16 px")
    assert len(err.splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_a_config_file_takes_a_budget_in_words(tmp_path: Path) -> None:
    assert TrainConfig.from_dict({"data": "x", "time": "1h30m"}).time == 5400.0
    assert TrainConfig.from_dict({"data": "x", "time": 90}).time == 90.0
    with pytest.raises(CnnkitError, match="--time takes a duration"):
        TrainConfig.from_dict({"data": "x", "time": "ninety"})
    with pytest.raises(CnnkitError, match="--time takes a positive duration"):
        TrainConfig.from_dict({"data": "x", "time": -3})


def _stop_after(epoch: int):
    def callback(trainer, row) -> None:
        if row["epoch"] == epoch:
            raise KeyboardInterrupt
    return callback


def test_a_resumed_run_keeps_what_is_left_of_its_budget(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = {"model": MODEL, "epochs": 3, "batch_size": 16, "plots": False,
               "device": "cpu", "out": str(tmp_path / "runs"), "time": 600.0}
    with pytest.raises(KeyboardInterrupt):
        cnnkit.train("shapes:size=12,count=60", name="r", callbacks=[_stop_after(1)],
                     **options)
    capsys.readouterr()
    result = cnnkit.resume(tmp_path / "runs" / "r")
    out = capsys.readouterr().out
    assert "estimate: about " in out and "2 epochs more x " in out
    assert "--time 10m: " in out and " left for training" in out
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


def test_a_run_that_ended_on_time_is_not_resumed(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = estimate.measure
    monkeypatch.setattr(estimate, "measure", lambda *a, **k: estimate.Rates(
        {n: v / 1000 for n, v in real(*a, **k).train.items()}, 1e-6, 2))
    result = cnnkit.train("shapes:size=12,count=60", model=MODEL, epochs=500, batch_size=16,
                          time=3.0, plots=False, device="cpu", keep_checkpoint=True,
                          out=str(tmp_path / "runs"))
    assert len(result.history) < 500
    with pytest.raises(CnnkitError, match="ended on its --time budget after epoch "
                                          f"{len(result.history)}, its schedule annealed"):
        cnnkit.resume(result.run_dir)


def test_the_phases_share_the_time_left_as_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnkit.training import clock

    now = [100.0]
    monkeypatch.setattr(clock.time, "monotonic", lambda: now[0])
    deadline = clock.Deadline(end=190.0, phase_seconds=(30.0, 60.0))
    head = deadline.phase(0)  # a third of the 90 s left
    assert (head.start, head.end) == (100.0, 130.0)
    assert head.position(10, 100) == 10.0  # on schedule: the steps lead
    now[0] = 115.0
    assert head.position(10, 100) == 50.0  # behind: the clock moves the schedule on
    now[0] = 140.0  # the head phase ran over: the last phase gets what is left
    tune = deadline.phase(1)
    assert (tune.start, tune.end) == (140.0, 190.0) and not tune.expired()
    now[0] = 190.0
    assert tune.expired() and tune.position(0, 100) == 100.0


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1.5h", 5400), ("1h30m", 5400), ("1h30", 5400),
    ("2m30", 150), ("10 min", 600), ("2 hours", 7200),
])
def test_budgets_are_read_as_people_write_them(text: str, seconds: float) -> None:
    from cnnkit.base.config import parse_duration

    assert parse_duration(text) == seconds


def test_a_features_run_whose_codes_are_cached_is_not_estimated_to_compute_them(
        tmp_path: Path) -> None:
    """A second features run on the same images read its codes from the cache in 0.2 s,
    yet its estimate still counted the pass that computes them (about 55 s on
    Fashion-MNIST's 500 images): the estimate looks the codes up where the run will."""
    from cnnkit.training.events import Events, Planned

    said: list[Planned] = []
    for name in ("first", "again"):
        hub = Events()
        hub.subscribe(lambda e: said.append(e) if isinstance(e, Planned) else None)
        # (other images than the features tests': the cache is the session's)
        cnnkit.train("shapes:count=210,size=32", model="efficientnet_lite0", mode="features",
                     img_size=32, plots=False, device="cpu", seed=0, out=str(tmp_path),
                     name=name, events=hub)
    first, again = said
    phases = json.loads((tmp_path / "again" / "phases.json").read_text())
    assert phases[0]["features_cached"] is True
    assert "cached" not in first.line
    coded = again.images["train"] + again.images["val"]
    assert f"features of {coded} images at 32 px (cached by an earlier run: read, not " \
        "computed)" in again.line, again.line
    assert again.seconds < first.seconds


def test_the_estimate_counts_the_calibration_the_run_does_before_its_test(
        make_tree, tmp_path: Path) -> None:
    """The run fits its calibration and unknown rule on the validation images (and the
    feature statistics on up to 1,000 training images at 224 px) before the test; the
    estimate counted only the test: on digits, 'about 80 s' left for 130 s of them."""
    tree = make_tree(tmp_path / "shapes", per_class=4, size=16)
    plan = resolve_config(TrainConfig(str(tree), model="efficientnet_lite0", mode="features",
                                      device="cpu", plots=False))
    rates = estimate.Rates({}, infer=0.01, steps=0, features=0.002)
    fitted = estimate.plan_seconds(plan, estimate.Counts(1458, 160, 179), rates)
    assert fitted.after_s == pytest.approx(179 * 0.01 + 160 * 0.01 + 1000 * 0.002)
    too_few = estimate.plan_seconds(plan, estimate.Counts(1458, 20, 179), rates)
    assert too_few.after_s == pytest.approx(179 * 0.01)  # not calibrated: the test alone
