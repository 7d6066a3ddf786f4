"""The run folder: everything one training run leaves behind, in plain formats.

    runs/<name>/
      config.json            resolved training config (repeatable, resumable)
      classes.txt            class names, one per line, in index order
      model.safetensors      kept weights  (+ model.json sidecar: predict needs nothing else)
      metrics.csv            one row per epoch
      checkpoints/last.safetensors   full training state for --resume (atomic; dropped
                             when the run ends, unless --keep-checkpoint: then
                             checkpoints/ended says the run has ended)
      split.json             which file went to which split (folder and CSV data)
      test_metrics.json      the kept model on the held-out test split
      kept.json              from a trained start (the linear probe, --init-from): which of
                             the start and the end was kept, with their validation figures
      plots/, report.html    pictures and a report
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from cnnkit.base.atomic import remove_stale, write_json, write_text
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError


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
        if run.root.is_file():
            what = f"the run folder it is in ({run.root.parent})" if \
                (run.root.parent / "config.json").is_file() else "a folder made by `cnnkit train`"
            raise CnnkitError(f"{run.root} is a file, not a run folder: pass {what}.")
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

    ended_path = property(lambda self: self.root / "checkpoints" / "ended")

    def mark_ended(self) -> None:
        """Record that the run has ended although its checkpoint is kept (--keep-checkpoint),
        so that --resume tells it from a run stopped between its last epoch and its end."""
        write_text(self.ended_path, "this run has ended; its training state is kept for "
                                    "reference (--keep-checkpoint)\n")

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
        """config.json as saved (a mapping of options), or one line if it is damaged."""
        doc = self.read_json(self.config_path, CONFIG_ADVICE)
        if not isinstance(doc, dict):
            raise damaged(self.config_path, "not a mapping of options", CONFIG_ADVICE)
        return doc

    def train_config(self) -> TrainConfig:
        """The run's TrainConfig; a bad value is one line naming config.json."""
        doc = self.read_config()
        try:
            return TrainConfig.from_dict(doc)
        except CnnkitError as exc:
            raise damaged(self.config_path, str(exc).rstrip("."), CONFIG_ADVICE) from None

    def read_json(self, path: Path, advice: str) -> Any:
        """A JSON file of the run, or one line naming it, what is wrong and ``advice``."""
        try:
            return json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise damaged(path, "not UTF-8 text", advice) from None
        except json.JSONDecodeError as exc:
            raise damaged(path, f"not valid JSON: {exc.msg} at line {exc.lineno}",
                          advice) from None
        except RecursionError:
            raise damaged(path, "nested too deeply", advice) from None

    def read_split(self) -> dict[str, Any] | None:
        """split.json, checked: ``classes`` (names) and, per split, ``[path, index]`` rows;
        None when the run has none (a built-in data set)."""
        path = self.split_path
        if not path.is_file():
            return None
        doc = self.read_json(path, SPLIT_ADVICE)
        if not isinstance(doc, dict):
            raise damaged(path, "not a mapping of splits", SPLIT_ADVICE)
        classes = doc.get("classes")
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise damaged(path, "its 'classes' is not a list of names", SPLIT_ADVICE)
        def index(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(classes)

        for name in ("train", "val", "test"):
            rows = doc.get(name)
            if rows is not None and not (isinstance(rows, list) and all(
                    isinstance(r, list) and len(r) == 2 and isinstance(r[0], str)
                    and (index(r[1]) or (isinstance(r[1], list) and all(map(index, r[1]))))
                    for r in rows)):
                raise damaged(path, f"its {name!r} rows are not [path, class index] pairs "
                              "(or [path, [label indices]] for multi-label data)", SPLIT_ADVICE)
        hashes = doc.get("hashes")  # each row's content hash; older runs have none
        listed = [name for name in ("train", "val", "test") if doc.get(name) is not None]
        if hashes is not None and not (isinstance(hashes, dict) and all(
                isinstance(hashes.get(name), list)
                and all(isinstance(h, str) for h in hashes[name]) for name in listed)):
            raise damaged(path, "its 'hashes' are not a list of content hashes per split",
                          SPLIT_ADVICE)
        if hashes is not None and any(len(hashes[n]) != len(doc[n]) for n in listed):
            del doc["hashes"]  # rows edited by hand: their files are hashed where they are
        return doc

    def split_files(self, doc: dict[str, Any], rows: list[list[Any]],
                    classes: tuple[str, ...]) -> tuple[list[str], list[Any], bool]:
        """Rows of a checked split.json ``doc`` as (paths, labels as indices of
        ``classes``, whether they are label sets); a damaged file when its classes are
        not ``classes``."""
        names = doc["classes"] or list(classes)
        if set(names) != set(classes):
            raise damaged(self.split_path, "its classes are not the model's", SPLIT_ADVICE)
        paths = [os.path.expanduser(p) for p, _ in rows]
        multilabel = any(isinstance(y, list) for _, y in rows)
        if multilabel:
            labels: list[Any] = [tuple(classes.index(names[int(i)]) for i in y) for _, y in rows]
        else:
            labels = [classes.index(names[int(y)]) for _, y in rows]
        return paths, labels, multilabel

    def write_classes(self, classes: tuple[str, ...]) -> None:
        write_text(self.root / "classes.txt", "".join(f"{c}\n" for c in classes))

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv from the whole history (atomic, so resume never duplicates)."""
        if not rows:
            return
        fields = list(dict.fromkeys(k for row in rows for k in row))

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
        write_text(self.metrics_path, buf.getvalue())

    def read_metrics(self) -> list[dict[str, str]]:
        """metrics.csv's rows (none if it is missing), or one line if it is damaged."""
        if not self.metrics_path.is_file():
            return []
        try:
            with open(self.metrics_path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except UnicodeDecodeError:
            raise damaged(self.metrics_path, "not UTF-8 text", METRICS_ADVICE) from None
        except csv.Error as exc:
            raise damaged(self.metrics_path, f"not CSV: {exc}", METRICS_ADVICE) from None
        if rows and "epoch" not in rows[0]:
            raise damaged(self.metrics_path, "it has no 'epoch' column", METRICS_ADVICE)
        return rows


CONFIG_ADVICE = ("it records how the run was trained: restore it, or start a new run "
                 "(predict still works: it reads model.json and model.safetensors)")
SPLIT_ADVICE = ("it lists the held-out test images: restore it, or evaluate on data you "
                "name (cnnkit evaluate RUN DATA)")
METRICS_ADVICE = ("it is the per-epoch record: restore it, or delete it (a resumed run "
                  "writes it again from its checkpoint; a report then has no curves)")


def damaged(path: Path, why: str, advice: str) -> CnnkitError:
    """The one line for a run file that cannot be used: which, what is wrong, what to do."""
    return CnnkitError(f"{path} is damaged ({why}); {advice}.")


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
