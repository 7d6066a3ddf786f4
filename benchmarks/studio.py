"""The studio's two targets (issue 33), measured on a real studio process and its page in
Debian's chromium with the fake webcam:

1. 3 classes x 30 webcam frames: from the click on "Train (quick)" to live predictions on
   the page (target: <= 10 s on 2 CPU cores). Compared, in the same run, with what a
   terminal user does: `cnnkit train PROJECT --mode features` on the same folder (until
   the command returns), and `cnnkit predict` on one frame after it.
2. The page's answers while a fine-tune ("Train (better)") runs: GET /api/project and
   GET / for --requests requests each, before the run (idle) and during it (target:
   p99 < 200 ms while it trains).

    python benchmarks/studio.py [--rounds 3] [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):  # the browser test's helpers ("tests" may be taken)
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_conftest = _load("tests.studio.conftest", ROOT / "tests" / "studio" / "conftest.py")
_page = _load("tests.studio.test_page", ROOT / "tests" / "studio" / "test_page.py")
start_studio = _conftest.start_studio
CHROMIUM, SCENES = _page.CHROMIUM, _page.SCENES
scene_images, write_y4m = _page.scene_images, _page.write_y4m

FRAMES = 30


def webcam_frames(project: Path) -> None:
    """30 frames a class as the page records them: 224 px square JPEGs of each scene,
    shifted and lit a little differently each time (a hand-held camera)."""
    from PIL import ImageEnhance

    rng = np.random.default_rng(0)
    for name, img in zip(SCENES, scene_images()):
        folder = project / name
        folder.mkdir(parents=True)
        for k in range(FRAMES):
            side = min(img.size) - int(rng.integers(0, 40))
            left = int(rng.integers(0, img.width - side + 1))
            top = int(rng.integers(0, img.height - side + 1))
            frame = img.crop((left, top, left + side, top + side)).resize((224, 224))
            frame = ImageEnhance.Brightness(frame).enhance(float(rng.uniform(0.8, 1.2)))
            frame.save(folder / f"webcam-{k}.jpg", quality=90)


def quick_to_live(rounds: int, video: Path) -> tuple[list[float], list[float]]:
    from playwright.sync_api import expect, sync_playwright

    page_s, cli_s = [], []
    flags = ["--headless", "--no-sandbox", "--disable-gpu",
             "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
             f"--use-file-for-fake-video-capture={video}"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=flags)
        for r in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                project = Path(tmp) / "project"
                webcam_frames(project)
                # new frames have no features or decoded images in any cache: each round
                # starts from empty caches (the plan job, before the click, makes the
                # codes graph as it does on a machine's first quick run)
                os.environ["CNNKIT_CACHE"] = str(Path(tmp) / "cache")
                studio = start_studio(project, Path(tmp) / "studio.log")
                try:
                    page = browser.new_page(viewport={"width": 1200, "height": 800})
                    page.goto(studio.url + "/")
                    page.locator("#camera-on").click()
                    page.wait_for_function("document.getElementById('video').videoWidth > 0")
                    page.locator("nav button[data-tab=train]").click()
                    expect(page.locator("#plan")).to_contain_text("estimate", timeout=300_000)
                    time.sleep(3)  # the spare worker, started after the plan, is ready
                    began, wall = time.monotonic(), time.time()
                    page.locator("#train").click()
                    expect(page.locator("#answer")).not_to_be_empty(timeout=300_000)
                    page_s.append(time.monotonic() - began)
                    page.close()
                    print("  " + breakdown(project, wall, page_s[-1]), flush=True)
                finally:
                    studio.stop()
                # the terminal's own empty cache, but for the codes graph (a user who
                # has trained a quick model before)
                shutil.copytree(Path(tmp) / "cache" / "onnx", Path(tmp) / "cli-cache" / "onnx")
                os.environ["CNNKIT_CACHE"] = str(Path(tmp) / "cli-cache")
                began = time.monotonic()
                subprocess.run([sys.executable, "-m", "cnnkit", "train", str(project),
                                "--mode", "features", "--out", str(Path(tmp) / "cli-runs"),
                                "--no-plots"], check=True, capture_output=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
                run = next((Path(tmp) / "cli-runs").iterdir())
                subprocess.run([sys.executable, "-m", "cnnkit", "predict", str(run),
                                str(project / SCENES[0] / "webcam-0.jpg"), "--backend",
                                "torch"], check=True, capture_output=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
                cli_s.append(time.monotonic() - began)
            print(f"round {r + 1}: page {page_s[-1]:.1f} s, terminal {cli_s[-1]:.1f} s",
                  flush=True)
        browser.close()
    return page_s, cli_s


def breakdown(project: Path, clicked: float, answered: float) -> str:
    """Where the seconds from the click went, from the training job's events."""
    import json

    for spec in (project / ".cnnkit" / "jobs").glob("*/spec.json"):
        if json.loads(spec.read_text())["kind"] != "train":
            continue
        marks: dict[str, float] = {}
        for line in (spec.parent / "events.jsonl").read_text().splitlines():
            event = json.loads(line)
            if event["kind"] == "working" and event["done"] != event["total"]:
                continue
            name = event["kind"] if event["kind"] != "working" else event["what"] + " done"
            marks.setdefault(name, event["t"] - clicked)
        shown = ", ".join(f"{k} {marks[k]:.1f}" for k in
                          ("plan", "run", "features (train) done", "best", "test") if k in marks)
        return f"seconds after the click: {shown}, answer on the page {answered:.1f}"
    return "no training job found"


