"""The studio's API in process: who may change what, and names that cannot escape."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnkit.cli import main
from cnnkit.studio.app import create_app
from cnnkit.studio.project import Project

KEY = "studio-test-key"


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), (10, 200, 30), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project.open(tmp_path / "p")


@pytest.fixture
def client(project: Project) -> Iterator[TestClient]:
    with TestClient(create_app(project, spare_worker=False),
                    base_url="http://127.0.0.1") as c:
        c.headers["X-Studio"] = "1"
        yield c


def test_the_page_edits_the_project(client: TestClient, project: Project) -> None:
    assert client.post("/api/classes", json={"name": "muffin"}).json() == {"name": "muffin"}
    r = client.post("/api/classes/muffin/images?filename=a.jpg", content=jpeg(),
                    headers={"Content-Type": "image/jpeg"})
    assert r.json() == {"name": "a.jpg"}
    assert client.get("/api/classes/muffin/images/a.jpg").content == jpeg()
    assert client.get("/api/project").json()["classes"] == [{"name": "muffin", "images": 1}]
    undo = client.delete("/api/classes/muffin/images/a.jpg").json()["undo"]
    assert client.get("/api/classes/muffin/images").json()["images"] == []
    client.post(f"/api/undo/{undo}")
    assert (project.root / "muffin" / "a.jpg").is_file()
    assert client.post("/api/classes/muffin/rename", json={"name": "cake"}).status_code == 200
    assert sorted(p.name for p in project.root.iterdir()) == [".cnnkit", "cake"]


def test_other_sites_cannot_change_anything(client: TestClient, project: Project) -> None:
    # a form or script on another site cannot send X-Studio, nor hide its origin
    bare = client.post("/api/classes", json={"name": "x"}, headers={"X-Studio": ""})
    assert bare.status_code == 403
    foreign = client.post("/api/classes", json={"name": "x"},
                          headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    rebound = client.get("/api/project", headers={"Host": "evil.example"})
    assert rebound.status_code == 400  # DNS rebinding: a Host this studio does not answer
    assert [p.name for p in project.root.iterdir()] == [".cnnkit"]


@pytest.mark.parametrize("path", [
    "/api/classes/..%2F..%2Fetc/images", "/api/classes/.cnnkit/images",
    "/api/classes/a/images/..%2F..%2F..%2Fetc%2Fpasswd", "/api/runs/..%2F..%2F/zip",
    "/api/runs/x/files/..%2Fspec.json", "/api/runs/x/cam/..%2F..%2Fmodel.json",
    "/api/jobs/..%2F..%2Fspec.json",
])
def test_names_in_urls_cannot_leave_the_project(client: TestClient, path: str) -> None:
    client.post("/api/classes", json={"name": "a"})
    r = client.get(path)
    assert r.status_code == 404, (path, r.text)


def test_bad_requests_get_one_clear_line(client: TestClient) -> None:
    client.post("/api/classes", json={"name": "a"})
    cases = [
        (client.post("/api/jobs", json={"kind": "train", "options": {"mode": "rm -rf"}}), 400,
         "mode must be one of quick, better, scratch"),
        (client.post("/api/jobs", json={"kind": "train", "options": {"epochs": "9; x"}}), 400,
         "epochs must be a whole number"),
        (client.post("/api/jobs", json={"kind": "shell"}), 400, "kind must be"),
        (client.post("/api/classes/a/images", content=b"<svg/>"), 415, "not an image"),
        (client.post("/api/runs/none/predict", content=jpeg()), 404, "No finished run"),
        (client.post("/api/classes", content=b"[1]"), 400, "JSON object"),
        (client.post("/api/classes", json={"name": "../x"}), 400, "cannot hold '/'"),
        (client.post("/api/runs/none/predict?top_k=many", content=jpeg()), 422,
         "top_k: Input should be a valid integer"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]


def test_uploads_over_the_limit_are_refused_before_they_are_read(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cnnkit.studio.app.MAX_BODY", 1000)
    with TestClient(create_app(project, spare_worker=False), base_url="http://127.0.0.1") as c:
        c.post("/api/classes", json={"name": "a"}, headers={"X-Studio": "1"})
        r = c.post("/api/classes/a/images", content=b"\xff" * 5000,
                   headers={"X-Studio": "1"})
    assert r.status_code == 413
    assert list((project.root / "a").iterdir()) == []


def test_an_api_key_guards_everything_but_the_page(project: Project) -> None:
    with TestClient(create_app(project, api_key=KEY, spare_worker=False),
                    base_url="http://127.0.0.1") as c:
        assert c.get("/").status_code == 200
        assert c.get("/static/studio.js").status_code == 200
        assert c.get("/api/project").status_code == 401
        assert c.get("/api/project", headers={"Authorization": "Bearer wrong"}).status_code \
            == 401
        assert c.get("/api/project", headers={"Authorization": f"Bearer {KEY}"}).status_code \
            == 200
        c.cookies.set("cnnkit_studio_key", KEY)  # what the page keeps after asking once
        assert c.get("/api/project").status_code == 200


def test_beyond_this_machine_the_studio_needs_a_key(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    code = main(["studio", str(tmp_path / "p"), "--host", "0.0.0.0", "--no-open"])
    err = capsys.readouterr().err
    assert code == 2 and "give --api-key KEY" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()  # nothing written before the refusal


def test_one_run_at_a_time_and_stop_keeps_a_complete_run(client: TestClient,
                                                         project: Project) -> None:
    for name, colour in (("light", 220), ("dark", 30)):
        client.post("/api/classes", json={"name": name})
        for k in range(12):
            buf = io.BytesIO()
            Image.fromarray(np.full((24, 24, 3), colour + (k % 3) * 5, np.uint8)).save(
                buf, "PNG")
            client.post(f"/api/classes/{name}/images", content=buf.getvalue())
    jobs = client.app.state.jobs
    first = client.post("/api/jobs", json={"kind": "train", "options": {
        "mode": "scratch", "epochs": 200}}).json()
    job = jobs.get(first["id"])
    try:
        second = client.post("/api/jobs", json={"kind": "train"})  # a second tab's click
        assert second.status_code == 409 and "is running" in second.json()["detail"]
        deadline = time.monotonic() + 180
        while '"kind": "epoch"' not in (job.folder / "events.jsonl").read_text():
            assert job.alive() and time.monotonic() < deadline, job.status()
            time.sleep(0.2)
        client.post(f"/api/jobs/{job.id}/stop")  # the page's Stop button
        while job.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        jobs.stop(job.id)
    status = job.status()
    assert status["state"] == "done", status  # stopped as early stopping stops a run
    run = project.runs_dir / status["result"]["run"]
    assert (run / "model.safetensors").is_file() and (run / "test_metrics.json").is_file()
    # a reloaded page replays the job's story from its file, then hears how it ended
    text = client.get(f"/api/jobs/{job.id}/events").text
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert 1 <= len(epochs) < 200 and epochs[-1]["stopping"] == "asked"
    assert [e["kind"] for e in events][-2:] == ["job", "status"]
    assert events[-1]["state"] == "done"
    assert any(r["name"] == run.name for r in client.get("/api/runs").json()["runs"])

    # closing the studio (Ctrl-C) stops a run as Ctrl-C stops `cnnkit train`: resumable
    again = jobs.get(client.post("/api/jobs", json={"kind": "train", "options": {
        "mode": "scratch", "epochs": 200}}).json()["id"])
    while '"kind": "epoch"' not in (again.folder / "events.jsonl").read_text():
        assert again.alive() and time.monotonic() < deadline + 180, again.status()
        time.sleep(0.2)
    jobs.close()
    assert not again.alive() and again.status()["state"] == "stopped"
    run_dir = next(p for p in project.runs_dir.iterdir() if p.name != run.name)
    assert (run_dir / "checkpoints").is_dir()  # cnnkit train --resume RUN goes on


def test_the_check_shows_each_finding_with_its_images(client: TestClient,
                                                      project: Project) -> None:
    for name, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
        client.post("/api/classes", json={"name": name})
        for k in range(3):
            buf = io.BytesIO()
            Image.fromarray(np.full((64, 64, 3), (colour[0], k * 60, colour[2]),
                                    np.uint8)).save(buf, "PNG")
            client.post(f"/api/classes/{name}/images?filename={k}.png", content=buf.getvalue())
    (project.root / "dog" / "copy.png").write_bytes((project.root / "cat" / "0.png").read_bytes())
    job = client.post("/api/jobs", json={"kind": "check"}).json()
    deadline = time.monotonic() + 120
    while client.get(f"/api/jobs/{job['id']}").json()["status"]["state"] in (
            "starting", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    result = client.get(f"/api/jobs/{job['id']}/check").json()
    assert result["counts"]["all"] == {"cat": 3, "dog": 4}
    twice = [f for f in result["findings"] if "two or more labels" in f["what"]]
    assert len(twice) == 1
    assert sorted((i["class"], i["image"]) for i in twice[0]["images"]) == [
        ("cat", "0.png"), ("dog", "copy.png")]
    assert any("near-identical" in f["what"] for f in result["findings"])  # --near ran
    for image in twice[0]["images"]:  # each one opens on the page
        assert client.get(f"/api/classes/{image['class']}/images/{image['image']}"
                          ).status_code == 200


def _checked(client: TestClient, **options: object) -> dict:
    job = client.post("/api/jobs", json={"kind": "check", "options": options}).json()
    deadline = time.monotonic() + 120
    while client.get(f"/api/jobs/{job['id']}").json()["status"]["state"] in (
            "starting", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    return client.get(f"/api/jobs/{job['id']}/check").json()


def test_the_check_measures_images_against_the_input_the_chosen_mode_trains_at(
        client: TestClient, project: Project) -> None:
    """The check measured every image against 224 px: 28 px photos were 'far smaller
    than the model's 224 px input and will be blown up' for a scratch run that trains
    at their own size. It asks the planner's input choice for the mode chosen."""
    from cnnkit.data.sources import describe
    from cnnkit.studio.worker import _config
    from cnnkit.training.input_choice import train_side
    from cnnkit.training.recipe import resolve_config

    for name, colour in (("light", 220), ("dark", 30)):
        client.post("/api/classes", json={"name": name})
        for k in range(6):
            buf = io.BytesIO()
            Image.fromarray(np.full((28, 28, 3), colour + k * 3, np.uint8)).save(buf, "PNG")
            client.post(f"/api/classes/{name}/images", content=buf.getvalue())
    for mode, blown_up in (("scratch", False), ("quick", True)):
        result = _checked(client, mode=mode)
        config = _config(project.root, {"mode": mode})
        trains_at = resolve_config(config).pre.img_size  # what the run itself decides
        assert result["img_size"] == trains_at == train_side(config, describe(config.data))
        small = [f for f in result["findings"] if "far smaller" in f["what"]]
        assert bool(small) is blown_up, (mode, result["findings"])
    assert trains_at == 224
    bad = client.post("/api/jobs", json={"kind": "check", "options": {"mode": "fast"}})
    assert bad.status_code == 400 and "mode must be one of" in bad.json()["detail"]


