"""The web page in headless Chromium (Debian's): upload an image, use the fake webcam."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from tests.serve.conftest import API_KEY, Server

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run scripts/setup.sh"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@contextlib.contextmanager
def _ready_page(browser: Browser, server: Server) -> Iterator[Page]:
    """The page of a server a test started (no API key), open at a phone's width and
    ready; closed after the block."""
    context = browser.new_context(viewport={"width": 420, "height": 900})
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        expect(page.locator("#status")).to_contain_text("Ready")
        yield page
    finally:
        context.close()


def _answered_both_ways(page: Page, image: Path) -> Iterator[Locator]:
    """``image``'s result card as the server answers it, then as the model run in the
    browser answers it (the page's 'Run the model in this browser' switch)."""
    for local in (False, True):
        if local:
            page.get_by_label(re.compile("Run the model in this browser")).check()
        page.get_by_label("Choose images").set_input_files(image)
        yield page.locator(".result").first


@pytest.fixture
def page(browser: Browser, served: Server) -> Iterator[Page]:
    """The page, opened with the API key typed in as a person would (the server asks)."""
    context = browser.new_context(viewport={"width": 420, "height": 900})  # a phone's width
    page = context.new_page()
    page.goto(served.url + "/")
    expect(page.get_by_label("API key (this server needs one)")).to_be_visible()
    page.get_by_label("API key (this server needs one)").fill(API_KEY)
    page.get_by_label("API key (this server needs one)").press("Enter")
    page.get_by_label("Model to ask").focus()  # the key is taken on change
    expect(page.locator("#status")).to_contain_text("Ready")
    yield page
    context.close()


def test_upload_an_image_and_read_the_prediction(page: Page, served: Server, trained,
                                                 tmp_path: Path) -> None:
    _, data = trained
    image = sorted(data.rglob("*.png"))[0]
    with served.client() as client:
        want = client.post("/predict", content=image.read_bytes()).json()["predictions"][0]
    expect(page.locator("#classes")).to_contain_text("circle, square, triangle")
    page.get_by_label("Choose images").set_input_files(image)
    card = page.locator(".result").first
    expect(card.locator("h3")).to_have_text(image.name)
    top = card.locator(".bar[data-top] .label")
    expect(top).to_have_text(want["label"])
    expect(card.locator(".bar").first.locator(".pct")).to_have_text(
        f"{want['probability'] * 100:.1f}%")
    assert card.locator(".bar").count() == 3  # the server's --top-k
    shot = page.screenshot(path=tmp_path / "serve-page.png", full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_webcam_path_gives_a_prediction(page: Page) -> None:
    page.get_by_role("button", name="Use the webcam").click()
    snap = page.get_by_role("button", name="Classify this frame")
    expect(snap).to_be_visible()
    page.wait_for_function("document.getElementById('video').videoWidth > 0")
    snap.press("Enter")  # the keyboard works as well as the mouse
    card = page.locator(".result").first
    expect(card.locator("h3")).to_contain_text("webcam")
    expect(card.locator(".bar[data-top] .label")).to_have_text(
        re.compile("^(circle|square|triangle)$"))
    page.get_by_role("button", name="Stop the webcam").click()
    expect(page.get_by_role("button", name="Use the webcam")).to_be_visible()


def test_each_card_shows_its_own_answer(page: Page, served: Server, trained,
                                        tmp_path: Path) -> None:
    """A good image and a fake one sent together: the good card shows its prediction,
    the fake card its own error, and not the other way round."""
    _, data = trained
    image = sorted(data.rglob("*.png"))[1]
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"%PDF-1.4 this is not an image")
    with served.client() as client:
        want = client.post("/predict", content=image.read_bytes()).json()["predictions"][0]
    page.get_by_label("Choose images").set_input_files([image, fake])
    good = page.locator(".result").filter(has=page.locator("h3", has_text=image.name))
    bad = page.locator(".result").filter(has=page.locator("h3", has_text="fake.png"))
    expect(good.locator(".bar[data-top] .label")).to_have_text(want["label"])
    expect(good.locator(".error")).to_have_count(0)
    expect(bad.locator(".error")).to_contain_text("not an image in an allowed format")
    expect(bad.locator(".bar")).to_have_count(0)
    expect(page.locator("#status")).to_contain_text("1 image could not be read")


def test_the_model_runs_in_the_browser_and_answers_as_the_server(page: Page, served: Server,
                                                                 trained, tmp_path: Path
                                                                 ) -> None:
    """The switch: onnxruntime-web (from the package) runs the model's ONNX file in
    Chromium; no image is sent; an image already at the model's size gets the server's
    answer to the printed 0.1%, and a fake file its own error."""
    from PIL import Image

    _, data = trained
    with served.client() as client:
        model = client.get("/v1/models/shapes").json()
        assert model["onnx_file"] == "/v1/models/shapes/model.onnx"
        onnx = client.get(model["onnx_file"])
        assert onnx.status_code == 200 and len(onnx.content) > 1000
        side = model["input"]["decode_size"]
        images = []
        for i, source in enumerate(sorted(data.rglob("*.png"))[:3]):
            image = tmp_path / f"small{i}.png"
            Image.open(source).convert("RGB").resize((side, side)).save(image)
            images.append(image)
        want = [client.post("/predict", content=p.read_bytes()).json()["predictions"][0]
                for p in images]
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"%PDF-1.4 this is not an image")
    sent = []
    page.on("request", lambda r: sent.append(r.url) if "predict" in r.url else None)
    page.get_by_label(re.compile("Run the model in this browser")).check()
    page.get_by_label("Choose images").set_input_files([*images, fake])
    expect(page.locator("#status")).to_contain_text("in this browser", timeout=60_000)
    for image, answer in zip(images, want):
        card = page.locator(".result").filter(has=page.locator("h3", has_text=image.name))
        expect(card.locator(".bar[data-top] .label")).to_have_text(answer["label"])
        expect(card.locator(".bar").first.locator(".pct")).to_have_text(
            f"{answer['probability'] * 100:.1f}%")
    bad = page.locator(".result").filter(has=page.locator("h3", has_text="fake.png"))
    expect(bad.locator(".error")).to_contain_text("could not read it as an image")
    assert sent == []


