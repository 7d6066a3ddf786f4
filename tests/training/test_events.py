"""The training-events seam: what a real run tells its subscribers, and a stop request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.training import events as ev

TINY = "shapes:size=12,count=60"
OPTIONS = {"model": "conv4k3-pool2-dense8", "batch_size": 16, "plots": False,
           "device": "cpu", "keep": "best"}


def _run(tmp_path: Path, hub: ev.Events, **options) -> cnnkit.TrainResult:
    return cnnkit.train(TINY, events=hub, out=str(tmp_path / "runs"),
                        **{**OPTIONS, **options})


def test_a_run_tells_its_plan_steps_epochs_model_test_and_end(tmp_path, capsys) -> None:
    seen: list[ev.Event] = []
    result = _run(tmp_path, ev.Events(seen.append), epochs=3, name="told")
    kinds = [e.kind for e in seen]
    # in this order: the plan before the run folder, the epochs, the test, the end
    assert kinds[0] == "plan" and kinds[1] == "run" and kinds[-2:] == ["test", "end"]
    plan = seen[0]
    assert plan.line.startswith("estimate: ") and plan.seconds > 0
    assert plan.epochs == 3 and plan.classes == ("circle", "square", "triangle")
    out = capsys.readouterr().out
    assert "54 train, 6 val, 15 test images" in out
    assert plan.images == {"train": 54, "val": 6, "test": 15}
    assert plan.line in out  # the console prints the same line
    epochs = [e for e in seen if isinstance(e, ev.EpochEnded)]
    assert [e.row for e in epochs] == result.history  # metrics.csv's rows, as they came
    assert [e.epoch for e in epochs] == [1, 2, 3] and not any(e.stopping for e in epochs)
    for epoch in epochs:  # each epoch's steps run 1..steps, their figures the row's
        steps = [e for e in seen if isinstance(e, ev.StepDone) and e.epoch == epoch.epoch]
        assert [s.step for s in steps] == list(range(1, steps[0].steps + 1))
        assert steps[-1].loss == pytest.approx(epoch.row["train_loss"])
        assert steps[-1].acc == pytest.approx(epoch.row["train_acc"])
    best = [e for e in seen if isinstance(e, ev.BestModel)]
    assert best and all(e.path == result.run_dir / "model.safetensors" for e in best)
    assert [e.epoch for e in best] == [e.epoch for e in epochs if e.improved]
    assert seen[-2].test.accuracy == result.test_accuracy
    assert seen[-1].run_dir == result.run_dir and seen[-1].history == result.history
    for event in seen:  # every event travels as JSON (the studio streams them)
        assert json.loads(json.dumps(event.to_dict()))["kind"] == event.kind


def test_a_stop_request_ends_the_run_with_a_complete_folder(tmp_path) -> None:
    hub = ev.Events()

    def stop_in_epoch_two(event: ev.Event) -> None:
        if isinstance(event, ev.StepDone) and event.epoch == 2:
            hub.request_stop()

    hub.subscribe(stop_in_epoch_two)
    seen: list[ev.Event] = []
    hub.subscribe(seen.append)
    result = _run(tmp_path, hub, epochs=6, name="stopped")
    epochs = [e for e in seen if isinstance(e, ev.EpochEnded)]
    assert [e.epoch for e in epochs] == [1, 2] and epochs[-1].stopping == "asked"
    steps = [e for e in seen if isinstance(e, ev.StepDone) and e.epoch == 2]
    assert steps[-1].step < steps[-1].steps  # it stopped within the epoch
    assert len(result.history) == 2 and result.test is not None
    run = result.run_dir
    assert (run / "model.safetensors").is_file() and (run / "test_metrics.json").is_file()
    assert not (run / "checkpoints").exists()  # ended, not resumable
    with pytest.raises(CnnkitError, match="nothing to resume"):
        cnnkit.resume(run)


def test_a_stop_asked_in_an_epoch_of_one_step_ends_the_run_after_it(tmp_path) -> None:
    hub = ev.Events()
    hub.subscribe(lambda e: hub.request_stop() if isinstance(e, ev.StepDone) and
                  e.epoch == 2 else None)
    seen: list[ev.Event] = []
    hub.subscribe(seen.append)
    result = _run(tmp_path, hub, epochs=6, name="one-step", batch_size=64)
    epochs = [e for e in seen if isinstance(e, ev.EpochEnded)]
    assert {e.steps for e in seen if isinstance(e, ev.EpochStarted)} == {1}
    assert [e.epoch for e in epochs] == [1, 2] and epochs[-1].stopping == "asked"
    assert len(result.history) == 2 and result.test is not None


def test_a_failing_subscriber_stops_the_run_and_the_error_is_told(tmp_path) -> None:
    seen: list[ev.Event] = []

    def fail_at_the_first_epoch(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.EpochEnded):
            raise ValueError("the subscriber gave up")

    with pytest.raises(ValueError, match="gave up"):
        _run(tmp_path, ev.Events(fail_at_the_first_epoch), epochs=3, name="failed")
    failed = seen[-1]
    assert isinstance(failed, ev.RunFailed) and failed.status == "FAILED"
    assert failed.message == "ValueError: the subscriber gave up"
    assert failed.run_dir == tmp_path / "runs" / "failed"
    assert [e.kind for e in seen].count("epoch") == 1


def test_bad_data_is_told_before_any_run_folder(tmp_path) -> None:
    seen: list[ev.Event] = []
    with pytest.raises(CnnkitError):
        cnnkit.train(str(tmp_path / "missing"), events=ev.Events(seen.append),
                     out=str(tmp_path / "runs"), **OPTIONS)
    assert [e.kind for e in seen] == ["error"] and seen[0].run_dir is None
    assert "missing" in seen[0].message


def test_a_plan_says_the_estimate_and_writes_no_run(tmp_path, capsys) -> None:
    from cnnkit.training.session import plan

    planned = plan(TINY, out=str(tmp_path / "runs"), epochs=4, **OPTIONS)
    assert isinstance(planned, ev.Planned) and planned.epochs == 4
    assert planned.line.startswith("estimate: ") and planned.line in capsys.readouterr().out
    assert planned.mode == "scratch" and planned.img_size == 12
    assert not (tmp_path / "runs").exists()


def test_a_run_given_its_plan_says_it_again_instead_of_timing_steps(tmp_path, monkeypatch
                                                                    ) -> None:
    from dataclasses import replace

    from cnnkit.training import estimate
    from cnnkit.training.session import plan

    planned = plan(TINY, out=str(tmp_path / "runs"), epochs=2, **OPTIONS)
    timed: list[str] = []
    original = estimate.measure
    monkeypatch.setattr(estimate, "measure", lambda *a, **k: timed.append("timed") or
                        original(*a, **k))
    seen: list[ev.Event] = []
    _run(tmp_path, ev.Events(seen.append), epochs=2, name="planned", planned=planned)
    assert seen[0] == planned and timed == []  # the same estimate, no step timed again
    # a plan of other data (or other epochs) is not this run's: its steps are timed
    for other in (replace(planned, images={**planned.images, "train": 53}),
                  replace(planned, epochs=3)):
        seen.clear()
        _run(tmp_path, ev.Events(seen.append), epochs=2, name=f"other{len(timed)}",
             planned=other)
        assert seen[0].kind == "plan" and seen[0] != other
    assert timed == ["timed", "timed"]
