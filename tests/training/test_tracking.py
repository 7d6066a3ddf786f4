"""--track mlflow / tensorboard: written by a real run, read back with their own readers."""

from __future__ import annotations

import importlib.util
import json

import pytest

import cnnkit
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.config import TrainConfig
from cnnkit.cli import main


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

    # MLflow's own default store here, the one `mlflow ui` in this folder opens
    assert state["mlflow_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=state["mlflow_uri"])
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
    client = MlflowClient(tracking_uri=state["mlflow_uri"])
    assert client.get_run(state["mlflow_run_id"]).info.status == "KILLED"
    result = cnnkit.resume(run_dir)
    assert json.loads((run_dir / "tracking.json").read_text()) == state
    run = client.get_run(state["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert steps == [1, 2] and len(result.history) == 2
    assert len(client.search_runs([run.info.experiment_id])) == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_run_opens_in_mlflows_ui(tmp_path, monkeypatch, capsys):
    """README's steps: train with --track mlflow, run `mlflow ui` in the same folder, and
    the run is there: a real MLflow server, read through its REST API and its page."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _unset_after_test(monkeypatch, "MLFLOW_ALLOW_FILE_STORE")
    assert main(["train", "shapes:size=12,count=60", "--model", "conv4k3-pool2-dense8",
                 "-e", "2", "--track", "mlflow", "--out", "runs", "--name", "seen"]) == 0
    said = capsys.readouterr().out
    assert "to see it: mlflow ui --backend-store-uri sqlite:" in said
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE")}
    # The server's job runner (GenAI jobs, another process importing MLflow) has no part
    # in showing runs; it only doubles the start-up.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--port", str(port),
                               "--workers", "1"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def get(path: str, body: dict | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read()

    try:
        deadline = time.monotonic() + 240  # MLflow imports a lot; a busy machine is slow
        while True:
            assert server.poll() is None, server.communicate()[1][-2000:]
            try:
                if get("/health") == b"OK":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow ui did not answer"
            time.sleep(0.5)
        experiment = json.loads(get("/api/2.0/mlflow/experiments/get-by-name"
                                    "?experiment_name=cnnkit"))["experiment"]
        runs = json.loads(get("/api/2.0/mlflow/runs/search",
                              {"experiment_ids": [experiment["experiment_id"]]}))["runs"]
        assert len(runs) == 1
        run = runs[0]
        assert run["info"]["run_name"] == "seen" and run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert params["model"] == "conv4k3-pool2-dense8" and params["epochs"] == "2"
        saved = json.loads((tmp_path / "runs" / "seen" / "test_metrics.json").read_text())
        assert metrics["test_acc"] == pytest.approx(saved["accuracy"])
        run_id = run["info"]["run_id"]
        listed = json.loads(get(f"/api/2.0/mlflow/artifacts/list?run_id={run_id}"))
        assert {"model.safetensors", "model.json", "report.html"} <= {
            f["path"] for f in listed["files"]}
        card = json.loads(get(f"/get-artifact?path=model.json&run_uuid={run_id}"))
        assert card["format"] == "cnnkit-model"
        page = get("/").decode()  # the web UI itself (mlflow-skinny has none)
        script = re.search(r'src="\.?/?(static-files/static/js/[^"]+\.js)"', page)
        assert script is not None, page[:500]
        assert len(get("/" + script.group(1))) > 10_000
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
