"""A CSV file of ``path,label`` rows, split into train/val/test by the run's fractions, or
by its own split column ('split': train, val, test; or fastai's 'is_valid')."""

from __future__ import annotations

import os
from pathlib import Path

from cnnkit.base.errors import CnnkitError
from cnnkit.data.folders import check_classes, csv_parts, read_csv
from cnnkit.data.imageset import ImageSet, stratified_split
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.scan import Listing, Scan
from cnnkit.data.source import DataSource, Parts, decode_listing, own_split, split_off
from cnnkit.data.source_files import FileSource


class CsvSource(FileSource):
    kind = "csv"

    @property
    def presplit(self) -> bool:  # type: ignore[override]
        return bool(csv_parts(self.root))

    @classmethod
    def recognise(cls, data: str) -> DataSource | None:
        if not data.lower().endswith(".csv"):
            return None
        path = Path(os.path.expanduser(data))
        if not path.is_file():
            raise CnnkitError(f"CSV file not found: {data}.")
        return cls(path.stem, data, root=path)

    def load(self, pre: Preprocess, *, val_fraction: float | None,
             test_fraction: float | None, seed: int) -> Parts:
        return load_csv(self.root, self.spec, pre, val_fraction, test_fraction, seed)

    def eval_set(self, pre: Preprocess, classes: tuple[str, ...]) -> ImageSet:
        return csv_eval_set(self.root, self.spec, pre, classes)

    def listings(self, report: Scan | None = None) -> dict[str, Listing]:
        return csv_listings(self.root)


def csv_listings(csv: Path) -> dict[str, Listing]:
    """A CSV's rows: ``{"all": ...}``, or per split where its split column gives one (the
    classes are the train rows')."""
    parts = csv_parts(csv)
    if not parts:
        return {"all": read_csv(csv)}
    train = _train_rows(csv, parts)
    return {"train": train, **{p: read_csv(csv, train.classes, part=p)
                               for p in parts if p != "train"}}


def load_csv(csv: Path, spec: str, pre: Preprocess, val_fraction: float | None,
             test_fraction: float | None, seed: int) -> Parts:
    """A CSV's train/val/test: its own split column's, the validation images drawn from
    the train rows where it has no val rows; else one stratified draw of both."""
    parts = csv_parts(csv)
    if not parts:
        listing = read_csv(csv)
        check_classes(listing, spec)
        return split_whole(decode_listing(listing, pre), val_fraction, test_fraction, seed)
    listing = _train_rows(csv, parts)
    check_classes(listing, f"{spec} (its train rows)")
    train = decode_listing(listing, pre)
    held = {p: own_split(f"--{'val' if p == 'val' else 'test'}-fraction",
                         val_fraction if p == "val" else test_fraction, spec, p,
                         decode_listing(read_csv(csv, listing.classes, part=p), pre))
            for p in parts if p != "train"}
    val, test = held.get("val"), held.get("test")
    if val is None:
        train, val = split_off(train, val_fraction, seed)
    return train, val, test


def csv_eval_set(csv: Path, spec: str, pre: Preprocess, classes: tuple[str, ...]) -> ImageSet:
    """What ``evaluate`` tests on: every row, or the test (else val) rows of a CSV with a
    split column, as for a folder with train/ and test/."""
    parts = csv_parts(csv)
    part = "test" if "test" in parts else "val" if "val" in parts else None
    if parts and part is None:
        raise CnnkitError(f"{spec}'s split column puts every row in train; mark test (or "
                          "val) rows to evaluate on them.")
    return decode_listing(read_csv(csv, classes, part=part), pre)


def _train_rows(csv: Path, parts: tuple[str, ...]) -> Listing:
    if "train" not in parts:
        raise CnnkitError(f"{csv}: its split column puts no row in train; mark the rows to "
                          "train on 'train'.")
    return read_csv(csv, part="train")


def split_whole(everything: ImageSet, val_fraction: float | None,
                test_fraction: float | None, seed: int) -> Parts:
    """One stratified draw of validation and test images from data that came whole."""
    parts = stratified_split(everything.labels, [val_fraction or 0.0, test_fraction or 0.0],
                             seed)
    train = everything.subset(parts[0])
    val = everything.subset(parts[1]) if len(parts[1]) else None
    test = everything.subset(parts[2]) if len(parts[2]) else None
    return train, val, test