def test_a_job_whose_worker_is_gone_is_lost_not_running(project: Project) -> None:
    from cnnkit.base.atomic import write_json
    from cnnkit.studio.jobs import Jobs

    folder = project.jobs_dir / "20260101-000000-abcdef"
    folder.mkdir(parents=True)
    write_json(folder / "spec.json", {"kind": "train", "options": {}})
    # the studio was killed; the number is now another program's (this test's)
    write_json(folder / "status.json", {"state": "running", "pid": os.getpid()})
    jobs = Jobs(project, spare=False)
    job = jobs.get(folder.name)
    assert job.status()["state"] == "lost" and jobs.active("train") is None


def test_a_live_answer_is_unknown_where_the_model_says_so(client: TestClient, project: Project,
                                                          calibrated: Path,
                                                          strange: np.ndarray) -> None:
    """The page's answer is the predictor's own: a calibrated run's unknown rule holds
    on the Try tab as in cnnkit predict (it printed the top class before)."""
    import shutil

    shutil.copytree(calibrated, project.runs_dir / "calibrated")
    buf = io.BytesIO()
    Image.fromarray(strange).save(buf, "PNG")
    r = client.post("/api/runs/calibrated/predict?top_k=2", content=buf.getvalue())
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["label"] == "unknown" and answer["reason"] == "unlike every class"
    assert answer["unknown_score"] > 0.5 and answer["top"][0]["class"] in ("circle", "square",
                                                                         "triangle")
    sure = client.post("/api/runs/calibrated/predict?threshold=0.99",
                       content=buf.getvalue()).json()
    assert sure["label"] == "unknown" and sure["probability"] == answer["probability"]


