"""Every data source: class folders (split or not), CSV, and the built-in sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import builtin
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.sources import describe, load_eval_set, load_splits
from cnnkit.errors import CnnkitError

PRE = Preprocess(16, 3, (0.5,) * 3, (0.5,) * 3)


def _tree(root: Path, counts: dict[str, int], size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png")
    return root


def test_one_folder_is_split_stratified_and_seeded(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": 20, "b": 10})
    one = load_splits(str(root), PRE, val_fraction=0.2, test_fraction=0.1, seed=3)
    two = load_splits(str(root), PRE, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert one.classes == ("a", "b") and describe(str(root)).kind == "folder"
    assert (len(one.train), len(one.val), len(one.test)) == (21, 6, 3)
    assert one.val.class_counts() == [4, 2]  # stratified: each class keeps its share
    assert one.files() == two.files()  # seeded
    other = load_splits(str(root), PRE, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert other.files() != one.files()
    assert one.train.images.shape[1:] == (3, 16, 16)
    everything = set(one.files()["train"]) | set(one.files()["val"]) | set(one.files()["test"])
    assert len(everything) == 30  # no image in two splits


def test_a_folder_already_split(tmp_path: Path) -> None:
    _tree(tmp_path / "d" / "train", {"a": 6, "b": 6})
    _tree(tmp_path / "d" / "val", {"a": 2, "b": 2})
    _tree(tmp_path / "d" / "test", {"a": 3, "b": 1})
    splits = load_splits(str(tmp_path / "d"), PRE)
    assert describe(str(tmp_path / "d")).kind == "split-folder"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 4)
    assert splits.test.class_counts() == [3, 1]
    assert len(load_eval_set(str(tmp_path / "d"), PRE, splits.classes)) == 4


@pytest.mark.parametrize("header", [True, False])
def test_csv_of_path_and_label(tmp_path: Path, header: bool) -> None:
    _tree(tmp_path / "img", {"cat": 4, "dog": 4})
    rows = [f"img/{c}/{i}.png,{c}" for c in ("cat", "dog") for i in range(4)]
    csv = tmp_path / "labels.csv"
    csv.write_text(("path,label\n" if header else "") + "\n".join(rows) + "\n")
    splits = load_splits(str(csv), PRE, val_fraction=0.25, test_fraction=0.0)
    assert splits.classes == ("cat", "dog")
    assert len(splits.train) + len(splits.val) == 8


def test_csv_mistakes_name_the_row(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("a.png,cat\nmissing.png\n")
    with pytest.raises(CnnkitError, match=r"bad.csv:2: expected 'path,label'"):
        load_splits(str(csv), PRE)
    csv.write_text("nothere.png,cat\nnothere2.png,dog\n")
    with pytest.raises(CnnkitError, match=r"does not exist: .*nothere\.png"):
        load_splits(str(csv), PRE)


def test_builtin_digits_and_fashion_mnist() -> None:
    _, train, test = builtin.load_builtin("digits")
    assert train.images.shape[1:] == (1, 8, 8) and len(train.classes) == 10 and test is None
    splits = load_splits("fashion-mnist", PRE, per_class=5, seed=0)
    assert splits.train.class_counts() == [5] * 10
    assert len(splits.test) == 10_000 and splits.train.images.shape[1:] == (1, 28, 28)
    assert splits.classes[0] == "T-shirt/top"
    # Few-image runs validate on the same proportion, not on 6,000 images.
    assert splits.val.class_counts() == [1] * 10


def test_builtin_shapes_is_seeded_with_any_size_and_count() -> None:
    _, a, _ = builtin.load_builtin("shapes:size=16,count=30,seed=1")
    _, b, _ = builtin.load_builtin("shapes:size=16,count=30,seed=1")
    _, c, _ = builtin.load_builtin("shapes:size=16,count=30,seed=2")
    assert a.images.shape == (30, 3, 16, 16)
    assert (a.images == b.images).all() and not (a.images == c.images).all()
    assert a.class_counts() == [10, 10, 10]
    with pytest.raises(CnnkitError):
        builtin.load_builtin("shapes:colour=3")


def test_missing_data_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="Data not found"):
        describe(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CnnkitError, match="is a file"):
        describe(str(tmp_path / "file.txt"))


def test_empty_and_single_class_folders(tmp_path: Path) -> None:
    _tree(tmp_path / "one", {"a": 3})
    with pytest.raises(CnnkitError, match="only one class"):
        load_splits(str(tmp_path / "one"), PRE)
    _tree(tmp_path / "two", {"a": 3})
    (tmp_path / "two" / "b").mkdir()
    with pytest.raises(CnnkitError, match="b"):
        load_splits(str(tmp_path / "two"), PRE)
