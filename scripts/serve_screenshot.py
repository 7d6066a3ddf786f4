"""Draw docs/serve-page.png: the web page of `cnnkit serve` after two real photos.

Starts `cnnkit serve MODEL` (default: the bundled efficientnet_lite0) on a free port,
uploads scikit-image's cat and coffee photos through the page in Debian's headless
chromium, waits for the bars, and saves a screenshot.

    python scripts/serve_screenshot.py [--model efficientnet_lite0] [--out docs/serve-page.png]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from skimage import data

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--out", type=Path, default=Path("docs/serve-page.png"))
    ap.add_argument("--width", type=int, default=900)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnkit-shot-"))
    photos = []
    for name, arr in (("cat.jpg", data.chelsea()), ("coffee.jpg", data.coffee())):
        Image.fromarray(arr).save(work / name, quality=92)
        photos.append(work / name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", args.model, "--port",
                             str(port), "--top-k", "4"])
    try:
        for _ in range(1200):
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": args.width, "height": 800})
            page.goto(url + "/")
            expect(page.locator("#status")).to_contain_text("Ready", timeout=60_000)
            page.get_by_label("Choose images").set_input_files(photos)
            expect(page.locator(".result .bar[data-top]")).to_have_count(2, timeout=120_000)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