def test_the_plan_jobs_worker_waits_warm_for_the_click_on_train(project: Project) -> None:
    from cnnkit.studio.jobs import Jobs

    for name, colour in (("light", 220), ("dark", 30)):
        (project.root / name).mkdir()
        for k in range(12):
            Image.fromarray(np.full((24, 24, 3), colour + (k % 3) * 5, np.uint8)).save(
                project.root / name / f"{k}.png")
    jobs = Jobs(project)
    options = {"mode": "scratch", "epochs": 1}

    def finished(job_id: str) -> dict:
        job, deadline = jobs.get(job_id), time.monotonic() + 240
        while job.running():
            assert time.monotonic() < deadline, job.status()
            time.sleep(0.2)
        return job.status()

    def plan_event(job_id: str) -> dict:
        events, _ = jobs.get(job_id).events()
        return next(e for e in events if e["kind"] == "plan")

    try:
        jobs.prepare_spare()
        plan = jobs.start("plan", options)
        assert finished(plan.id)["state"] == "done"
        # the click on Train as soon as the estimate shows, before the server's own look
        # for a spare: the plan's worker, not a new one
        train = jobs.start("train", options)
        status = finished(train.id)
        assert status["state"] == "done", status
        assert status["pid"] == plan.status()["pid"]  # it ran in the plan's warm worker
        # and announced the plan's estimate instead of timing steps again
        told, measured = plan_event(train.id), plan_event(plan.id)
        assert (told["line"], told["seconds"]) == (measured["line"], measured["seconds"])
        assert told["t"] > measured["t"]
        assert "pid" in jobs.get(plan.id).status()  # the plan job's own story is intact
        assert train.process is not None and train.process.wait(60) == 0  # it exits
        jobs.prepare_spare()  # a new spare in its place
        again = jobs.start("plan", options)
        assert finished(again.id)["state"] == "done"
        jobs.prepare_spare()
        waiting = jobs._spare
        assert waiting is not None and waiting.pid == again.status()["pid"]
    finally:
        jobs.close()
    assert not jobs.get(train.id).alive()
    assert waiting.wait(10) == 0  # closing the studio ends the waiting worker cleanly
    assert "Traceback" not in (again.folder / "worker.log").read_text()


