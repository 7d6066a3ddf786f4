"""The studio's API in process: who may change what, and names that cannot escape."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnkit.cli import main
from cnnkit.studio.app import create_app
from cnnkit.studio.project import Conflict, Project

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


def test_one_training_run_at_a_time_per_project(client: TestClient, project: Project) -> None:
    jobs = client.app.state.jobs
    first = jobs.start("train", {"mode": "quick"})
    try:
        with pytest.raises(Conflict, match="A train job is running"):
            jobs.start("train", {"mode": "quick"})
        r = client.post("/api/jobs", json={"kind": "train"})
        assert r.status_code == 409  # a second tab's click
    finally:
        jobs.stop(first.id)
        deadline = time.monotonic() + 60
        while first.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not first.alive()
    assert first.status()["state"] in ("failed", "stopped")  # no classes: nothing to train
