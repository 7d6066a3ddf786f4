"""Folders of images: one sub-folder per class, or ``train/``, ``val/``, ``test/`` of them."""

from __future__ import annotations

import os
from pathlib import Path

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.data.folders import check_classes, csv_parts
from cnnkit.data.imageset import ImageSet
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.probe import Peek
from cnnkit.data.scan import Listing, Scan, list_class_folders, scan_images, split_dirs
from cnnkit.data.source import (
    DataSource,
    Parts,
    decode_listing,
    own_split,
    peek_listing,
    split_off,
)
from cnnkit.data.source_csv import csv_eval_set, csv_listings, load_csv, split_whole
from cnnkit.data.source_files import FileSource

LABELS_FILE = "labels.csv"


def _folder(data: str) -> Path | None:
    path = Path(os.path.expanduser(data))
    return path if path.is_dir() else None


class LabelledFolderSource(FileSource):
    """A folder of images with a ``labels.csv`` at its top: ``path,label`` or
    ``path,labels`` rows, paths relative to the folder (images anywhere below it),
    split into train/val/test by the run's fractions."""

    kind = "folder+labels"

    @property
    def presplit(self) -> bool:  # type: ignore[override]
        return bool(csv_parts(self.labels_file))

    @classmethod
    def recognise(cls, data: str) -> DataSource | None:
        path = _folder(data)
        if path is None or not (path / LABELS_FILE).is_file():
            return None
        return cls(path.resolve().name, data, root=path)

    @property
    def labels_file(self) -> Path:
        return self.root / LABELS_FILE

    def load(self, pre: Preprocess, *, val_fraction: float | None,
             test_fraction: float | None, seed: int) -> Parts:
        _tell_unlisted(self.root, tuple(p for listing in self.listings().values()
                                        for p in listing.paths))
        return load_csv(self.labels_file, str(self.labels_file), pre, val_fraction,
                        test_fraction, seed)

    def eval_set(self, pre: Preprocess, classes: tuple[str, ...]) -> ImageSet:
        return csv_eval_set(self.labels_file, str(self.labels_file), pre, classes)

    def listings(self, report: Scan | None = None) -> dict[str, Listing]:
        return csv_listings(self.labels_file)


def _tell_unlisted(root: Path, listed: tuple[str, ...]) -> None:
    """The labels file decides which images are data; the images under the folder that
    it does not list are left out, and said so: in multi-label data an image with no
    label is a row with an empty field, not a file that is missing from the list."""
    known = {os.path.normpath(os.path.abspath(p)) for p in listed}
    left = [f for f in scan_images(root).files
            if os.path.normpath(os.path.abspath(f)) not in known]
    if left:
        verb = "is" if len(left) == 1 else "are"
        log.warn(f"{log.plural(len(left), 'image')} under {root} {verb} not in "
                 f"{LABELS_FILE} and left out (e.g. {left[0]}); list an image with no "
                 "label as 'path,' under a 'path,labels' header")


class FolderSource(FileSource):
    """One sub-folder per class, split into train/val/test by the run's fractions."""

    kind = "folder"
    presplit = False

    @classmethod
    def recognise(cls, data: str) -> DataSource | None:
        path = _folder(data)
        return None if path is None else cls(path.resolve().name, data, root=path)

    def load(self, pre: Preprocess, *, val_fraction: float | None,
             test_fraction: float | None, seed: int) -> Parts:
        listing = self.listings()["all"]
        check_classes(listing, self.spec)
        return split_whole(decode_listing(listing, pre), val_fraction, test_fraction, seed)

    def eval_set(self, pre: Preprocess, classes: tuple[str, ...]) -> ImageSet:
        return decode_listing(list_class_folders(self.root, classes), pre)

    def listings(self, report: Scan | None = None) -> dict[str, Listing]:
        return {"all": list_class_folders(self.root, report=report)}


class SplitFolderSource(FileSource):
    """``train/`` (and ``val/``, ``test/``) folders, each with one sub-folder per class;
    without ``val/`` the validation images come from ``train/``."""

    kind = "split-folder"
    presplit = True

    @classmethod
    def recognise(cls, data: str) -> DataSource | None:
        path = _folder(data)
        if path is None or not split_dirs(path):
            return None
        return cls(path.resolve().name, data, root=path)

    def load(self, pre: Preprocess, *, val_fraction: float | None,
             test_fraction: float | None, seed: int) -> Parts:
        dirs = split_dirs(self.root)
        listing = list_class_folders(dirs["train"])
        check_classes(listing, str(dirs["train"]))
        train = decode_listing(listing, pre)
        val = test = None
        if "val" in dirs:
            val = own_split("--val-fraction", val_fraction, self.spec, f"{dirs['val'].name}/",
                            decode_listing(list_class_folders(dirs["val"], listing.classes), pre))
        if "test" in dirs:
            test = own_split("--test-fraction", test_fraction, self.spec, "test/",
                             decode_listing(list_class_folders(dirs["test"], listing.classes), pre))
        if val is None:
            train, val = split_off(train, val_fraction, seed)
        return train, val, test

    def listings(self, report: Scan | None = None) -> dict[str, Listing]:
        dirs = split_dirs(self.root)
        train = list_class_folders(dirs["train"], report=report, top=self.root)
        out = {"train": train}
        for name in ("val", "test"):
            if name in dirs:
                out[name] = list_class_folders(dirs[name], train.classes, report=report,
                                               top=self.root)
        return out

    def peek(self) -> Peek:  # the training files alone: the val/ and test/ scans can wait
        return peek_listing(list_class_folders(split_dirs(self.root)["train"]))

    def eval_set(self, pre: Preprocess, classes: tuple[str, ...]) -> ImageSet:
        dirs = split_dirs(self.root)
        root = dirs.get("test") or dirs.get("val")
        if root is None:
            raise CnnkitError(f"{self.spec} has only a train/ split; add test/ or val/ to "
                              "evaluate.")
        return decode_listing(list_class_folders(root, classes), pre)
