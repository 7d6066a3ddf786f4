"""Write a built-in set as a class-per-folder tree of image files, to see it on disk."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.base.progress import track
from cnnkit.data import builtin as builtins_
from cnnkit.data.folders import safe_name


def export_builtin(name: str, out: str | Path, *, split: str = "all",
                   per_class: int | None = None, size: int | None = None,
                   fmt: str = "png") -> dict[str, int]:
    """Write ``out/<split>/<class>/<n>.<fmt>``; returns images written per split."""
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
            arr = part.images[i].permute(1, 2, 0).numpy()
            img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BICUBIC)
            folder = out / part_name / safe_name(part.classes[label])
            img.save(folder / f"{counts[label]:05d}.{fmt}", quality=95)
            n += 1
        written[part_name] = n
    log.info(f"wrote {', '.join(f'{v:,} {k}' for k, v in written.items())} images to {out}")
    return written
