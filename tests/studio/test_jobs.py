"""Jobs started through a real ``cnnkit studio`` server process, as the page starts them."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
from PIL import Image, PngImagePlugin
from tests.studio.conftest import Studio


def _add_images(client: httpx.Client) -> None:
    for name, colour in (("light", 220), ("dark", 30)):
        client.post("/api/classes", json={"name": name}).raise_for_status()
        for k in range(12):
            buf = io.BytesIO()
            Image.fromarray(np.full((24, 24, 3), colour + (k % 3) * 5, np.uint8)).save(
                buf, "PNG")
            client.post(f"/api/classes/{name}/images", content=buf.getvalue()
                        ).raise_for_status()


def _state(client: httpx.Client, job_id: str) -> str:
    return client.get(f"/api/jobs/{job_id}").json()["status"]["state"]


def _ended(client: httpx.Client, job_id: str, seconds: float = 300) -> str:
    """The state a job ends in, waited for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while _state(client, job_id) in ("starting", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return _state(client, job_id)


def _refused(client: httpx.Client, kind: str, run: str, action: str) -> None:
    """A ``kind`` job of ``run`` is refused while it trains, with the one line saying why,
    and no job is started."""
    refused = client.post("/api/jobs", json={"kind": kind, "options": {"run": run}})
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == STILL_TRAINING.format(run=run, action=action)
    assert client.get(f"/api/jobs?kind={kind}").json()["jobs"] == []


STILL_TRAINING = ("Run {run!r} is still training: {action} once it has finished (its "
                  "model changes with each better epoch, and its calibration is written at "
                  "the end).")


@contextmanager
def _training(client: httpx.Client) -> Iterator[str]:
    """A scratch run listed while it trains (its name); stopped as the page's Stop button
    stops it, and waited for, on leaving."""
    job = client.post("/api/jobs", json={"kind": "train", "options": {
        "mode": "scratch", "epochs": 200}}).json()
    deadline = time.monotonic() + 240
    try:
        runs: list[dict] = []
        while not runs:  # listed once its first best model is saved
            assert time.monotonic() < deadline and _state(client, job["id"]) in (
                "starting", "running")
            runs = client.get("/api/runs").json()["runs"]
            time.sleep(0.2)
        assert runs[0]["training"] is True
        yield runs[0]["name"]
    finally:
        client.post(f"/api/jobs/{job['id']}/stop")
        while _state(client, job["id"]) in ("starting", "running"):
            assert time.monotonic() < deadline + 120
            time.sleep(0.2)
    assert _state(client, job["id"]) == "done"
    assert client.get("/api/runs").json()["runs"][0]["training"] is False


def test_a_run_still_training_is_neither_analysed_nor_zipped_until_it_has_finished(
        studio: Studio) -> None:
    """The Understand tab's Analyse button and the Ship tab's zip link acted on a run
    listed while it trained: an analysis of an early epoch's weights, and a zip of a
    folder without its card, calibration and test. The server refuses both, saying why,
    and does both once the run has finished."""
    with studio.client() as client:
        _add_images(client)
        with _training(client) as run:
            _refused(client, "understand", run, "analyse it")
            refused = client.get(f"/api/runs/{run}/zip")
            assert refused.status_code == 409, refused.text
            assert refused.json()["detail"] == STILL_TRAINING.format(
                run=run, action="download its folder")
        understand = client.post("/api/jobs", json={"kind": "understand",
                                                    "options": {"run": run}})
        assert understand.status_code == 200, understand.text
        assert _ended(client, understand.json()["id"]) == "done"
        zipped = client.get(f"/api/runs/{run}/zip")
        assert zipped.status_code == 200, zipped.text
        names = zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
        assert f"{run}/model.safetensors" in names and f"{run}/test_metrics.json" in names


def test_a_run_still_training_cannot_be_exported_until_it_has_finished(
        studio: Studio) -> None:
    """The Ship tab lists a run from its first saved model on, and its Export button
    started an export of the half-written run: a model.onnx of an early epoch's weights,
    without the calibration the run writes at its end. The server refuses it, saying
    why, and exports the run once it has finished."""
    with studio.client() as client:
        _add_images(client)
        with _training(client) as run:
            _refused(client, "export", run, "export it")
            assert not (studio.project / ".cnnkit" / "runs" / run / "model.onnx").exists()
        export = client.post("/api/jobs", json={"kind": "export", "options": {"run": run}})
        assert export.status_code == 200, export.text
        assert _ended(client, export.json()["id"]) == "done"
        assert client.get("/api/runs").json()["runs"][0]["files"] == ["model.onnx"]


def test_a_run_at_chance_shows_the_warning_training_ends_with(studio: Studio) -> None:
    """cnnkit train ends a run whose kept model scores at chance with a warning saying
    so and why; a run the studio trained was listed as 'test 50.0%' without a word. The
    run list carries the warning, which the page shows beside the run's result."""
    with studio.client() as client:
        for name in ("left", "right"):  # one picture in both classes: nothing to learn
            client.post("/api/classes", json={"name": name}).raise_for_status()
            for k in range(110):
                buf = io.BytesIO()
                info = PngImagePlugin.PngInfo()
                info.add_text("copy", f"{name}{k}")  # another file, the same pixels
                Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(
                    buf, "PNG", pnginfo=info)
                client.post(f"/api/classes/{name}/images", content=buf.getvalue()
                            ).raise_for_status()
        job = client.post("/api/jobs", json={"kind": "train", "options": {
            "mode": "scratch", "epochs": 2}}).json()
        assert _ended(client, job["id"]) == "done"
        events = [json.loads(line) for line in (
            studio.project / ".cnnkit" / "jobs" / job["id"] / "events.jsonl"
        ).read_text().splitlines()]
        said = [e["at_chance"] for e in events if e["kind"] == "test"]
        assert said and said[0].startswith("the kept model's validation accuracy is "), said
        run = client.get("/api/runs").json()["runs"][0]
        assert run["training"] is False and run["warning"] == said[0]