def test_a_multilabel_model_shows_its_label_set_here_and_in_the_browser(
        browser: Browser, trained_multilabel, tmp_path: Path) -> None:
    """The answered labels are marked (on the server and in the browser alike, with the
    card's per-label thresholds), not the softmax's top class."""
    from PIL import Image
    from tests.serve.conftest import start_server

    run, labels = trained_multilabel
    server = start_server([f"tags={run}", "--top-k", "10"], tmp_path / "serve.log")
    try:
        with server.client() as client:
            model = client.get("/v1/models/tags").json()
            side = model["input"]["decode_size"]
            image = tmp_path / "mosaic.png"
            Image.open(labels.parent / "m001.png").resize((side, side)).save(image)
            want = client.post("/predict", content=image.read_bytes()).json()["predictions"][0]
        low = [e for e in want["top"] if e["label"] not in {x["label"] for x in want["labels"]}]
        assert low, "the test needs a label below its threshold"
        with _ready_page(browser, server) as page:
            page.get_by_label("Classes to show per image").fill("10")
            heading = ("Labels: " + ", ".join(e["label"] for e in want["labels"])
                       if want["labels"] else "No label")
            for card in _answered_both_ways(page, image):
                expect(card.locator(".label-set")).to_have_text(heading, timeout=60_000)
                expect(card.locator(".bar[data-top]")).to_have_count(len(want["labels"]))
                expect(card.locator(".bar")).to_have_count(10)
                first = card.locator(".bar").first
                expect(first.locator(".label")).to_have_text(want["top"][0]["label"])
                expect(first.locator(".pct")).to_have_text(
                    f"{want['top'][0]['probability'] * 100:.1f}%")
    finally:
        server.stop()


def test_in_the_browser_an_unknown_image_is_unknown_as_the_server_says(
        browser: Browser, calibrated, strange, tmp_path: Path) -> None:
    """The unknown rule on the energy and the feature distance (the ONNX file's second
    output) gives the same verdict and score in the browser as on the server."""
    from PIL import Image
    from tests.serve.conftest import start_server

    image = tmp_path / "odd.png"
    server = start_server([f"cal={calibrated}"], tmp_path / "serve.log")
    try:
        with server.client() as client:
            side = client.get("/v1/models/cal").json()["input"]["decode_size"]
            # at the model's size: the browser's resizing would give other pixels
            Image.fromarray(strange).resize((side, side), Image.NEAREST).save(image)
            want = client.post("/predict", content=image.read_bytes()).json()["predictions"][0]
        assert want["label"] == "unknown" and want["unlike"] is True
        with _ready_page(browser, server) as page:
            line = (f"unknown: unlike every class it knows (stranger than "
                    f"{want['unknown_score'] * 100:.1f}% of known images)")
            for card in _answered_both_ways(page, image):
                expect(card.locator(".unknown")).to_have_text(line, timeout=60_000)
    finally:
        server.stop()


def test_a_model_of_grey_data_reads_a_colour_image_as_grey_in_the_browser_too(
        browser: Browser, grey_run: Path, tmp_path: Path) -> None:
    """Lite0 trained on grey digits: a tinted digit gets the server's answer (read as grey)
    in the browser as well, to the printed 0.1%."""
    import shutil

    from PIL import Image
    from sklearn.datasets import load_digits
    from tests.serve.conftest import start_server

    run = shutil.copytree(grey_run, tmp_path / "digits")  # the server caches its export there
    server = start_server([f"digits={run}", "--backend", "onnx"], tmp_path / "serve.log")
    try:
        with server.client() as client:
            model = client.get("/v1/models/digits").json()
            assert model["preprocessing"]["grey"] is True
            side = model["input"]["decode_size"]
            grey = (load_digits().images[7] * 255 / 16).astype(np.uint8)
            tinted = np.stack([grey, grey * 0.6, grey * 0.3], axis=-1).astype(np.uint8)
            image = tmp_path / "tinted.png"
            Image.fromarray(tinted).resize((side, side), Image.NEAREST).save(image)
            want = client.post("/predict", content=image.read_bytes()).json()["predictions"][0]
        with _ready_page(browser, server) as page:
            page.get_by_label(re.compile("Run the model in this browser")).check()
            page.get_by_label("Choose images").set_input_files(image)
            card = page.locator(".result").first
            top = want["top"][0]
            expect(card.locator(".bar[data-top] .label")).to_have_text(top["label"],
                                                                       timeout=60_000)
            expect(card.locator(".bar").first.locator(".pct")).to_have_text(
                f"{top['probability'] * 100:.1f}%")
    finally:
        server.stop()
