"""--track mlflow / tensorboard: written by a real run, read back with their own readers."""

from __future__ import annotations

import importlib.util
import json

import pytest

import cnnkit
from cnnkit.cli import main
from cnnkit.config import TrainConfig
from cnnkit.rundir import RunDir


def _unset_after_test(monkeypatch, name: str) -> None:
    """Unset ``name`` now and restore its state afterwards, even if the code sets it."""
    monkeypatch.setenv(name, "")  # records the original state for teardown
    monkeypatch.delenv(name)


def test_one_run_logs_to_mlflow_and_tensorboard(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _unset_after_test(monkeypatch, "MLFLOW_ALLOW_FILE_STORE")  # cnnkit sets it for ./mlruns
    result = cnnkit.train("shapes:size=16", model="fast-cnn", epochs=2, per_class=20,
                          track="mlflow+tensorboard", out="runs", plots=False)
    rows = result.history
    state = json.loads((result.run_dir / "tracking.json").read_text())

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    run = client.get_run(state["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == result.run_dir.name
    assert run.data.params["model"] == "fast-cnn" and run.data.params["epochs"] == "2"
    val = client.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, round(m.value, 6)) for m in val] == [
        (r["epoch"], round(r["val_acc"], 6)) for r in rows]
    assert run.data.metrics["test_acc"] == pytest.approx(result.test_accuracy)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "model.json", "metrics.csv", "test_metrics.json",
            "config.json"} <= artifacts

    events = EventAccumulator(str(result.run_dir / "tensorboard"),
                              size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/val", "accuracy/val", "lr", "test/acc"} <= set(tags["scalars"])
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("loss/train")] == [
        (r["epoch"], round(r["train_loss"], 5)) for r in rows]
    assert {"confusion_matrix", "samples/train"} <= set(tags["images"])
    picture = events.Images("confusion_matrix")[-1]
    assert picture.width > 200 and picture.height > 200
    assert not (result.run_dir / "plots").exists()  # plots=False: drawn for TensorBoard only


def test_mlflow_uses_the_tracking_uri_it_is_given(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from cnnkit.training.tracking import MLflowTracker

    store = tmp_path / "elsewhere"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the user's own choice of store
    monkeypatch.chdir(tmp_path)
    run = RunDir.create(tmp_path / "runs", "r")
    tracker = MLflowTracker(run, TrainConfig("digits", epochs=1), {})
    tracker.epoch({"epoch": 1, "train_loss": 0.5})
    tracker.fail("KILLED")
    got = MlflowClient(tracking_uri=store.as_uri()).get_run(tracker.run_id)
    assert got.info.status == "KILLED" and got.data.metrics["train_loss"] == 0.5
    assert not (tmp_path / "mlruns").exists()


def test_a_missing_tracker_package_is_one_line(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    code = main(["train", "digits", "--track", "mlflow", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "pip install 'cnnkit[mlflow]'" in err
    assert not list(tmp_path.iterdir())
    assert main(["train", "digits", "--track", "wandb", "--out", str(tmp_path)]) == 2
    assert "--track takes none, mlflow, tensorboard" in capsys.readouterr().err


def test_resume_continues_the_same_mlflow_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _unset_after_test(monkeypatch, "MLFLOW_ALLOW_FILE_STORE")

    def stop_after_first(trainer, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cnnkit.train("shapes:size=16", model="fast-cnn", epochs=2, per_class=20,
                     track="mlflow", out="runs", plots=False, callbacks=[stop_after_first])
    run_dir = next((tmp_path / "runs").iterdir())
    state = json.loads((run_dir / "tracking.json").read_text())
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    assert client.get_run(state["mlflow_run_id"]).info.status == "KILLED"
    result = cnnkit.resume(run_dir)
    assert json.loads((run_dir / "tracking.json").read_text()) == state
    run = client.get_run(state["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert steps == [1, 2] and len(result.history) == 2
    assert len(client.search_runs([run.info.experiment_id])) == 1