def test_an_upload_over_the_limit_says_the_studio_s_limit(client: TestClient) -> None:
    """A 30 MB upload was told to restart with --max-request-mb, an option only
    cnnkit serve has (cnnkit studio refuses it), and of a 25.1 MiB limit."""
    client.post("/api/classes", json={"name": "a"})
    r = client.post("/api/classes/a/images?filename=big.png", content=b"\0" * (30 * 2**20))
    assert r.status_code == 413
    assert "--max-request-mb" not in r.json()["detail"]
    assert "at most 25 MiB" in r.json()["detail"]


def test_an_export_made_while_the_run_trained_is_not_shipped(
        client: TestClient, project: Project, trained: tuple[Path, Path]) -> None:
    """Exported during training (the Ship tab lists a run once its first best model is
    saved), model.onnx kept answering as that early model did: after the run ended the
    page still listed it and its download said 'blue 50.2%' where the run said 'red
    96.6%'. Only a file made from the run's weights as they are now is offered."""
    import shutil

    from safetensors.torch import load_file, save_file

    from cnnkit.export.onnx import export_model

    run = project.runs_dir / "r"
    shutil.copytree(trained[0], run)
    export_model(str(run), out=run / "model.onnx")
    assert client.get("/api/runs").json()["runs"][0]["files"] == ["model.onnx"]
    assert client.get("/api/runs/r/files/model.onnx").status_code == 200
    weights = load_file(run / "model.safetensors")  # the run trains on: a new best model
    save_file({k: v + 0.5 if v.is_floating_point() else v for k, v in weights.items()},
              run / "model.safetensors")
    assert client.get("/api/runs").json()["runs"][0]["files"] == []
    stale = client.get("/api/runs/r/files/model.onnx")
    assert stale.status_code == 409 and "Export it again" in stale.json()["detail"]


