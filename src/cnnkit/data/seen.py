"""Images known by their bytes, whatever their path: the content hashes a run's
split.json records for each split, so that a copied or moved folder is still recognised
as what the run trained, validated or tested on.

split.json holds ``"hashes": {"algorithm": "blake2b-128", "train": [...], ...}``, one
hash per row of each split, in the rows' order. A split.json written before it has no
hashes: its files are hashed where they are now, and a file that is gone is unknown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.data.file_index import file_digests
from cnnkit.data.source import DataSource

ALGORITHM = "blake2b-128"  # of the file's bytes: FileFacts.digest
SPLITS = ("train", "val", "test")


def hashes_of(paths: Sequence[str], source: DataSource) -> list[str]:
    """The content hashes of files of ``source`` ("" for one that cannot be read), through
    the file index of its folder (which ``cnnkit check`` and training's check fill)."""
    root = source.root
    if root is None or not root.is_dir():  # a CSV's files: the index of its folder
        root = root.parent if root is not None else Path.cwd()
    return file_digests(paths, root)


def split_hashes(paths: Mapping[str, Sequence[str]], source: DataSource) -> dict[str, Any]:
    """split.json's ``hashes`` for the files of each split of ``source``."""
    return {"algorithm": ALGORITHM,
            **{name: hashes_of(files, source) for name, files in paths.items()}}


@dataclass(frozen=True)
class Recorded:
    """A run's recorded splits by content: per split, one hash per row ("" where the
    contents are unknown: a file that an older split.json lists and that is gone)."""

    hashes: Mapping[str, Sequence[str]]

    def unknown(self, names: Sequence[str]) -> int:
        """How many files of the splits ``names`` have unknown contents."""
        return sum(not h for name in names for h in self.hashes.get(name, ()))

    def where(self, hashes: Sequence[str], names: Sequence[str]) -> list[str | None]:
        """For each of ``hashes``, the first of the splits ``names`` that lists a file
        with those contents, else None."""
        first: dict[str, str] = {}
        for name in reversed(names):
            first.update(dict.fromkeys(self.hashes.get(name, ()), name))
        first.pop("", None)
        return [first.get(h) if h else None for h in hashes]


def recorded(doc: Mapping[str, Any], names: Sequence[str] = SPLITS) -> Recorded:
    """The contents of the splits ``names`` of a checked split.json ``doc``: the hashes it
    records, else (written before it recorded them) those of its files as they are now."""
    kept = doc.get("hashes")
    if isinstance(kept, Mapping) and kept.get("algorithm") == ALGORITHM:
        return Recorded({name: list(kept.get(name) or ()) for name in names})
    out: dict[str, Sequence[str]] = {}
    for name in names:
        paths = [os.path.expanduser(p) for p, _ in doc.get(name) or ()]
        out[name] = file_digests(paths, _common_folder(paths)) if paths else []
    return Recorded(out)


def _common_folder(paths: Sequence[str]) -> str:
    try:
        return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    except ValueError:  # paths on different drives
        return os.path.dirname(os.path.abspath(paths[0]))
