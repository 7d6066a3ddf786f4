"""Small images: what `cnnkit train FOLDER` does with 10,000 28x28 grey PNGs.

The folder is Fashion-MNIST's first 1,000 training images of each class, written as
PNG files by `cnnkit data export` (10 classes; the run splits 8,000 train, 1,000
validation, 1,000 test). Each row is the command a user would type, run as its own
process with a fresh cache (so decoding the files is counted, as on a first run);
"wall s" is the whole command, "estimate" what its estimate line said before the first
epoch, "test" the accuracy on the 1,000 test images of the same split.

Targets: the default ends in at most 5 minutes on 2 cores, at a test accuracy at least
that of seed-cnn for 5 epochs at the images' own size.

    python benchmarks/small_images.py                       # default, bar, pretrained rows
    python benchmarks/small_images.py --rows default,bar    # just the target check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = {
    "default": ("default: `cnnkit train FOLDER`", []),
    "bar": ("seed-cnn, 5 epochs, 28 px (the bar)", ["-m", "seed-cnn", "-e", "5"]),
    "seed30": ("seed-cnn, 30 epochs, 28 px", ["-m", "seed-cnn"]),
    "lite64": ("EfficientNet-Lite0 fine-tune, 64 px, 3 epochs",
               ["-m", "efficientnet_lite0", "--img-size", "64", "-e", "3"]),
    "features": ("EfficientNet-Lite0 features, 224 px",
                 ["-m", "efficientnet_lite0", "--mode", "features"]),
    "time5m": ("EfficientNet-Lite0, --time 5m", ["-m", "efficientnet_lite0", "--time", "5m"]),
    "old": ("EfficientNet-Lite0 at 224 px, 10 epochs (the old default; estimate only)",
            ["-m", "efficientnet_lite0"]),
}
TARGET_S = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="default,bar,lite64,time5m,old",
                    help=f"comma-separated, from: {', '.join(ROWS)}")
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--work", default=None, help="folder for the data and runs (kept)")
    ap.add_argument("--out", default=None, help="where to write results.json")
    args = ap.parse_args()
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows: {', '.join(unknown)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="small-images-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "fm" / "train"
    if not data.is_dir():
        _cnnkit(["data", "export", "fashion-mnist", str(work / "fm"), "--split", "train",
                 "--per-class", str(args.per_class)], env=os.environ)
    print(f"{sum(1 for _ in data.rglob('*.png')):,} PNG files in {data}; "
          f"{os.cpu_count()} cores; load before: {_load()}", flush=True)
    results = []
    for key in wanted:
        title, options = ROWS[key]
        row = _run(key, title, options, data, work)
        results.append(row)
        took = "-" if row["wall_s"] is None else f"{row['wall_s']:.0f} s"
        test = "-" if row["test_acc"] is None else f"{row['test_acc']:.2%}"
        print(f"  {title}: {test} in {took} ({row['plan']}; {row['estimate']}; "
              f"load {row['load']})", flush=True)
    _table(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


def _run(key: str, title: str, options: list[str], data: Path, work: Path) -> dict:
    env = {**os.environ, "CNNKIT_CACHE": str(work / "cache" / key)}
    argv = ["train", str(data), *options, "--out", str(work / "runs"), "--name", key,
            "--no-plots"]
    load = _load()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if key == "old" and line.startswith("estimate:"):
            proc.terminate()  # hours: the estimate is the figure
    code = proc.wait()
    wall = time.perf_counter() - start
    text = "\n".join(lines)
    estimate = next((t for t in lines if t.startswith("estimate:")), "no estimate line")
    plan = next((t for t in lines if t.startswith("--time ")), None) or _plan(text)
    run = work / "runs" / key
    test = None
    metrics = run / "test_metrics.json"
    if key != "old":
        if code != 0 or not metrics.is_file():
            raise SystemExit(f"{title} failed ({code}):\n{text[-3000:]}")
        test = json.loads(metrics.read_text())["accuracy"]
    epochs = len((run / "metrics.csv").read_text().splitlines()) - 1 \
        if (run / "metrics.csv").is_file() else 0
    return {"row": key, "title": title, "command": "cnnkit " + " ".join(argv),
            "wall_s": None if key == "old" else wall, "test_acc": test, "epochs": epochs,
            "estimate": estimate.split(" - ")[0].replace("estimate: ", "estimated "),
            "estimate_line": estimate, "plan": plan, "load": f"{load} -> {_load()}",
            "faster": next((t for t in lines if t.startswith("faster:")), None)}


def _plan(text: str) -> str:
    model = re.search(r"^model: (\S+), ", text, re.M)
    size = re.search(r"^input: (\d+)x\d+x(\d)", text, re.M)
    return (f"{model.group(1) if model else '?'} at "
            f"{size.group(1) + ' px' if size else '?'}")


def _table(rows: list[dict]) -> None:
    bar = next((r for r in rows if r["row"] == "bar"), None)
    print()
    print(f"| {'plan':<62} | {'epochs':>6} | {'estimate':>22} | {'wall s':>6} | "
          f"{'test':>7} |")
    print(f"|{'-' * 64}|{'-' * 8}:|{'-' * 24}:|{'-' * 8}:|{'-' * 9}:|")
    for r in rows:
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        test = "-" if r["test_acc"] is None else f"{r['test_acc']:.2%}"
        print(f"| {r['title'][:62]:<62} | {r['epochs']:>6} | {r['estimate'][:22]:>22} | "
              f"{wall:>6} | {test:>7} |")
    default = next((r for r in rows if r["row"] == "default"), None)
    if default is not None:
        fast = default["wall_s"] <= TARGET_S
        print(f"\ndefault: {default['wall_s']:.0f} s (target <= {TARGET_S:.0f} s: "
              f"{'met' if fast else 'MISSED'})", end="")
        if bar is not None:
            good = default["test_acc"] >= bar["test_acc"]
            print(f"; {default['test_acc']:.2%} against seed-cnn 5 epochs "
                  f"{bar['test_acc']:.2%} ({'met' if good else 'MISSED'})", end="")
        print()


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _cnnkit(argv: list[str], env: dict) -> None:
    subprocess.run([sys.executable, "-m", "cnnkit", *argv], env=env, check=True,
                   stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
