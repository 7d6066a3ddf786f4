"""The whole studio in Debian's chromium, the webcam included (chromium's fake camera
playing a video of three scenes): make a project, record three classes, train quick,
see live predictions, export and download the ONNX file, and check it with onnxruntime.

Set CNNKIT_SCREENSHOTS=docs/images to refresh the README's pictures of each step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright
from tests.studio.conftest import Studio

CHROMIUM = "/usr/bin/chromium"
SCENES = ("cat", "coffee", "astronaut")  # skimage.data's chelsea, coffee and astronaut
W, H, FPS, SCENE_S = 320, 240, 10, 2.5
THUMB = 4  # scenes are told apart by 4x4 thumbnails of the page's square crop


def scene_images() -> list[Image.Image]:
    from skimage import data

    out = []
    for rgb in (data.chelsea(), data.coffee(), data.astronaut()):
        img = Image.fromarray(rgb)
        scale = max(W / img.width, H / img.height)
        img = img.resize((round(img.width * scale), round(img.height * scale)))
        left, top = (img.width - W) // 2, (img.height - H) // 2
        out.append(img.crop((left, top, left + W, top + H)))
    return out


def thumb(img: Image.Image) -> np.ndarray:
    """What the page's square centre crop looks like at 4x4 (as the test's JS makes it)."""
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    small = img.crop((left, top, left + side, top + side)).resize((THUMB, THUMB),
                                                                 Image.BILINEAR)
    return np.asarray(small.convert("RGB"), dtype=np.float32)


def write_y4m(path: Path, scenes: list[Image.Image]) -> None:
    """A 4:2:0 Y4M video: each scene for SCENE_S seconds, in turn (chromium loops it)."""
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for img in scenes:
            y, u, v = img.convert("YCbCr").split()
            planes = y.tobytes() + u.resize((W // 2, H // 2)).tobytes() + \
                v.resize((W // 2, H // 2)).tobytes()
            for _ in range(int(SCENE_S * FPS)):
                fh.write(b"FRAME\n" + planes)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    scenes = scene_images()
    path = tmp_path_factory.mktemp("camera") / "scenes.y4m"
    write_y4m(path, scenes)
    return path, [thumb(s) for s in scenes]


@pytest.fixture(scope="module")
def browser(video: tuple[Path, list[np.ndarray]]) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run scripts/setup.sh"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
             f"--use-file-for-fake-video-capture={video[0]}"]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield chromium
        chromium.close()


GRAB = """() => {
  const v = document.getElementById('video');
  if (!v.videoWidth) return null;
  const side = Math.min(v.videoWidth, v.videoHeight), c = document.createElement('canvas');
  c.width = c.height = 4;
  const x = c.getContext('2d');
  x.imageSmoothingQuality = 'high';
  x.drawImage(v, (v.videoWidth - side) / 2, (v.videoHeight - side) / 2, side, side, 0, 0, 4, 4);
  return Array.from(x.getImageData(0, 0, 4, 4).data);
}"""


def showing(page: Page, refs: list[np.ndarray]) -> str | None:
    """The scene the fake camera shows now, as the page sees it."""
    pixels = page.evaluate(GRAB)
    if pixels is None:
        return None
    rgb = np.asarray(pixels, dtype=np.float32).reshape(THUMB, THUMB, 4)[:, :, :3]
    return SCENES[int(np.argmin([np.abs(rgb - r).mean() for r in refs]))]


def wait_for_scene_start(page: Page, refs: list[np.ndarray], name: str) -> None:
    """Wait until the camera has just turned to scene ``name`` (as a person points the
    camera at the thing before holding the button)."""
    deadline = time.monotonic() + 4 * SCENE_S * len(SCENES)
    before = showing(page, refs)
    while time.monotonic() < deadline:
        now = showing(page, refs)
        if now == name and before != name:
            return
        before = now
        page.wait_for_timeout(40)
    raise AssertionError(f"the fake camera never turned to {name}")


def shot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"studio-{name}.png"))


def test_make_train_try_and_ship_from_the_page(studio: Studio, browser: Browser,
                                               video: tuple[Path, list[np.ndarray]],
                                               tmp_path: Path) -> None:
    refs = video[1]
    shots = tmp_path / "shots"
    shots.mkdir()
    context = browser.new_context(viewport={"width": 1200, "height": 820},
                                  accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(studio.url + "/")

    # 1. a project of three classes, recorded from the webcam by holding a button
    for name in SCENES:
        page.locator("#new-class").fill(name)
        page.get_by_role("button", name="Add class").click()
        expect(page.locator(f'article[data-class="{name}"]')).to_be_visible()
    # an image chosen from the disk, deleted, and put back with Undo
    chosen = tmp_path / "espresso.png"
    scene_images()[1].save(chosen)
    coffee = page.locator('article[data-class="coffee"]')
    coffee.locator("label.button input[type=file]").set_input_files(chosen)
    expect(coffee.locator(".count b")).to_have_text("1")
    assert [p.name for p in (studio.project / "coffee").iterdir()] == ["espresso.png"]
    coffee.locator(".thumbs figure").first.hover()
    coffee.locator(".thumbs .del").first.click()
    expect(coffee.locator(".count b")).to_have_text("0")
    page.get_by_role("button", name="Undo").click()
    expect(coffee.locator(".count b")).to_have_text("1")
    assert (studio.project / "coffee" / "espresso.png").read_bytes() == chosen.read_bytes()
    page.locator("#camera-on").click()
    expect(page.locator("#video")).to_be_visible()
    page.wait_for_function("document.getElementById('video').videoWidth > 0")
    for name in SCENES:
        for _ in range(4):  # bursts while the camera shows it, until there are enough
            wait_for_scene_start(page, refs, name)
            button = page.locator(f'article[data-class="{name}"] button.record')
            button.hover()
            page.mouse.down()
            page.wait_for_timeout(1300)
            page.mouse.up()
            expect(page.locator("#pending")).to_be_hidden(timeout=60_000)  # all saved
            if len(list((studio.project / name).iterdir())) >= 8:
                break
    for name in SCENES:
        expect(page.locator(f'article[data-class="{name}"] .count b')).to_have_text(
            str(len(list((studio.project / name).iterdir()))), timeout=15_000)
    shot(page, shots, "1-data")
    counts = {}
    for name in SCENES:
        files = sorted((studio.project / name).iterdir())
        counts[name] = len(files)
        seen = [SCENES[int(np.argmin([np.abs(thumb(Image.open(f)) - r).mean()
                                      for r in refs]))] for f in files]
        assert seen.count(name) >= 0.9 * len(files), (name, seen)  # recorded what it showed
    assert all(n >= 8 for n in counts.values()), counts

    # 2. check: the audit of what was recorded (burst frames are near-copies of each other)
    page.locator("nav button[data-tab=check]").click()
    page.get_by_role("button", name="Check the data").click()
    expect(page.locator(".verdict")).to_contain_text("The data", timeout=120_000)
    expect(page.locator(".counts")).to_contain_text("astronaut")
    # measured against the input the mode chosen trains at (quick: Lite0's 224 px)
    expect(page.locator("#check-size")).to_contain_text("224 px input that quick training")
    shot(page, shots, "2-check")

    # 3. train quick: the plan, live progress, then the Try tab with live predictions
    page.locator("nav button[data-tab=train]").click()
    expect(page.locator("#plan")).to_contain_text("estimate", timeout=120_000)
    clicked = time.monotonic()
    page.locator("#train").click()
    expect(page.locator("#train-status")).to_contain_text(re.compile("features|round"),
                                                          timeout=120_000)
    # the estimate says what it counts: not the loading before it, nor the analysis after
    expect(page.locator("#plan-covers")).to_contain_text("Understand tab's figures are made "
                                                         "after it")
    shot(page, shots, "3-train")
    expect(page.locator("#answer")).to_have_text(re.compile("|".join(SCENES)),
                                                 timeout=180_000)
    to_live = time.monotonic() - clicked
    matches = []
    for _ in range(10):
        answer, now = page.locator("#answer").inner_text(), showing(page, refs)
        matches.append(answer == now)
        page.wait_for_timeout(400)
    shot(page, shots, "5-try")
    assert sum(matches) >= 6, matches  # the live answer follows what the camera shows
    bars = page.locator(".prediction .bar")
    expect(bars).to_have_count(3)

    # an image of one's own, uploaded
    page.locator("text=Pause").click()
    upload = tmp_path / "my-coffee.png"
    scene_images()[1].save(upload)
    page.locator("main label.button:has-text('Try an image') input").set_input_files(upload)
    expect(page.locator("#answer")).to_have_text("coffee")
    expect(page.locator(".prediction img.tried")).to_be_visible()

    # a reloaded page tells the run's story again from its events
    page.reload()
    page.locator("nav button[data-tab=train]").click()
    expect(page.locator("#train-status")).to_contain_text("Finished: test accuracy",
                                                          timeout=30_000)
    expect(page.locator("table.epochs tr")).to_have_count(1 + 5)  # 5 L-BFGS rounds
    page.locator("nav button[data-tab=try]").click()

    # the run is an ordinary run folder
    runs = list((studio.project / ".cnnkit" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.safetensors").is_file()
    assert json.loads((runs[0] / "config.json").read_text())["mode"] == "features"

    # 6. ship: export, download the ONNX file, check it with onnxruntime
    page.locator("nav button[data-tab=ship]").click()
    page.get_by_role("button", name="Export ONNX", exact=True).click()
    link = page.locator("#download-model-onnx")
    expect(link).to_be_visible(timeout=120_000)
    with page.expect_download() as got:
        link.click()
    onnx_path = tmp_path / "model.onnx"
    got.value.save_as(onnx_path)
    expect(page.locator(".commands")).to_contain_text("cnnkit serve")
    shot(page, shots, "6-ship")
    check_onnx(onnx_path, scene_images())

    # 4. understand: per-class figures and a confusion matrix whose cells open images
    page.locator("nav button[data-tab=understand]").click()
    for _ in range(60):  # the worker analyses the run after it is trained
        if page.locator(".confusion").count():
            break
        page.wait_for_timeout(1000)
        page.locator("nav button[data-tab=understand]").click()
    expect(page.locator(".confusion td.diag")).to_have_count(3)
    page.locator(".confusion td.diag").first.click()
    expect(page.locator("#cell-images img").first).to_be_visible()
    shot(page, shots, "4-understand")

    # 7. learn: the convolution explorer on a recorded frame
    page.locator("nav button[data-tab=learn]").click()
    expect(page.locator(".arith").first).to_contain_text("output width")
    shot(page, shots, "7-learn")
    assert not errors, errors
    context.close()
    if os.environ.get("CNNKIT_SCREENSHOTS"):
        for png in shots.iterdir():
            shutil.copy(png, Path(os.environ["CNNKIT_SCREENSHOTS"]) / png.name)
    print(f"click on Train (quick) to live predictions: {to_live:.1f} s")


def check_onnx(path: Path, scenes: list[Image.Image]) -> None:
    """The downloaded file, read with onnxruntime alone, tells the three scenes apart."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    classes = json.loads(props["classes"])
    pre = json.loads(props["preprocessing"])
    assert sorted(classes) == sorted(SCENES)
    size = pre["size"]
    batch = []
    for img in scenes:
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        square = img.crop((left, top, left + side, top + side)).resize((size, size),
                                                                      Image.BILINEAR)
        x = np.asarray(square, dtype=np.float32) / 255
        batch.append(((x - pre["mean"]) / pre["std"]).transpose(2, 0, 1))
    logits = session.run(None, {pre["input"]: np.stack(batch).astype(np.float32)})[0]
    assert [classes[i] for i in logits.argmax(1)] == list(SCENES)