def latencies(client: httpx.Client, n: int) -> list[float]:
    out = []
    for k in range(n):
        path = "/api/project" if k % 2 == 0 else "/"
        began = time.perf_counter()
        client.get(path).raise_for_status()
        out.append(1000 * (time.perf_counter() - began))
        time.sleep(0.02)
    return out


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def responsive(requests: int) -> tuple[list[float], list[float], int]:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        webcam_frames(project)
        os.environ["CNNKIT_CACHE"] = str(Path(tmp) / "cache")
        studio = start_studio(project, Path(tmp) / "studio.log")
        try:
            client = studio.client()
            time.sleep(5)
            idle = latencies(client, requests)
            job = client.post("/api/jobs", json={"kind": "train",
                                                 "options": {"mode": "better"}}).json()
            steps = 0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:  # until its epochs have begun
                text = (project / ".cnnkit" / "jobs" / job["id"] / "events.jsonl").read_text()
                if '"kind": "step"' in text:
                    break
                time.sleep(0.5)
            busy = latencies(client, requests)
            text = (project / ".cnnkit" / "jobs" / job["id"] / "events.jsonl").read_text()
            steps = text.count('"kind": "step"')
            client.post(f"/api/jobs/{job['id']}/stop")
        finally:
            studio.stop()
    return idle, busy, steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.1f} (1-minute average), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "scenes.y4m"
        write_y4m(video, scene_images())
        page_s, cli_s = quick_to_live(args.rounds, video)
    print(f"quick, 3 classes x {FRAMES} frames: click on Train (quick) to live predictions "
          f"on the page: median {statistics.median(page_s):.1f} s (rounds: "
          f"{', '.join(f'{s:.1f}' for s in page_s)}); terminal (cnnkit train --mode features "
          f"--no-plots, then cnnkit predict): median {statistics.median(cli_s):.1f} s; "
          f"ratio page/terminal {statistics.median(page_s) / statistics.median(cli_s):.2f}")
    idle, busy, steps = responsive(args.requests)
    print(f"page answers (GET /api/project and GET /, {len(idle)} each time): idle p50 "
          f"{p(idle, 50):.1f} ms p99 {p(idle, 99):.1f} ms; while a fine-tune trains "
          f"({steps} step events during the measurement): p50 {p(busy, 50):.1f} ms p99 "
          f"{p(busy, 99):.1f} ms max {max(busy):.1f} ms")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
