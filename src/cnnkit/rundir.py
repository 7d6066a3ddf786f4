"""The run folder: everything one training run leaves behind, in plain formats.

    runs/<name>/
      config.json            resolved training config (repeatable, resumable)
      classes.txt            class names, one per line, in index order
      model.safetensors      kept weights  (+ model.json sidecar: predict needs nothing else)
      metrics.csv            one row per epoch
      checkpoints/last.safetensors   full training state for --resume (atomic; dropped
                             when the run ends, unless --keep-checkpoint)
      split.json             which file went to which split (folder and CSV data)
      test_metrics.json      the kept model on the held-out test split
      plots/, report.html    pictures and a report
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
from pathlib import Path
from typing import Any

from cnnkit.atomic import remove_stale, write_json, write_text
from cnnkit.errors import CnnkitError


class RunDir:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @classmethod
    def create(cls, out: str | os.PathLike, name: str) -> RunDir:
        """A new, empty run folder ``out/name``; ``-2``, ``-3``... if the name is taken."""
        out = Path(out)
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
        make_folder(out, "--out")
        n = 1
        while True:
            candidate = out / (base if n == 1 else f"{base}-{n}")
            try:
                candidate.mkdir()  # exclusive: of runs started at once, each gets its own
            except FileExistsError:
                n += 1
                continue
            return cls(candidate)

    @classmethod
    def open(cls, root: str | os.PathLike) -> RunDir:
        run = cls(root)
        if not run.root.is_dir():
            raise CnnkitError(f"Run folder not found: {run.root}.")
        if not run.config_path.is_file():
            raise CnnkitError(f"{run.root} is not a cnnkit run: it has no config.json. Pass a "
                              "folder made by `cnnkit train`.")
        return run

    config_path = property(lambda self: self.root / "config.json")
    model_path = property(lambda self: self.root / "model.safetensors")
    metrics_path = property(lambda self: self.root / "metrics.csv")
    checkpoint_path = property(lambda self: self.root / "checkpoints" / "last.safetensors")
    split_path = property(lambda self: self.root / "split.json")
    test_metrics_path = property(lambda self: self.root / "test_metrics.json")
    plots_dir = property(lambda self: self.root / "plots")
    report_path = property(lambda self: self.root / "report.html")

    def remove_stale_files(self) -> None:
        """Delete temporary files a killed process left half-written (never a finished
        file: those are only ever replaced whole)."""
        for folder in (self.root, self.root / "checkpoints", self.plots_dir):
            if folder.is_dir():
                remove_stale(folder)

    def drop_checkpoint(self) -> int:
        """Delete the training state of a run that has ended; returns the bytes freed."""
        path = self.checkpoint_path
        if not path.is_file():
            return 0
        size = path.stat().st_size
        path.unlink()
        with contextlib.suppress(OSError):  # only when nothing else is in it
            path.parent.rmdir()
        return size

    def size_bytes(self) -> int:
        """Bytes of every file in the run folder."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text())

    def write_classes(self, classes: tuple[str, ...]) -> None:
        write_text(self.root / "classes.txt", "".join(f"{c}\n" for c in classes))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv from the whole history (atomic, so resume never duplicates)."""
        if not rows:
            return
        fields = list(dict.fromkeys(k for row in rows for k in row))
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
        write_text(self.metrics_path, buf.getvalue())

    def read_metrics(self) -> list[dict[str, str]]:
        if not self.metrics_path.is_file():
            return []
        with open(self.metrics_path, newline="") as fh:
            return list(csv.DictReader(fh))


def check_folder(path: str | os.PathLike, option: str) -> None:
    """Raise one line if ``path`` cannot be a folder because it, or a folder above it, is
    a file: checked before training, not after the first epoch."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CnnkitError(f"{option} {path} must be a folder, but {blocker} is a file. Pass "
                          f"a folder (it is created if missing), e.g. {option} runs.")


def make_folder(path: Path, option: str) -> None:
    """Create ``path`` (and its parents) as a folder, or raise :func:`check_folder`'s line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        check_folder(path, option)
        raise


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def human_size(n: int) -> str:
    """Bytes as people read them: 812 B, 3.4 MB, 1.6 GB."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