def test_understand_says_when_held_out_images_are_gone(studio: Studio, browser: Browser,
                                                       trained: tuple[Path, Path]) -> None:
    """A test image deleted or moved after the run ("Relabel as", a deleted class) is left
    out of the analysis: the tab said 'On 2 held-out images: accuracy 0.0%' for a run
    listed as 'test 33.3%' on 3, without a word about the third."""
    run = studio.project / ".cnnkit" / "runs" / "r"
    shutil.copytree(trained[0], run)
    (run / "studio").mkdir(exist_ok=True)
    (run / "studio" / "understand.json").write_text(json.dumps({
        "split": "test", "classes": ["a", "b"], "missing": 1, "images": [],
        "top_losses": [], "n": 2, "accuracy": 0.0,
        "per_class": [], "confusion": [[0, 1], [1, 0]]}))
    page = browser.new_context().new_page()
    page.goto(studio.url + "/")
    page.locator("nav button[data-tab=understand]").click()
    line = page.locator("main p", has_text="held-out images (")
    expect(line).to_contain_text("On 2 held-out images")
    expect(line).to_contain_text("1 of the run's 3 held-out images is no longer where")
    expect(line).to_contain_text("not the run's test accuracy")
    page.context.close()


def test_a_run_still_training_is_not_analysed_exported_or_zipped_from_the_page(
        studio: Studio, browser: Browser, trained: tuple[Path, Path]) -> None:
    """While a run trains (its lock names a live process), Analyse and Export are greyed
    and the zip link is replaced by a line saying to download it once it has finished."""
    run = studio.project / ".cnnkit" / "runs" / "r"
    shutil.copytree(trained[0], run)
    (run / "studio").mkdir(exist_ok=True)
    for name in ("understand.json", "warning.json"):
        (run / "studio" / name).unlink(missing_ok=True)
    (run / ".lock").write_text(f"{os.getpid()}\n")  # this process: alive
    page = browser.new_context().new_page()
    page.goto(studio.url + "/")
    page.locator("nav button[data-tab=understand]").click()
    expect(page.locator("#analyse")).to_be_disabled()
    page.locator("nav button[data-tab=ship]").click()
    expect(page.locator("main button", has_text="Export ONNX + int8")).to_be_disabled()
    expect(page.locator("#download-zip")).to_be_hidden()
    expect(page.locator("main li", has_text="once it has finished training")).to_be_visible()
    (run / ".lock").unlink()  # the run has ended
    page.locator("nav button[data-tab=understand]").click()
    expect(page.locator("#analyse")).to_be_enabled()
    page.locator("nav button[data-tab=ship]").click()
    expect(page.locator("#download-zip")).to_be_visible()
    page.context.close()


def test_a_run_at_chance_shows_its_warning_beside_its_result(
        studio: Studio, browser: Browser, trained: tuple[Path, Path]) -> None:
    """The warning a run at chance ends with (kept by the studio's worker) is shown in
    the run list and on the Try tab, where a finished run's page lands."""
    run = studio.project / ".cnnkit" / "runs" / "r"
    shutil.copytree(trained[0], run)
    (run / "studio").mkdir(exist_ok=True)
    line = "the kept model's validation accuracy is 50.00%, at or near chance"
    (run / "studio" / "warning.json").write_text(json.dumps({"warning": line}))
    page = browser.new_context().new_page()
    page.goto(studio.url + "/")
    page.locator("nav button[data-tab=try]").click()
    expect(page.locator("#try-warning")).to_have_text("Warning from training: " + line)
    expect(page.locator("#try-run option")).to_contain_text("(at chance: see the warning)")
    page.context.close()