@pytest.mark.parametrize("folder", ["猫と犬", 'say "cheese"'])
def test_the_run_zip_downloads_whatever_the_project_is_called(
        tmp_path: Path, trained: tuple[Path, Path], folder: str) -> None:
    """The zip's Content-Disposition was the project's name in quotes, as is: a project
    named in Japanese got 500 Internal Server Error (the header is latin-1), one with a
    quote in its name a header that named another file."""
    import shutil
    from urllib.parse import unquote

    project = Project.open(tmp_path / folder)
    shutil.copytree(trained[0], project.runs_dir / "r")
    with TestClient(create_app(project, spare_worker=False), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as c:
        r = c.get("/api/runs/r/zip")
    assert r.status_code == 200, r.text
    given = r.headers["content-disposition"]
    assert given.startswith("attachment; filename*=utf-8''")
    assert unquote(given.split("''", 1)[1]) == f"{folder}-r.zip"


def test_a_run_still_training_is_not_listed_as_finished(
        client: TestClient, project: Project, trained: tuple[Path, Path]) -> None:
    """A run is listed from its first saved best model on; while it trained it was
    'finished' like any other, and the Try, Understand and Ship tabs offered its
    best-so-far weights by name alone."""
    import shutil

    from cnnkit.artifacts.runlock import RunLock

    run = project.runs_dir / "r"
    shutil.copytree(trained[0], run)
    with RunLock.acquire(run):  # as the trainer holds it
        listed = client.get("/api/runs").json()["runs"][0]
        assert listed["training"] is True and listed["finished"] is False
    listed = client.get("/api/runs").json()["runs"][0]
    assert listed["training"] is False and listed["finished"] is True


def test_trying_a_file_that_is_no_image_says_so_plainly(
        client: TestClient, project: Project, trained: tuple[Path, Path]) -> None:
    """The Try tab's answer to a text file was 'No image could be read: <bytes>: cannot
    decode image (cannot identify image file <_io.BytesIO object at 0x7f2d...>).'"""
    import shutil

    shutil.copytree(trained[0], project.runs_dir / "r")
    for data, status in ((b"hello\n", 415), (b'<svg xmlns="http://www.w3.org/2000/svg"/>', 415),
                         (jpeg()[:300], 400)):
        r = client.post("/api/runs/r/predict", content=data)
        assert r.status_code == status, r.text
        detail = r.json()["detail"]
        assert detail.startswith("The file") and "<bytes>" not in detail, detail
        assert "BytesIO" not in detail and " 0x" not in detail, detail


def test_the_try_answer_says_what_cnnkit_predict_warns_of(
        client: TestClient, project: Project, trained: tuple[Path, Path],
        calibrated: Path) -> None:
    """cnnkit predict warns that a run with too few validation images has uncalibrated
    probabilities and no unknown rule; the Try tab showed the same 'blue 51.1%' without
    a word of it."""
    import shutil

    shutil.copytree(trained[0], project.runs_dir / "plain")
    shutil.copytree(calibrated, project.runs_dir / "calibrated")
    plain = client.post("/api/runs/plain/predict", content=jpeg()).json()
    assert "not calibrated" in plain["note"] and "--threshold" not in plain["note"]
    assert client.post("/api/runs/calibrated/predict", content=jpeg()).json()["note"] is None


def test_a_full_disk_is_said_not_a_bare_server_error(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload onto a full disk (or a folder gone read-only) answered 500 with the plain
    text 'Internal Server Error', which the page showed as all there was to know."""
    import errno

    def full(*args: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", str(project.root / "a"))

    monkeypatch.setattr("cnnkit.studio.project._write_new", full)
    with TestClient(create_app(project, spare_worker=False), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as c:
        c.post("/api/classes", json={"name": "a"}, headers={"X-Studio": "1"})
        r = c.post("/api/classes/a/images?filename=x.jpg", content=jpeg(),
                   headers={"X-Studio": "1"})
    assert r.status_code == 507
    assert "No space left on device" in r.json()["detail"]
