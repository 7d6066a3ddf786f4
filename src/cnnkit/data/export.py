"""Write a built-in set as a class-per-folder tree of image files, to see it on disk; a
multi-label set as a folder of images with a ``labels.csv`` of ``path,labels`` rows."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from PIL import Image

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.base.progress import track
from cnnkit.data import builtin as builtins_
from cnnkit.data.folders import safe_name
from cnnkit.data.imageset import ImageSet
from cnnkit.data.source_folder import LABELS_FILE


def export_builtin(name: str, out: str | Path, *, split: str = "all",
                   per_class: int | None = None, size: int | None = None,
                   fmt: str = "png") -> dict[str, int]:
    """Write ``out/<split>/<class>/<n>.<fmt>`` (multi-label: ``out/<split>/<n>.<fmt>``
    and ``out/<split>/labels.csv``); returns images written per split."""
    if split not in ("train", "test", "all"):
        raise CnnkitError(f"--split must be train, test or all. Received: {split!r}")
    if fmt not in ("png", "jpg", "webp", "bmp"):
        raise CnnkitError(f"--format must be png, jpg, webp or bmp. Received: {fmt!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CnnkitError(f"{out} is not empty; choose a new folder so nothing is overwritten.")
    _, train, test = builtins_.load_builtin(name)
    parts = {"train": train, "test": test}
    if split != "all":
        parts = {split: parts[split]}
    written = {}
    for part_name, part in parts.items():
        if part is None:
            continue
        if part.multilabel:
            written[part_name] = _export_multilabel(part, out / part_name, per_class, size,
                                                    fmt, part_name)
            continue
        counts = [0] * len(part.classes)
        for cls in part.classes:
            (out / part_name / safe_name(cls)).mkdir(parents=True, exist_ok=True)
        total = len(part)
        n = 0
        for i in track(range(total), total, f"writing {part_name}"):
            label = int(part.labels[i])
            if per_class is not None and counts[label] >= per_class:
                continue
            counts[label] += 1
            folder = out / part_name / safe_name(part.classes[label])
            _save(part.images[i], folder / f"{counts[label]:05d}.{fmt}", size)
            n += 1
        written[part_name] = n
    multi = any(p is not None and p.multilabel for p in parts.values())
    log.info(f"wrote {', '.join(f'{v:,} {k}' for k, v in written.items())} images to {out}"
             + (" (multi-label: each split folder has a labels.csv of path,labels rows)"
                if multi else ""))
    return written


def _save(image: torch.Tensor, path: Path, size: int | None) -> None:
    arr = image.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    img.save(path, quality=95)


def _export_multilabel(part: ImageSet, folder: Path, per_class: int | None,
                       size: int | None, fmt: str, name: str) -> int:
    """``folder/<n>.<fmt>`` and ``folder/labels.csv``: a multi-label folder cnnkit reads.
    With ``per_class``, an image is written while one of its labels (or, with none, the
    images with no label) has fewer than ``per_class``."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = [0] * (len(part.classes) + 1)  # the last: images with no label
    n = 0
    with open(folder / LABELS_FILE, "w", newline="", encoding="utf-8") as fh:
        rows = csv.writer(fh)
        rows.writerow(["path", "labels"])
        for i in track(range(len(part)), len(part), f"writing {name}"):
            on = [int(k) for k in torch.nonzero(part.labels[i] > 0.5).flatten()] \
                or [len(part.classes)]
            if per_class is not None and all(counts[k] >= per_class for k in on):
                continue
            for k in on:
                counts[k] += 1
            n += 1
            file = f"{n:05d}.{fmt}"
            _save(part.images[i], folder / file, size)
            rows.writerow([file, "|".join(part.classes[k] for k in on
                                          if k < len(part.classes))])
    return n
