"""Turn a DATA argument (built-in name, folder or CSV) into train/val/test image sets."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit import log
from cnnkit.config import TrainConfig
from cnnkit.data import builtin as builtins_
from cnnkit.data.cache import decode_files
from cnnkit.data.folders import (
    Listing,
    check_classes,
    list_class_folders,
    read_csv,
    split_dirs,
)
from cnnkit.data.imageset import ImageSet, stratified_split, take_per_class
from cnnkit.data.pipeline import Preprocess
from cnnkit.errors import CnnkitError


@dataclass(frozen=True)
class SourceInfo:
    """What a DATA argument is, known before decoding anything."""

    kind: str  # "builtin" | "folder" | "split-folder" | "csv"
    name: str  # short name for run folders
    spec: str
    builtin: builtins_.BuiltinSet | None = None
    root: Path | None = None


@dataclass(frozen=True)
class Splits:
    source: SourceInfo
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


def describe(data: str) -> SourceInfo:
    parsed = builtins_.parse_name(data)
    if parsed is not None and data in builtins_.BUILTINS and Path(data).is_dir():
        # A folder of that name here is what the user means ("digits" exported earlier);
        # "digits:" still names the built-in set.
        log.info(f"using the folder ./{data}; write '{data}:' for the built-in set")
        parsed = None
    if parsed is not None:
        return SourceInfo("builtin", data.partition(":")[0], data, builtin=parsed[0])
    path = Path(os.path.expanduser(data))
    if data.lower().endswith(".csv"):
        if not path.is_file():
            raise CnnkitError(f"CSV file not found: {data}.")
        return SourceInfo("csv", path.stem, data, root=path)
    if not path.exists():
        raise CnnkitError(
            f"Data not found: {data!r} is neither a folder, a CSV file nor a built-in set "
            f"({', '.join(builtins_.BUILTINS)}). Check the path."
        )
    if not path.is_dir():
        raise CnnkitError(f"{data} is a file; pass a folder with one sub-folder per class, "
                          "a CSV of 'path,label' rows, or a built-in set name.")
    kind = "split-folder" if split_dirs(path) else "folder"
    return SourceInfo(kind, path.resolve().name, data, root=path)


def _listing(info: SourceInfo, classes: tuple[str, ...] | None = None) -> Listing:
    if info.kind == "csv":
        return read_csv(info.root, classes)
    root = split_dirs(info.root)["train"] if info.kind == "split-folder" else info.root
    return list_class_folders(root, classes)


def _decode(listing: Listing, pre: Preprocess, progress: bool = True) -> ImageSet:
    images, ok, _errors = decode_files(listing.paths, pre.channels, pre.decode_size,
                                       pre.interpolation, progress=progress)
    labels = torch.tensor([listing.labels[i] for i in ok], dtype=torch.long)
    paths = tuple(listing.paths[i] for i in ok)
    if len(ok) == 0:
        raise CnnkitError("None of the images could be decoded; see the warnings above.")
    return ImageSet(images, labels, listing.classes, paths,
                    crop_fraction=pre.img_size / pre.decode_size)


def load_splits(
    data: str | SourceInfo,
    pre: Preprocess,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    per_class: int | None = None,
) -> Splits:
    """Load and split ``data``. Built-in sets keep their native size (resized per batch)."""
    info = data if isinstance(data, SourceInfo) else describe(data)
    data = info.spec
    val = test = None
    if info.kind == "builtin":
        _, train, test = builtins_.load_builtin(data)
        if test is None and test_fraction > 0:
            train_idx, test_idx = stratified_split(train.labels, [test_fraction], seed)
            train, test = train.subset(train_idx), train.subset(test_idx)
    elif info.kind == "split-folder":
        dirs = split_dirs(info.root)
        listing = list_class_folders(dirs["train"])
        check_classes(listing, str(dirs["train"]))
        train = _decode(listing, pre)
        if "val" in dirs:
            val = _decode(list_class_folders(dirs["val"], listing.classes), pre)
        if "test" in dirs:
            test = _decode(list_class_folders(dirs["test"], listing.classes), pre)
    else:
        listing = _listing(info)
        check_classes(listing, data)
        everything = _decode(listing, pre)
        parts = stratified_split(everything.labels, [val_fraction, test_fraction], seed)
        train = everything.subset(parts[0])
        val = everything.subset(parts[1]) if len(parts[1]) else None
        test = everything.subset(parts[2]) if len(parts[2]) else None
    if val is None and val_fraction > 0 and info.kind in ("builtin", "split-folder"):
        train_idx, val_idx = stratified_split(train.labels, [val_fraction], seed)
        train, val = train.subset(train_idx), train.subset(val_idx)
    if per_class is not None:
        train = train.subset(take_per_class(train.labels, per_class, seed))
        if val is not None and val_fraction > 0:
            # Few-shot runs keep the same train:val proportion instead of a full val split.
            keep = max(1, math.ceil(per_class * val_fraction / (1 - val_fraction)))
            val = val.subset(take_per_class(val.labels, keep, seed))
    counts = train.class_counts()
    empty = [c for c, n in zip(train.classes, counts) if n == 0]
    if empty:
        raise CnnkitError(f"No training images left for class(es) {', '.join(empty)} after "
                          "splitting; add images or lower --val-fraction/--test-fraction.")
    log.info(f"data: {info.spec} - {len(train.classes)} classes, {len(train):,} train"
             + (f", {len(val):,} val" if val is not None else "")
             + (f", {len(test):,} test" if test is not None else "") + " images")
    return Splits(info, train.classes, train, val, test)


def load_run_splits(config: TrainConfig, pre: Preprocess, source: SourceInfo | None = None
                    ) -> Splits:
    """The train/val/test splits of a run, as its config draws them (the same every time).

    ``source``: ``config.data`` already described, so that it is described once.
    """
    return load_splits(source or config.data, pre, val_fraction=config.val_fraction,
                       test_fraction=config.test_fraction, seed=config.seed,
                       per_class=config.per_class)


def load_eval_set(data: str | SourceInfo, pre: Preprocess, classes: tuple[str, ...]
                  ) -> ImageSet:
    """Images to evaluate a trained model on, labelled with the model's class indices.

    A built-in set gives its test split; a pre-split folder its ``test/`` (else
    ``val/``); a plain class-per-folder tree or a CSV is used whole.
    """
    info = data if isinstance(data, SourceInfo) else describe(data)
    data = info.spec
    if info.kind == "builtin":
        _, _, test = builtins_.load_builtin(data)
        if test is None:
            raise CnnkitError(f"Built-in set {data!r} has no test split; evaluate the run "
                              "without DATA to use the run's own held-out split.")
        part = test
        mapping = {name: classes.index(name) for name in part.classes if name in classes}
        if len(mapping) != len(part.classes):
            raise CnnkitError(f"{data}'s classes do not match the model's "
                              f"({', '.join(classes)}).")
        labels = torch.tensor([mapping[part.classes[i]] for i in part.labels.tolist()])
        return ImageSet(part.images, labels, classes)
    if info.kind == "csv":
        return _decode(read_csv(info.root, classes), pre)
    root = info.root
    if info.kind == "split-folder":
        dirs = split_dirs(root)
        root = dirs.get("test") or dirs.get("val")
        if root is None:
            raise CnnkitError(f"{data} has only a train/ split; add test/ or val/ to evaluate.")
    return _decode(list_class_folders(root, classes), pre)


def load_files(paths: list[str], labels: list[int], classes: tuple[str, ...],
               pre: Preprocess) -> ImageSet:
    """Decode an explicit list of files (a run's recorded split)."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise CnnkitError(f"{len(missing)} file(s) of the run's split are gone, e.g. "
                          f"{missing[0]}. Pass DATA to evaluate on other images.")
    return _decode(Listing(tuple(paths), tuple(labels), classes), pre)
