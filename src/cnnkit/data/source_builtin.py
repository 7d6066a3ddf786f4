"""A built-in data set by name (``fashion-mnist``, ``digits``, ``shapes:size=16``)."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.data.audit import audit_builtin
from cnnkit.data.audit_result import Audit
from cnnkit.data.builtin import BUILTINS, load_builtin, parse_name
from cnnkit.data.imageset import ImageSet
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.probe import Peek
from cnnkit.data.source import DataSource, Parts, own_split, split_off


class BuiltinSource(DataSource):
    kind = "builtin"
    presplit = True  # its own test split where it has one; validation comes from train

    @classmethod
    def recognise(cls, data: str) -> DataSource | None:
        parsed = parse_name(data)
        if parsed is None:
            return None
        if data in BUILTINS and Path(data).is_dir():
            # A folder of that name here is what the user means ("digits" exported
            # earlier); "digits:" still names the built-in set.
            log.info(f"using the folder ./{data}; write '{data}:' for the built-in set")
            return None
        builtin, options = parsed
        return cls(data.partition(":")[0], data, builtin=builtin,
                   options=tuple(sorted(options.items())))

    def load(self, pre: Preprocess, *, val_fraction: float | None,
             test_fraction: float | None, seed: int) -> Parts:
        """Built-in sets keep their native size (resized per batch)."""
        _, train, test = load_builtin(self.spec)
        if test is None:
            train, test = split_off(train, test_fraction, seed)
        else:
            test = own_split("--test-fraction", test_fraction, self.spec, "test", test)
        train, val = split_off(train, val_fraction, seed)
        return train, val, test

    def eval_set(self, pre: Preprocess, classes: tuple[str, ...]) -> ImageSet:
        _, _, part = load_builtin(self.spec)
        if part is None:
            raise CnnkitError(f"Built-in set {self.spec!r} has no test split; evaluate the run "
                              "without DATA to use the run's own held-out split.")
        mapping = {name: classes.index(name) for name in part.classes if name in classes}
        if len(mapping) != len(part.classes):
            raise CnnkitError(f"{self.spec}'s classes do not match the model's "
                              f"({', '.join(classes)}).")
        labels = torch.tensor([mapping[part.classes[i]] for i in part.labels.tolist()])
        return ImageSet(part.images, labels, classes)

    def audit(self, *, img_size: int, decode: bool = True, progress: bool = True) -> Audit:
        return audit_builtin(self, img_size=img_size)

    def same_data(self, other: DataSource) -> bool:
        """The same set with the same options (``shapes`` is ``shapes:size=32``)."""
        return (isinstance(other, BuiltinSource) and other.builtin.name == self.builtin.name
                and other.options == self.options)

    def peek(self) -> Peek:
        return Peek(self.builtin.classes)

    @property
    def native_size(self) -> int | None:
        return dict(self.options).get("size")
