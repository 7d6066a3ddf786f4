"""Small images: what `cnnkit train FOLDER` does with 10,000 28x28 grey PNGs.

The folder is Fashion-MNIST's first 1,000 training images of each class, written as
PNG files by `cnnkit data export` (10 classes; the run splits 8,000 train, 1,000
validation, 1,000 test). Each row is the command a user would type, run as its own
process with a fresh cache (so decoding the files is counted, as on a first run);
"wall s" is the whole command, "estimate" what its estimate line said before the first
epoch and "then s" how long the command ran after that line (what the estimate
estimates: loading came before it), "test" the accuracy on the 1,000 test images of the
same split.

Then, in this one process and in rounds (so a busy machine slows all alike), seconds
per training image of each model and side as the runs' estimates time them: the ratios
say what a minute buys on each plan.

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
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the per-image timing "
                    "(0: skip it)")
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
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=work))
    for key in wanted:
        title, options = ROWS[key]
        row = _run(key, title, options, data, runs)
        results.append(row)
        took = "-" if row["wall_s"] is None else f"{row['wall_s']:.0f} s"
        test = "-" if row["test_acc"] is None else f"{row['test_acc']:.2%}"
        print(f"  {title}: {test} in {took} ({row['plan']}; {row['estimate']}; "
              f"load {row['load']})", flush=True)
    _table(results)
    rates = _rates(data, args.rounds) if args.rounds else {}
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": results, "rates": rates}, indent=2))


def _run(key: str, title: str, options: list[str], data: Path, runs: Path) -> dict:
    env = {**os.environ, "CNNKIT_CACHE": str(runs / "cache" / key)}
    argv = ["train", str(data), *options, "--out", str(runs), "--name", key, "--no-plots"]
    load = _load()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    said = None
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("estimate:"):
            said = time.perf_counter()
        if key == "old" and line.startswith("run:"):
            proc.terminate()  # hours: the estimate and the faster choices are the figures
    code = proc.wait()
    wall = time.perf_counter() - start
    text = "\n".join(lines)
    estimate = next((t for t in lines if t.startswith("estimate:")), "no estimate line")
    plan = next((t for t in lines if t.startswith("--time ")), None) or _plan(text)
    run = runs / key
    test = None
    metrics = run / "test_metrics.json"
    error = None
    if key != "old":
        if code != 0 or not metrics.is_file():  # --time too short on a busy machine, say
            error = next((t for t in lines if t.startswith("error:")), text[-2000:])
            print(f"  {title} failed ({code}): {error}", flush=True)
        else:
            test = json.loads(metrics.read_text())["accuracy"]
    epochs = len((run / "metrics.csv").read_text().splitlines()) - 1 \
        if (run / "metrics.csv").is_file() else 0
    return {"row": key, "title": title, "command": "cnnkit " + " ".join(argv),
            "wall_s": None if key == "old" else wall, "test_acc": test, "epochs": epochs,
            "then_s": None if key == "old" or said is None else wall - (said - start),
            "estimate": estimate.split(" - ")[0].replace("estimate: ", ""),
            "estimate_line": estimate, "plan": plan, "load": f"{load} -> {_load()}",
            "faster": next((t for t in lines if t.startswith("faster:")), None),
            "error": error}


def _rates(data: Path, rounds: int) -> dict:
    """Seconds per training and evaluation image, by the estimate's own timing, in rounds
    (medians); each plan on made-up images of its size."""
    from cnnkit.base.config import TrainConfig
    from cnnkit.models.build import create_model
    from cnnkit.training import estimate
    from cnnkit.training.recipe import resolve_config

    plans = {name: resolve_config(TrainConfig(str(data), device="cpu", model=model))
             for name, model in (("fast-cnn, 28 px (the default)", "fast-cnn"),
                                 ("seed-cnn, 28 px", "seed-cnn"))}
    lite = resolve_config(TrainConfig(str(data), device="cpu", model="efficientnet_lite0"))
    for side in (64, 96, 128, 224):
        plans[f"EfficientNet-Lite0 fine-tune, {side} px"] = estimate.at_size(lite, side)
    models = {k: create_model(p.arch, 10, p.pre.channels, p.pre.img_size)
              for k, p in plans.items()}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in plans}
    load = _load()
    for _ in range(rounds):
        for name, plan in plans.items():
            r = estimate.measure(plan, models[name], 10)
            times[name].append((next(iter(r.train.values())), r.infer))
    out = {}
    base = None
    print(f"\nseconds per image here, medians of {rounds} rounds (load {load} -> {_load()})")
    print(f"| {'plan':<40} | {'train ms':>8} | {'x default':>9} | {'eval ms':>7} |")
    print(f"|{'-' * 42}|{'-' * 9}:|{'-' * 10}:|{'-' * 8}:|")
    for name, pairs in times.items():
        train = sorted(p[0] for p in pairs)[len(pairs) // 2]
        infer = sorted(p[1] for p in pairs)[len(pairs) // 2]
        base = base or train
        out[name] = {"train_s": train, "infer_s": infer}
        print(f"| {name:<40} | {train * 1000:>8.2f} | {train / base:>8.1f}x | "
              f"{infer * 1000:>7.2f} |")
    return out


def _plan(text: str) -> str:
    model = re.search(r"^model: (\S+), ", text, re.M)
    size = re.search(r"^input: (\d+)x\d+x(\d)", text, re.M)
    return (f"{model.group(1) if model else '?'} at "
            f"{size.group(1) + ' px' if size else '?'}")


def _table(rows: list[dict]) -> None:
    bar = next((r for r in rows if r["row"] == "bar"), None)
    print()
    print(f"| {'plan':<62} | {'epochs':>6} | {'estimate':>22} | {'then s':>6} | "
          f"{'wall s':>6} | {'test':>7} |")
    print(f"|{'-' * 64}|{'-' * 7}:|{'-' * 23}:|{'-' * 7}:|{'-' * 7}:|{'-' * 8}:|")
    for r in rows:
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        then = "-" if r.get("then_s") is None else f"{r['then_s']:.0f}"
        test = "-" if r["test_acc"] is None else f"{r['test_acc']:.2%}"
        print(f"| {r['title'][:62]:<62} | {r['epochs']:>6} | {r['estimate'][:22]:>22} | "
              f"{then:>6} | {wall:>6} | {test:>7} |")
    default = next((r for r in rows if r["row"] == "default"), None)
    if default is not None and default["test_acc"] is not None:
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
