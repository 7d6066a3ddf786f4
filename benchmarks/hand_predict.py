"""What a user writes without cnnkit: predict a folder of photos with a hand-exported
ONNX file and onnxruntime, and write a CSV (path, class index, probability).

    python benchmarks/hand_predict.py hand.onnx FOLDER out.csv [--size 224 --crop-pct 0.875
        --mean 0.5 --std 0.5 --threads 2]

Pillow decodes and resizes (shorter side to size / crop_pct, bicubic), a centre crop,
NumPy normalises, batches of 32 go to an onnxruntime session with default options: the
end-to-end anchor of ``benchmarks/predict_speed.py e2e``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def load(path: Path, size: int, crop_pct: float) -> np.ndarray:
    img = Image.open(path).convert("RGB")
    scale = (size / crop_pct) / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                     Image.Resampling.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("folder")
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--crop-pct", type=float, default=0.875)
    parser.add_argument("--mean", type=float, default=0.5)
    parser.add_argument("--std", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    files = sorted(p for p in Path(args.folder).iterdir() if p.suffix.lower() == ".jpg")
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "probability"])
        for start in range(0, len(files), args.batch):
            part = files[start:start + args.batch]
            x = np.stack([load(p, args.size, args.crop_pct) for p in part])
            x = ((x / 255 - args.mean) / args.std).transpose(0, 3, 1, 2)
            logits = session.run(None, {"input": np.ascontiguousarray(x)})[0]
            e = np.exp(logits - logits.max(1, keepdims=True))
            probs = e / e.sum(1, keepdims=True)
            for p, row in zip(part, probs):
                writer.writerow([str(p), int(row.argmax()), f"{row.max():.6f}"])


if __name__ == "__main__":
    main()
