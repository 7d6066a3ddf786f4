"""Prediction speed on the CPU: backends side by side, int8 against float, and
``cnnkit predict`` end to end over a folder of JPEG photos.

    python benchmarks/predict_speed.py backends            # EfficientNet-Lite0, 224 px, batch 32
    python benchmarks/predict_speed.py int8 RUN             # a fine-tuned run's test split
    python benchmarks/predict_speed.py e2e --files 1000 10000 [--model RUN] [--workers 1]

``backends`` runs in one process on ``--threads`` cores, in rounds of shuffled order (so
the load of a shared machine falls on every contender alike) and prints each one's median
images/s and its ratio to the anchor: the same weights exported by hand (timm's
``efficientnet_lite0``, ``torch.onnx.export`` at 224 px with a dynamic batch) in an
onnxruntime session with default options. Targets (issue 32): cnnkit's float predictor,
preprocessing included, at least 1.0x the anchor; its int8 predictor (the float file
quantized as ``cnnkit export --quantize int8`` does, calibrated on 64 crops of the same
photos) at least 2x. ``e2e`` times
the ``cnnkit predict efficientnet_lite0 FOLDER --output preds.csv`` command (start-up,
decoding and writing included) and its peak resident memory, workers included; for
``efficientnet_lite0``, alternating with ``benchmarks/hand_predict.py``, the hand
export driven by a user's own Pillow and onnxruntime script (target: at least 60
images/s on 2 cores, and at least the hand script's rate), and with ``--workers N``
the same command with N decoding processes (the default is one per core, beside
onnxruntime's one thread per core).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def hand_export(net: torch.nn.Module, size: int, path: Path) -> Path:
    """The anchor: what a user does without cnnkit. ``timm.create_model(
    "efficientnet_lite0")`` given the same weights (timm's PyTorch-padded Lite0 has the
    same 296 tensors as cnnkit's TF-padded one), ``torch.onnx.export`` at a fixed
    ``size`` px with a dynamic batch."""
    import warnings

    import timm

    hand = timm.create_model("efficientnet_lite0", num_classes=1000).eval()
    keys = list(hand.state_dict())
    hand.load_state_dict(dict(zip(keys, net.state_dict().values())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(hand, (torch.zeros(1, 3, size, size),), str(path),
                          input_names=["input"], output_names=["logits"], dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def default_session(path: Path, threads: int):
    """An onnxruntime session with default options but for its thread count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def backends(args: argparse.Namespace) -> None:
    import skimage.data

    from cnnkit.data.imageset import ImageSet
    from cnnkit.data.pipeline import eval_batch
    from cnnkit.export.executorch import ExecutorchBackend, export_pte
    from cnnkit.export.quantize import median_rates, quantize_int8
    from cnnkit.runtime.backends import OnnxBackend, TorchBackend
    from cnnkit.runtime.exports import cached_onnx
    from cnnkit.runtime.predict import Classifier
    from cnnkit.runtime.zeroshot import imagenet_model

    torch.set_num_threads(args.threads)
    net, card = imagenet_model("efficientnet_lite0")
    pre = card.preprocess
    path = cached_onnx(net.eval(), card)
    photos = [np.asarray(getattr(skimage.data, n)()) for n in
              ("astronaut", "coffee", "chelsea", "rocket")]
    auto = Classifier(net, card, torch.device("cpu"), "auto")
    assert isinstance(auto.backend, OnnxBackend)
    decoded = np.stack([auto.decode_image(photos[i % len(photos)]) for i in range(args.batch)])
    data = ImageSet(torch.from_numpy(decoded), torch.zeros(args.batch, dtype=torch.long),
                    card.classes, crop_fraction=pre.img_size / pre.decode_size)
    x = eval_batch(torch.from_numpy(decoded), pre, data.crop_fraction)
    xn = x.numpy()
    tmp = Path(tempfile.mkdtemp(prefix="cnnkit-bench-"))
    anchor = default_session(hand_export(net, pre.img_size, tmp / "hand.onnx"), args.threads)
    calibration = np.stack([auto.decode_image(crop) for crop in photo_crops(photos, 64)])
    int8_file = quantize_int8(path, tmp / "model.int8.onnx",
                              ImageSet(torch.from_numpy(calibration),
                                       torch.zeros(len(calibration), dtype=torch.long),
                                       card.classes, crop_fraction=data.crop_fraction), pre)
    int8 = Classifier(net, card, torch.device("cpu"), OnnxBackend(int8_file, name="onnx-int8"))
    pte = ExecutorchBackend(export_pte(imagenet_model("efficientnet_lite0")[0], pre,
                                       tmp / "model.pte"))
    plain = default_session(path, args.threads)
    eager = imagenet_model("efficientnet_lite0")[0].eval()
    torch_cl = TorchBackend(imagenet_model("efficientnet_lite0")[0], torch.device("cpu"))

    def run_eager() -> None:
        with torch.inference_mode():
            eager(x)

    n = args.batch
    hand = "hand export: timm Lite0, torch.onnx.export, default session (float input)"
    contenders = {
        hand: lambda: anchor.run(None, {"input": xn}),
        "cnnkit predictor, auto backend (uint8 images in)":
            lambda: auto.proba_decoded(decoded, batch_size=n),
        "cnnkit predictor, onnx-int8 backend (uint8 images in)":
            lambda: int8.proba_decoded(decoded, batch_size=n),
        "cnnkit's float file, default session (float input)":
            lambda: plain.run(None, {"input": xn}),
        "cnnkit export --format executorch: .pte, XNNPACK (float input)": lambda: pte(x),
        "torch eager": run_eager,
        "torch channels-last (cnnkit's torch backend)": lambda: torch_cl(x),
    }
    rates = dict(zip(contenders, median_rates(list(contenders.values()), n, args.seconds,
                                              pause=0.3)))
    base = rates[hand]
    print(f"EfficientNet-Lite0, {pre.img_size} px, batch {n}, {args.threads} threads, "
          f"one process ({time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f})")
    print(f"{'':76s} {'images/s':>9s} {'vs hand':>8s}")
    for name, rate in rates.items():
        print(f"{name:76s} {rate:9.1f} {rate / base:7.2f}x")
    with torch.inference_mode():
        reference = torch.softmax(eager(x), 1).numpy()
    answers = {"hand export": softmax(anchor.run(None, {"input": xn})[0]),
               "auto": auto.proba_decoded(decoded, batch_size=n),
               "onnx-int8": int8.proba_decoded(decoded, batch_size=n),
               "executorch": torch.softmax(pte(x), 1).numpy()}
    for name, probs in answers.items():
        print(f"{name} against torch eager on the {len(photos)} photos: top-1 agreement "
              f"{np.mean(probs.argmax(1) == reference.argmax(1)):.0%}, largest probability "
              f"difference {np.abs(probs - reference).max():.4f}")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def photo_crops(photos: list[np.ndarray], n: int, seed: int = 1) -> list[np.ndarray]:
    """``n`` random crops (half to all of each side) of ``photos``: calibration images
    other than the ones timed."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crops.append(np.ascontiguousarray(img[top:top + ch, left:left + cw]))
    return crops


def int8(args: argparse.Namespace) -> None:
    from cnnkit.export.onnx import export_model

    with tempfile.TemporaryDirectory() as tmp:
        result = export_model(args.run, out=Path(tmp) / "model.onnx", quantize="int8")
        c = result.comparison
        print(f"{args.run}: test split, {c.images:,} images ({time.strftime('%Y-%m-%d')})")
        print(f"float  accuracy {c.float_accuracy:.2%}  {c.float_speed:7.1f} images/s")
        print(f"int8   accuracy {c.int8_accuracy:.2%}  {c.int8_speed:7.1f} images/s  "
              f"({(c.int8_accuracy - c.float_accuracy) * 100:+.2f} points, "
              f"{c.speedup:.2f}x)")


def make_photos(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` JPEGs of about 500x375: random crops of scikit-image's photos, resized."""
    import skimage.data
    from PIL import Image

    names = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field",
             "immunohistochemistry", "retina", "colorwheel", "logo", "cat", "coins")
    sources = []
    for name in names:
        try:
            img = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
        except Exception:  # a photo that needs a download (pooch): skip it
            continue
        sources.append(img)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = sources[i % len(sources)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((left, top, left + cw, top + ch)).resize(
            (int(rng.integers(480, 521)), int(rng.integers(360, 391))))
        crop.save(folder / f"{i:05d}.jpg", quality=90)


def e2e(args: argparse.Namespace) -> None:
    root = Path(args.folder or tempfile.mkdtemp(prefix="cnnkit-e2e-"))
    # Export once (cached), as every later run finds it.
    warm = root / "warm"
    make_photos(warm, 8)
    subprocess.run([sys.executable, "-m", "cnnkit", "predict", args.model, str(warm),
                    "--format", "csv"], check=True, capture_output=True)
    hand = None
    if args.model == "efficientnet_lite0":
        from cnnkit.runtime.zeroshot import imagenet_model

        net, card = imagenet_model("efficientnet_lite0")
        pre = card.preprocess
        hand = [sys.executable, str(Path(__file__).with_name("hand_predict.py")),
                str(hand_export(net, pre.img_size, root / "hand.onnx")),
                "--size", str(pre.img_size), "--crop-pct", str(pre.crop_pct),
                "--mean", str(pre.mean[0]), "--std", str(pre.std[0])]
    print(f"cnnkit predict {args.model} FOLDER --output preds.csv "
          f"({time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}); JPEG ~500x375"
          + ("; against the hand script (benchmarks/hand_predict.py: Pillow, NumPy and a "
             "default onnxruntime session on the hand export), alternating" if hand else ""))
    print(f"{'':12s} {'files':>7s} {'seconds':>8s} {'images/s':>9s} {'peak RSS MB':>12s}"
          + (f" {'vs hand':>8s}" if hand else ""))
    for n in args.files:
        folder = root / f"photos{n}"
        if not folder.is_dir():
            make_photos(folder, n)
        out = root / f"preds{n}.csv"
        hand_out = root / f"hand{n}.csv"
        outs = {"cnnkit": out, "hand script": hand_out}
        commands = {"cnnkit": [sys.executable, "-m", "cnnkit", "predict", args.model,
                               str(folder), "--output", str(out)]}
        for w in args.workers:  # the same command with another number of decoders
            name = f"--workers {w}"
            outs[name] = root / f"preds{n}-w{w}.csv"
            commands[name] = [*commands["cnnkit"][:-1], str(outs[name]), "--workers", str(w)]
        if hand:
            commands["hand script"] = [*hand[:3], str(folder), str(hand_out), *hand[3:]]
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.rounds if hand or args.workers else 1):
            for name, cmd in commands.items():
                timings[name].append(_timed(cmd, outs[name], n))
        seconds = {name: float(np.median([t for t, _ in runs])) for name, runs in timings.items()}
        for name, runs in timings.items():
            rss = max(m for _, m in runs)
            ratio = f" {seconds['hand script'] / seconds[name]:7.2f}x" if hand else ""
            print(f"{name:12s} {n:7,d} {seconds[name]:8.1f} {n / seconds[name]:9.1f} "
                  f"{rss:12.0f}{ratio}")
        if hand:
            print(f"top-1 agreement of the two on these {n:,} photos: "
                  f"{_agreement(out, hand_out, card.classes):.1%} (the hand export is timm's "
                  "PyTorch-padded Lite0 given weights trained with TensorFlow padding)")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


