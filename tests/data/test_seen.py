"""Images known by their contents: file hashes through the file index, and a run's
recorded splits (split.json's hashes, or its files' for an older one)."""

from __future__ import annotations

import shutil
from pathlib import Path

from cnnkit.data.file_index import file_digests, file_facts
from cnnkit.data.seen import ALGORITHM, recorded


def test_the_same_bytes_have_the_same_hash_at_any_path(make_tree, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a", per_class=3, size=12)
    copy = shutil.copytree(tree, tmp_path / "b")
    paths = sorted(str(p) for p in tree.rglob("*.png"))
    moved = [p.replace(str(tree), str(copy)) for p in paths]
    hashes = file_digests(paths, tree)
    assert hashes == file_digests(moved, copy) and len(set(hashes)) == 9
    assert file_digests([str(tmp_path / "gone.png")], tmp_path) == [""]
    # the hashes alone are remembered, and a full check still reads every header
    facts = file_facts(paths, tree, decode=False, near=False, progress=False)
    assert all(f.width == f.height == 12 and f.digest == h
               for f, h in zip((facts[p] for p in paths), hashes))


def test_a_split_json_before_hashes_is_hashed_where_its_files_are(make_tree,
                                                                  tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a", per_class=2, size=12)
    paths = sorted(str(p) for p in tree.rglob("*.png"))
    doc = {"classes": ["circle", "square", "triangle"],
           "train": [[p, 0] for p in paths[:4]] + [[str(tmp_path / "gone.png"), 0]],
           "test": [[p, 0] for p in paths[4:]]}
    old = recorded(doc)
    assert old.unknown(("train",)) == 1 and old.unknown(("test",)) == 0
    new = recorded({**doc, "hashes": {"algorithm": ALGORITHM, "train": ["x"] * 5,
                                      "test": ["y", ""]}})
    assert new.where(["y", "x", "z", ""], ("train", "test")) == ["test", "train", None, None]
    assert old.where(file_digests(paths[4:], tree), ("train",)) == [None, None]
    assert old.where(file_digests(paths[:1], tree), ("train", "test")) == ["train"]
