"""Turn a DATA argument (built-in name, folder or CSV) into train/val/test image sets.

Each kind of source is one class (:mod:`cnnkit.data.source` says what it must do);
:data:`KINDS` lists them in the order they are tried.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any

from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.folders import Listing
from cnnkit.data.imageset import ImageSet, take_per_class
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.seen import split_hashes
from cnnkit.data.source import DataSource, decode_listing
from cnnkit.data.source_builtin import BuiltinSource
from cnnkit.data.source_csv import CsvSource
from cnnkit.data.source_folder import FolderSource, LabelledFolderSource, SplitFolderSource
from cnnkit.data.spec import missing

# Tried in order; the first that recognises DATA describes it. A new kind of source is
# a DataSource subclass in a module of its own and one entry here.
KINDS: tuple[type[DataSource], ...] = (BuiltinSource, CsvSource, LabelledFolderSource,
                                       SplitFolderSource, FolderSource)


@dataclass(frozen=True)
class Splits:
    source: DataSource
    classes: tuple[str, ...]
    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None

    def files(self) -> dict[str, list[str]]:
        """Which file went to which split (empty for built-in sets)."""
        out = {}
        for name in ("train", "val", "test"):
            part = getattr(self, name)
            if part is not None and part.paths is not None:
                out[name] = list(part.paths)
        return out

    def listing(self) -> dict[str, Any] | None:
        """Which file went to which split with its label, as a run folder keeps it: the
        classes, then per split ``[absolute path, class index]`` rows (for multi-label
        data, the list of the file's label indices, empty for an image with no label),
        then ``hashes``: each row's content hash (:mod:`cnnkit.data.seen`), by which the
        same images are known at another path. None for built-in sets. Absolute paths:
        `cnnkit evaluate` finds the test files from any working directory."""
        files = self.files()
        if not files:
            return None
        out: dict[str, Any] = {"classes": list(self.classes)}
        for name in files:
            part = getattr(self, name)
            if part.multilabel:
                out[name] = [[os.path.abspath(p), [int(k) for k in (y > 0.5).nonzero()
                                                   .flatten().tolist()]]
                             for p, y in zip(part.paths, part.labels)]
            else:
                out[name] = [[os.path.abspath(p), int(y)]
                             for p, y in zip(part.paths, part.labels.tolist())]
        out["hashes"] = self._hashes
        return out

    @functools.cached_property
    def _hashes(self) -> dict[str, Any]:
        """Computed once: a run's checks and its split.json ask for them."""
        return split_hashes(self.files(), self.source)


def describe(data: str) -> DataSource:
    """What DATA is, known before decoding anything."""
    for kind in KINDS:
        source = kind.recognise(data)
        if source is not None:
            return source
    why = missing(data)
    if why is not None:
        raise CnnkitError(why)
    raise CnnkitError(f"{data} is a file; pass a folder with one sub-folder per class, "
                      "a CSV of 'path,label' rows, or a built-in set name.")


def load_splits(
    data: str | DataSource,
    pre: Preprocess,
    *,
    val_fraction: float | None = 0.1,
    test_fraction: float | None = 0.1,
    seed: int = 0,
    per_class: int | None = None,
) -> Splits:
    """Load and split ``data``. Built-in sets keep their native size (resized per batch).
    Fractions of None hold nothing out, quietly: for commands that read every image by
    DATA's own splits, where the flags they would name were never given."""
    source = data if isinstance(data, DataSource) else describe(data)
    train, val, test = source.load(pre, val_fraction=val_fraction,
                                   test_fraction=test_fraction, seed=seed)
    if per_class is not None:
        most = max(train.class_counts(), default=0)
        if most <= per_class:  # nothing to take: said, as the run is not the few-shot asked
            log.info(f"--per-class {per_class:,}: no class has more training images (at "
                     f"most {most:,}), so all of them train")
        train = train.subset(take_per_class(train.labels, per_class, seed))
        if val is not None and val_fraction:
            # Few-shot runs keep the same train:val proportion instead of a full val split.
            keep = max(1, math.ceil(per_class * val_fraction / (1 - val_fraction)))
            val = val.subset(take_per_class(val.labels, keep, seed))
    counts = train.class_counts()
    empty = [c for c, n in zip(train.classes, counts) if n == 0]
    if empty:
        kind = "label(s)" if train.multilabel else "class(es)"
        raise CnnkitError(f"No training images left for {kind} {', '.join(empty)} after "
                          "splitting; add images or lower --val-fraction/--test-fraction.")
    what = (f"{log.plural(len(train.classes), 'label')} (multi-label)" if train.multilabel
            else f"{len(train.classes)} classes")
    none = sum(p.unlabelled() for p in (train, val, test) if p is not None)
    log.info(f"data: {source.spec} - {what}, {len(train):,} train"
             + (f", {len(val):,} val" if val is not None else "")
             + (f", {len(test):,} test" if test is not None else "") + " images"
             + (f" ({none:,} with no label)" if none else ""))
    return Splits(source, train.classes, train, val, test)


def load_run_splits(config: TrainConfig, pre: Preprocess, source: DataSource | None = None
                    ) -> Splits:
    """The train/val/test splits of a run, as its config draws them (the same every time).

    ``source``: ``config.data`` already described, so that it is described once.
    """
    return load_splits(source if source is not None else config.data, pre,
                       val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                       seed=config.seed, per_class=config.per_class)


def load_eval_set(data: str | DataSource, pre: Preprocess, classes: tuple[str, ...]
                  ) -> ImageSet:
    """Images to evaluate a trained model on, labelled with the model's class indices.

    A built-in set gives its test split; a pre-split folder its ``test/`` (else
    ``val/``); a plain class-per-folder tree or a CSV is used whole.
    """
    source = data if isinstance(data, DataSource) else describe(data)
    return source.eval_set(pre, classes)


def load_files(paths: list[str], labels: list[int] | list[tuple[int, ...]],
               classes: tuple[str, ...], pre: Preprocess, *, multilabel: bool = False
               ) -> ImageSet:
    """Decode an explicit list of files (a run's recorded split); multi-label: each
    file's label indices."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise CnnkitError(f"{len(missing)} file(s) of the run's split are gone, e.g. "
                          f"{missing[0]}. Pass DATA to evaluate on other images.")
    return decode_listing(Listing(tuple(paths), tuple(labels), classes, multilabel), pre)