def _agreement(cnnkit_csv: Path, hand_csv: Path, classes: tuple[str, ...]) -> float:
    """The share of files whose top class is the same in both outputs."""
    import csv

    with open(cnnkit_csv, newline="") as f:
        ours = {r[0]: r[1] for r in list(csv.reader(f))[1:]}
    with open(hand_csv, newline="") as f:
        theirs = {r[0]: classes[int(r[1])] for r in list(csv.reader(f))[1:]}
    return float(np.mean([ours[p] == c for p, c in theirs.items()]))


def _timed(cmd: list[str], out: Path, n: int) -> tuple[float, float]:
    """Seconds and peak resident MB of one command that writes ``n`` rows to ``out``."""
    out.unlink(missing_ok=True)
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stderr=subprocess.DEVNULL); "
             "print(time.perf_counter() - t, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, *cmd], check=True,
                         capture_output=True, text=True)
    seconds, rss_kb = res.stdout.split()
    rows = out.read_text().count("\n") - 1
    assert rows == n, (rows, n)
    return float(seconds), int(rss_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("backends")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--seconds", type=float, default=60.0)
    q = sub.add_parser("int8")
    q.add_argument("run")
    e = sub.add_parser("e2e")
    e.add_argument("--files", type=int, nargs="+", default=[1000])
    e.add_argument("--model", default="efficientnet_lite0", help="A run folder or a "
                   "pretrained name (a small run shows how memory scales, quickly).")
    e.add_argument("--rounds", type=int, default=2, help="Runs of each command, "
                   "alternating, when there is a hand script or --workers to compare (the "
                   "median counts).")
    e.add_argument("--workers", type=int, nargs="*", default=[], help="Also time cnnkit "
                   "predict with --workers N (decoding processes) for each N, alternating.")
    e.add_argument("--folder", help="Where to keep the generated photos (default: a temp "
                   "folder).")
    args = parser.parse_args()
    {"backends": backends, "int8": int8, "e2e": e2e}[args.what](args)


if __name__ == "__main__":
    os.environ.setdefault("CNNKIT_CACHE", str(Path(tempfile.gettempdir()) / "cnnkit-bench"))
    main()
