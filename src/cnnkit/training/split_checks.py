"""Checks that a run's figures are held out when it starts from another run: --resume
must split its data as it did, and --init-from's training images must not be this run's
validation or test images. Images are known by their contents (:mod:`cnnkit.data.seen`),
so a copied or moved folder is no way around either check."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from cnnkit.artifacts.modelfile import find_sidecar
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.seen import recorded
from cnnkit.data.sources import Splits


def check_same_split(run: RunDir, splits: Splits) -> None:
    """A resumed run's folder or CSV must split as it did (its split.json): files added or
    removed since move images between the splits, so the resumed epochs would train on
    another split and the test would hold images the first epochs trained on. Files are
    compared by their contents and labels: the same images at other paths split the same,
    and other images under the same names do not."""
    doc, mine = run.read_split(), splits.listing()
    if doc is None or mine is None:
        return
    then, now = recorded(doc).hashes, mine["hashes"]
    changed = []
    for name in ("train", "val", "test"):
        was, rows = doc.get(name) or [], mine.get(name) or []
        if len(was) != len(rows):
            changed.append(f"{name}: {len(was):,} -> {len(rows):,} images")
            continue
        other = Counter(_labelled(now.get(name, ()), rows)) - Counter(
            _labelled(then.get(name, ()), was))
        if other:
            changed.append(f"{name}: {sum(other.values()):,} other files")
    if changed:
        raise CnnkitError(f"The data of {run.root} changed since it started "
                          f"({'; '.join(changed)}): resumed, it would split anew and test on "
                          "images its first epochs trained on. Put the files back as its "
                          "split.json lists them, or start a new run.")


def _labelled(hashes: Sequence[str], rows: list[list[Any]]) -> list[tuple[str, Any]]:
    """(content hash, label) per row; a file of unknown contents matches no other."""
    return [(h or f"unknown {i}", tuple(y) if isinstance(y, list) else y)
            for i, (h, (_, y)) in enumerate(zip(hashes, rows))]


SPLIT_OPTIONS = ("seed", "val_fraction", "test_fraction")


def check_held_out(first: str, splits: Splits, config: TrainConfig) -> None:
    """The --init-from run's training images (its split.json) must not be this run's
    validation or test images: a folder or CSV split with another --seed or fractions,
    or a copy of its folder, would test and validate the start on images it learnt, and
    the figures would look held out without being so. Images are known by their contents,
    wherever they lie."""
    start = RunDir(find_sidecar(first).parent)
    doc, mine = start.read_split(), splits.listing()
    if doc is None or mine is None:
        return
    learnt = recorded(doc, ("train",))
    parts = []
    for name, label in (("test", "test"), ("val", "validation")):
        rows = mine.get(name) or ()
        n = sum(w is not None for w in learnt.where(mine["hashes"].get(name, ()), ("train",)))
        if n:
            parts.append(f"{n:,} of this run's {len(rows):,} {label} images")
    if not parts:
        return
    saved = start.read_config() if start.config_path.is_file() else {}
    differ = [f"--{k.replace('_', '-')} {saved[k]} there, {getattr(config, k)} here"
              for k in SPLIT_OPTIONS if k in saved and saved[k] != getattr(config, k)]
    paths = {os.path.abspath(p) for p, _ in doc.get("train") or ()}
    moved = not any(os.path.abspath(p) in paths for name in ("test", "val")
                    for p, _ in mine.get(name) or ())
    why = "; ".join(differ) if differ else "its split of the images is not this run's"
    if moved:
        why += "; the same files at other paths"
    raise CnnkitError(f"--init-from {first} trained on {' and '.join(parts)} ({why}), so "
                      "they would not be held out: split as it did (its --seed, "
                      "--val-fraction and --test-fraction), or start anew without "
                      "--init-from.")
