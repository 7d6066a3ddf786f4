"""A CSV file of ``path,label`` rows, split into train/val/test by the run's fractions."""

from __future__ import annotations

import os
from pathlib import Path

from cnnkit.base.errors import CnnkitError
from cnnkit.data.folders import check_classes, read_csv
from cnnkit.data.imageset import ImageSet, stratified_split
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.scan import Listing, Scan
from cnnkit.data.source import DataSource, Parts, decode_listing
from cnnkit.data.source_files import FileSource


class CsvSource(FileSource):
    kind = "csv"
    presplit = False

    @classmethod
    def recognise(cls, data: str) -> DataSource | None:
        if not data.lower().endswith(".csv"):
            return None
        path = Path(os.path.expanduser(data))
        if not path.is_file():
            raise CnnkitError(f"CSV file not found: {data}.")
        return cls(path.stem, data, root=path)

    def load(self, pre: Preprocess, *, val_fraction: float, test_fraction: float,
             seed: int) -> Parts:
        listing = self.listings()["all"]
        check_classes(listing, self.spec)
        return split_whole(decode_listing(listing, pre), val_fraction, test_fraction, seed)

    def eval_set(self, pre: Preprocess, classes: tuple[str, ...]) -> ImageSet:
        return decode_listing(read_csv(self.root, classes), pre)

    def listings(self, report: Scan | None = None) -> dict[str, Listing]:
        return {"all": read_csv(self.root)}


def split_whole(everything: ImageSet, val_fraction: float, test_fraction: float,
                seed: int) -> Parts:
    """One stratified draw of validation and test images from data that came whole."""
    parts = stratified_split(everything.labels, [val_fraction, test_fraction], seed)
    train = everything.subset(parts[0])
    val = everything.subset(parts[1]) if len(parts[1]) else None
    test = everything.subset(parts[2]) if len(parts[2]) else None
    return train, val, test
