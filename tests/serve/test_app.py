"""The app in-process (Starlette's TestClient): what needs no separate server process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tests.serve.conftest import encode, wait_ready

from cnnkit.serve import ServeConfig, create_app, load_models


@pytest.fixture(scope="module")
def two_models(trained) -> Iterator[TestClient]:
    run, _ = trained
    models = load_models([f"a={run}", f"b={run}"], "torch", "cpu", threads=1)
    with TestClient(create_app(models, ServeConfig(max_request_mb=0.05)),
                    base_url="http://127.0.0.1") as client:
        wait_ready(client)
        yield client


def test_with_two_models_predict_names_them(two_models: TestClient) -> None:
    assert [m["name"] for m in two_models.get("/v1/models").json()["models"]] == ["a", "b"]
    png = encode(Image.new("RGB", (16, 16)))
    r = two_models.post("/predict", content=png)
    assert r.status_code == 404 and "a, b" in r.json()["detail"]
    assert two_models.post("/v1/models/b/predict", content=png).json()["model"] == "b"


def test_a_chunked_body_is_cut_off_at_the_limit(two_models: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the body is counted as it comes
        for _ in range(20):
            yield b"\0" * 8192

    r = two_models.post("/v1/models/a/predict", content=chunks(),
                        headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and "--max-request-mb" in r.json()["detail"]


def test_the_page_and_its_files_are_served_with_no_cdn(two_models: TestClient) -> None:
    page = two_models.get("/")
    assert page.status_code == 200 and "<label" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert two_models.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text


def test_health_answers_while_the_model_computes(trained) -> None:
    run, _ = trained
    models = load_models([f"slow={run}"], "torch", "cpu", threads=1)
    clf = models["slow"].classifier
    real = clf.answer_inputs  # what the server's batcher calls

    def slow_model(arrays, **kwargs):  # a model that takes a second per batch
        time.sleep(1.0)
        return real(arrays, **kwargs)

    clf.answer_inputs = slow_model
    png = encode(Image.new("RGB", (16, 16)))
    with TestClient(create_app(models, ServeConfig(max_wait_ms=0)),
                    base_url="http://127.0.0.1") as client:
        wait_ready(client)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, "/predict", content=png)
            time.sleep(0.2)  # the request is in the model now
            began = time.perf_counter()
            assert client.get("/health").status_code == 200
            waited = time.perf_counter() - began
            assert not pending.done()
            assert pending.result().status_code == 200
    assert waited < 0.5, waited


def test_a_threshold_answers_unknown_below_it(two_models: TestClient) -> None:
    png = encode(Image.new("RGB", (16, 16)))
    plain = two_models.post("/v1/models/a/predict", content=png).json()["predictions"][0]
    assert "unknown" not in plain  # no threshold: the record as before
    sure = two_models.post("/v1/models/a/predict?threshold=1", content=png).json()
    answer = sure["predictions"][0]
    assert answer["label"] == "unknown" and answer["unknown"] and answer["threshold"] == 1
    assert answer["top"] == plain["top"]  # the model's classes are still there
    none = two_models.post("/v1/models/a/predict?threshold=0", content=png).json()
    assert none["predictions"][0]["label"] == plain["label"]
    bad = two_models.post("/v1/models/a/predict?threshold=80", content=png)
    assert bad.status_code == 422


def test_a_form_sends_the_threshold_too_and_an_unknown_field_is_refused(
        two_models: TestClient) -> None:
    # threshold=1 sent as a form field (as top_k may be) was dropped without a word: the
    # answer was the top class, not 'unknown'; so was a misspelt option ('topk')
    png = encode(Image.new("RGB", (16, 16)))
    url, file = "/v1/models/a/predict", {"file": ("a.png", png)}
    sure = two_models.post(url, files=file, data={"threshold": "1"}).json()["predictions"][0]
    assert sure["label"] == "unknown" and sure["threshold"] == 1
    query_wins = two_models.post(url + "?threshold=0", files=file, data={"threshold": "1"})
    assert query_wins.json()["predictions"][0]["label"] != "unknown"
    for value in ("80", "-0.1", "nan", "high"):
        bad = two_models.post(url, files=file, data={"threshold": value})
        assert bad.status_code == 422, value
        assert bad.json()["detail"].startswith("threshold must be a probability from 0 to 1")
    for field in ("topk", "treshold"):
        typo = two_models.post(url, files=file, data={field: "1"})
        assert typo.status_code == 422
        assert typo.json()["detail"].startswith(f"The form field '{field}' is not an option")
    assert two_models.post(url, files=file, data={"top_k": "1"}).status_code == 200


def test_each_image_of_a_request_gets_its_own_answer(two_models: TestClient, trained) -> None:
    """A good image keeps its prediction beside a fake and a truncated one; each bad one
    says what is wrong with it; the request succeeds."""
    good = sorted(trained[1].rglob("*.png"))[0].read_bytes()
    alone = two_models.post("/v1/models/a/predict", content=good).json()["predictions"][0]
    noisy = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                                                     dtype=np.uint8)))
    files = [("file", ("cat.png", good, "image/png")),
             ("file", ("fake.png", b"%PDF-1.4 not an image", "image/png")),
             ("file", ("cut.png", noisy[: len(noisy) // 2], "image/png")),
             ("file", ("again.png", good, "image/png"))]
    r = two_models.post("/v1/models/a/predict", files=files)
    assert r.status_code == 200, r.text
    answers = r.json()["predictions"]
    assert [a["filename"] for a in answers] == ["cat.png", "fake.png", "cut.png", "again.png"]
    for a in (answers[0], answers[3]):
        assert a["label"] == alone["label"] and "error" not in a
        assert a["probability"] == pytest.approx(alone["probability"], abs=1e-6)
    assert answers[1]["error"]["status"] == 415 and "fake.png" in answers[1]["error"]["detail"]
    assert answers[2]["error"]["status"] == 400 and "truncated" in answers[2]["error"]["detail"]
    assert "label" not in answers[1] and "label" not in answers[2]


def test_a_request_whose_images_all_fail_says_why_for_each(two_models: TestClient) -> None:
    fake = b"%PDF-1.4 not an image"
    both = two_models.post("/v1/models/a/predict", files=[
        ("file", ("a.png", fake, "image/png")), ("file", ("b.png", fake, "image/png"))])
    assert both.status_code == 415
    body = both.json()
    assert "None of the 2 images could be read" in body["detail"]
    assert [p["error"]["status"] for p in body["predictions"]] == [415, 415]
    noisy = encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3),
                                                                     dtype=np.uint8)))
    mixed = two_models.post("/v1/models/a/predict", files=[
        ("file", ("a.png", fake, "image/png")),
        ("file", ("b.png", noisy[: len(noisy) // 2], "image/png"))])
    assert mixed.status_code == 400  # different reasons: a plain bad request
    assert [p["error"]["status"] for p in mixed.json()["predictions"]] == [415, 400]
    one = two_models.post("/v1/models/a/predict", content=fake,
                          headers={"Content-Type": "image/png"})
    assert one.status_code == 415 and one.json()["detail"].startswith("image:")


def test_a_multilabel_model_answers_label_sets(trained_multilabel) -> None:
    run, labels = trained_multilabel
    models = load_models([f"tags={run}"], "torch", "cpu", threads=1)
    with TestClient(create_app(models, ServeConfig()), base_url="http://127.0.0.1") as client:
        wait_ready(client)
        task = client.get("/v1/models/tags").json()["task"]
        assert task["name"] == "multi-label" and len(task["thresholds"]) == 10
        png = (labels.parent / "m000.png").read_bytes()
        (answer,) = client.post("/v1/models/tags/predict", content=png).json()["predictions"]
        chosen = [e["label"] for e in answer["labels"]]
        assert answer["label"] == "|".join(chosen)
        assert all(e["probability"] >= answer["thresholds"][e["label"]]
                   for e in answer["labels"])
        (low,) = client.post("/v1/models/tags/predict?threshold=0",
                             content=png).json()["predictions"]
        assert len(low["labels"]) == 10
