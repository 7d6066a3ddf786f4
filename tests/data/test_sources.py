"""DATA arguments to train/val/test sets: folders, pre-split folders, CSVs, corrupt files."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.base.errors import CnnkitError
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.sources import describe, load_eval_set, load_splits


def _pre(size: int = 16, channels: int = 3) -> Preprocess:
    return Preprocess(size, channels, (0.5,) * channels, (0.5,) * channels)


def _split_tree(root: Path, per_class: int = 20) -> Path:
    """``per_class`` images in each of 3 classes, each image's value unique (to track it)."""
    for c, cls in enumerate(("a", "b", "c")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), c * 80 + i).save(root / cls / f"{i:02d}.png")
    return root


def _files(part) -> set[str]:
    return set(part.paths)


def test_a_class_per_folder_tree_is_split_stratified_and_seeded(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "d")
    s = load_splits(str(root), _pre(), val_fraction=0.1, test_fraction=0.2, seed=3)
    assert s.source.kind == "folder" and s.classes == ("a", "b", "c")
    assert [s.train.class_counts(), s.val.class_counts(), s.test.class_counts()] == [
        [14] * 3, [2] * 3, [4] * 3]
    parts = [_files(s.train), _files(s.val), _files(s.test)]
    assert sum(len(p) for p in parts) == 60 and len(set().union(*parts)) == 60
    for part in (s.train, s.val, s.test):  # labels follow the files
        for path, label in zip(part.paths, part.labels.tolist()):
            assert Path(path).parent.name == s.classes[label]
    again = load_splits(str(root), _pre(), val_fraction=0.1, test_fraction=0.2, seed=3)
    assert _files(again.test) == _files(s.test) and _files(again.val) == _files(s.val)
    other = load_splits(str(root), _pre(), val_fraction=0.1, test_fraction=0.2, seed=4)
    assert _files(other.test) != _files(s.test)


def test_split_fractions_are_configurable(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "d")
    s = load_splits(str(root), _pre(), val_fraction=0.25, test_fraction=0.0)
    assert s.test is None
    assert s.val.class_counts() == [5] * 3 and s.train.class_counts() == [15] * 3
    s = load_splits(str(root), _pre(), val_fraction=0.0, test_fraction=0.0)
    assert s.val is None and s.test is None and len(s.train) == 60


def test_a_small_class_keeps_an_image_in_every_split(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "d")
    for f in sorted((root / "c").iterdir())[3:]:
        f.unlink()
    s = load_splits(str(root), _pre(), val_fraction=0.1, test_fraction=0.1)
    assert s.train.class_counts()[2] == 1
    assert s.val.class_counts()[2] == 1 and s.test.class_counts()[2] == 1


def test_a_pre_split_tree_keeps_its_splits(make_tree, tmp_path: Path) -> None:
    for split, n in (("train", 6), ("valid", 3), ("test", 2)):
        make_tree(tmp_path / "d" / split, per_class=n, size=20, seed=len(split))
    s = load_splits(str(tmp_path / "d"), _pre(), val_fraction=0.5, test_fraction=0.5)
    assert s.source.kind == "split-folder"
    assert [len(s.train), len(s.val), len(s.test)] == [18, 9, 6]
    assert all("/train/" in p for p in s.train.paths)
    assert all("/valid/" in p for p in s.val.paths)
    assert all("/test/" in p for p in s.test.paths)


def test_a_pre_split_tree_without_val_takes_val_from_train(make_tree, tmp_path: Path) -> None:
    for split in ("train", "test"):
        make_tree(tmp_path / "d" / split, per_class=10, size=20)
    s = load_splits(str(tmp_path / "d"), _pre(), val_fraction=0.2)
    assert [len(s.train), len(s.val), len(s.test)] == [24, 6, 30]
    assert not _files(s.train) & _files(s.val)


def test_a_csv_source(make_tree, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "imgs", per_class=5, size=20)
    rows = [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(tree.rglob("*.png"))]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows))
    info = describe(str(tmp_path / "labels.csv"))
    assert info.kind == "csv" and info.name == "labels"
    s = load_splits(str(tmp_path / "labels.csv"), _pre(), val_fraction=0.2, test_fraction=0.2)
    assert s.classes == ("circle", "square", "triangle")
    assert [len(s.train), len(s.val), len(s.test)] == [9, 3, 3]


def test_mixed_colour_modes_arrive_with_the_models_channels(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    made = {
        "a/grey.png": Image.new("L", (10, 12), 90),
        "a/rgba.png": Image.new("RGBA", (12, 10), (255, 0, 0, 128)),
        "a/pal.gif": Image.new("RGB", (9, 9), (0, 255, 0)).convert("P"),
        "b/cmyk.jpg": Image.new("CMYK", (16, 16), (0, 255, 0, 0)),
        "b/deep.tif": Image.fromarray(np.full((14, 14), 40000, dtype=np.uint16)),
        "b/rgb.webp": Image.new("RGB", (20, 11), (1, 2, 3)),
    }
    for name, img in made.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / name)
    for channels in (1, 3):
        s = load_splits(str(root), _pre(12, channels), val_fraction=0, test_fraction=0)
        assert tuple(s.train.images.shape) == (6, channels, 12, 12)
        assert s.train.images.dtype == torch.uint8
    deep = s.train.images[s.train.paths.index(str(root / "b/deep.tif"))]
    assert deep.float().mean().item() == pytest.approx(40000 / 65535 * 255, abs=1)


def test_corrupt_images_are_skipped_with_a_warning_and_left_untouched(make_tree,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path / "d", per_class=4, size=16)
    bad = {root / "circle" / "broken.png": b"\x89PNG\r\n\x1a\n garbage",
           root / "square" / "empty.jpg": b""}
    for path, content in bad.items():
        path.write_bytes(content)
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    s = load_splits(str(root), _pre(), val_fraction=0, test_fraction=0)
    assert len(s.train) == 12
    assert not any(p.endswith(("broken.png", "empty.jpg")) for p in s.train.paths)
    err = capsys.readouterr().err
    assert "broken.png" in err and "empty.jpg" in err and "skipped" in err
    for path, content in bad.items():
        assert path.read_bytes() == content
        assert path.stat().st_mtime_ns == 1_000_000_000
    # From the cache, the warning is given again.
    load_splits(str(root), _pre(), val_fraction=0, test_fraction=0)
    assert "broken.png" in capsys.readouterr().err


def test_source_files_are_never_modified(make_tree, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", per_class=3, size=16, fmt="jpg")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    load_splits(str(root), _pre(), val_fraction=0, test_fraction=0)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    assert after == before


def test_every_image_corrupt_is_a_user_error(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(b"nope")
    with pytest.raises(CnnkitError, match="None of the images could be decoded"):
        load_splits(str(tmp_path), _pre())


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "Data not found"),
    (lambda p: p.write_text("x"), "is a file"),
    (lambda p: p.mkdir(), "no class sub-folders"),
])
def test_unusable_data_paths(tmp_path: Path, make, message: str) -> None:
    target = tmp_path / "data"
    make(target)
    with pytest.raises(CnnkitError, match=message):
        load_splits(str(target), _pre())


def test_a_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="CSV file not found"):
        describe(str(tmp_path / "x.csv"))


def test_a_single_class_folder(make_tree, tmp_path: Path) -> None:
    make_tree(tmp_path / "d", per_class=3, size=16)
    for cls in ("square", "triangle"):
        for f in (tmp_path / "d" / cls).iterdir():
            f.unlink()
        (tmp_path / "d" / cls).rmdir()
    with pytest.raises(CnnkitError, match="only one class"):
        load_splits(str(tmp_path / "d"), _pre())


def test_too_few_images_for_the_split(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("L", (8, 8)).save(tmp_path / cls / f"{i}.png")
    with pytest.raises(CnnkitError, match="No training images left"):
        load_splits(str(tmp_path), _pre(), val_fraction=0.5, test_fraction=0.5)


def test_per_class_keeps_a_seeded_subset(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "d")
    s = load_splits(str(root), _pre(), val_fraction=0, test_fraction=0, per_class=4)
    assert s.train.class_counts() == [4, 4, 4]
    again = load_splits(str(root), _pre(), val_fraction=0, test_fraction=0, per_class=4)
    assert _files(again.train) == _files(s.train)


def test_eval_set_of_a_folder_uses_the_models_class_order(make_tree, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", per_class=2, size=16)
    (root / "square").rename(root / "zz_ignored_later")
    for f in (root / "zz_ignored_later").iterdir():
        f.unlink()
    (root / "zz_ignored_later").rmdir()
    part = load_eval_set(str(root), _pre(), ("triangle", "square", "circle"))
    assert part.classes == ("triangle", "square", "circle")
    counts = Counter(part.labels.tolist())
    assert counts == {0: 2, 2: 2}
    for path, label in zip(part.paths, part.labels.tolist()):
        assert Path(path).parent.name == part.classes[label]


def test_eval_set_of_a_split_tree_is_its_test_split(make_tree, tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        make_tree(tmp_path / "d" / split, per_class=n, size=16)
    part = load_eval_set(str(tmp_path / "d"), _pre(), ("circle", "square", "triangle"))
    assert len(part) == 3 and all("/test/" in p for p in part.paths)


def test_a_folder_named_like_a_built_in_set_is_the_folder(
        make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert describe("shapes").kind == "builtin"
    make_tree(tmp_path / "shapes", per_class=4, size=16)
    info = describe("shapes")
    assert info.kind == "folder" and info.root == Path("shapes")
    assert "write 'shapes:' for the built-in set" in capsys.readouterr().out
    assert describe("shapes:").kind == "builtin"  # the colon still names the built-in set


def test_a_splits_listing_names_every_file_once_with_its_labels(make_tree,
                                                                 tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "imgs", per_class=4, size=20)
    files = sorted(tree.rglob("*.png"))
    # multi-label rows: two labels, one, and none (an image with no label is allowed)
    sets = ["circle|square", "triangle", ""]
    rows = [f"{p.relative_to(tmp_path)},{sets[i % 3]}" for i, p in enumerate(files)]
    (tmp_path / "tags.csv").write_text("path,labels\n" + "\n".join(rows))
    s = load_splits(str(tmp_path / "tags.csv"), _pre(), val_fraction=0.2, test_fraction=0.2)
    listing = s.listing()
    assert listing["classes"] == list(s.classes) == ["circle", "square", "triangle"]
    listed = [row for name in ("train", "val", "test") for row in listing[name]]
    assert sorted(p for p, _ in listed) == sorted(os.path.abspath(p) for p in files)
    want = {os.path.abspath(p): sorted(s.classes.index(c) for c in sets[i % 3].split("|") if c)
            for i, p in enumerate(files)}
    assert {p: labels for p, labels in listed} == want

    single = load_splits(str(_split_tree(tmp_path / "tree")), _pre(), seed=1).listing()
    assert {name: len(single[name]) for name in ("train", "val", "test")} == \
        {"train": 48, "val": 6, "test": 6}
    # each row's content hash, in the rows' order (how copies at other paths are known)
    assert {name: len(single["hashes"][name]) for name in ("train", "val", "test")} == \
        {"train": 48, "val": 6, "test": 6}
    assert set(single) == {"classes", "train", "val", "test", "hashes"}
    assert all(os.path.isabs(p) and single["classes"][label] == Path(p).parent.name
               for name in ("train", "val", "test") for p, label in single[name])
    assert load_splits("shapes", _pre(), seed=1).listing() is None


def test_a_fraction_that_data_with_its_own_split_does_not_use_is_said(make_tree, tmp_path,
                                                                      capsys) -> None:
    """--test-fraction 0.3 on a folder with test/ (or Fashion-MNIST, shapes) and
    --val-fraction on one with val/ drew nothing, and nothing said so."""
    root = tmp_path / "d"
    for part in ("train", "val", "test"):
        make_tree(root / part, per_class=4, size=16)
    s = load_splits(str(root), _pre(), val_fraction=0.2, test_fraction=0.3)
    err = capsys.readouterr().err
    assert f"--val-fraction 0.2 is not used: {root} brings its own val/ split ({len(s.val)} " \
        "images)" in err
    assert f"--test-fraction 0.3 is not used: {root} brings its own test/ split " \
        f"({len(s.test)} images)" in err
    load_splits(str(root), _pre(), val_fraction=0.1, test_fraction=0.1)  # the defaults
    load_splits("shapes:count=30,size=16", _pre(), test_fraction=0.1)
    assert capsys.readouterr().err == ""
    load_splits("shapes:count=30,size=16", _pre(), test_fraction=0.5)
    assert "--test-fraction 0.5 is not used: shapes:count=30,size=16 brings its own test " \
        "split" in capsys.readouterr().err
    load_splits("digits", _pre(8, 1), test_fraction=0.5)  # digits has none: the share is drawn
    assert "not used" not in capsys.readouterr().err


def test_reading_every_image_names_no_fraction_flag(make_tree, tmp_path, capsys) -> None:
    """cnnkit data info, check --labels/--near and data preview read every image (no
    share held out) and warned '--test-fraction 0 is not used: shapes brings its own test
    split' (or --val-fraction 0 for a val/ folder), flags the user never gave."""
    root = tmp_path / "d"
    for part in ("train", "val", "test"):
        make_tree(root / part, per_class=4, size=16)
    s = load_splits(str(root), _pre(), val_fraction=None, test_fraction=None)
    assert s.val is not None and s.test is not None
    b = load_splits("shapes:count=30,size=16", _pre(), val_fraction=None, test_fraction=None)
    assert b.val is None and b.test is not None
    assert "not used" not in capsys.readouterr().err
    flat = make_tree(tmp_path / "flat", per_class=4, size=16)
    whole = load_splits(str(flat), _pre(), val_fraction=None, test_fraction=None)
    assert whole.val is None and whole.test is None and len(whole.train) == 12


def test_a_per_class_larger_than_the_data_is_said(make_tree, tmp_path, capsys) -> None:
    """--per-class 100 on 8 images a class trained on all of them without a word."""
    root = make_tree(tmp_path / "d", per_class=10, size=16)
    s = load_splits(str(root), _pre(), val_fraction=0.1, test_fraction=0.1, per_class=100)
    most = max(s.train.class_counts())
    assert f"--per-class 100: no class has more training images (at most {most}), so all " \
        "of them train" in capsys.readouterr().out
    load_splits(str(root), _pre(), val_fraction=0.1, test_fraction=0.1, per_class=2)
    assert "--per-class" not in capsys.readouterr().out


def _split_csv(root: Path, tree: Path, column: str, value) -> Path:
    """labels.csv of ``tree``'s images with a ``column`` whose value ``value(i)`` gives."""
    files = sorted(tree.rglob("*.png"))
    rows = [f"{p.relative_to(root)},{p.parent.name},{value(i)}" for i, p in enumerate(files)]
    path = root / "labels.csv"
    path.write_text(f"path,label,{column}\n" + "\n".join(rows) + "\n")
    return path


def test_a_csvs_split_column_is_its_split(make_tree, tmp_path: Path) -> None:
    """A 'split' column decides train/val/test as a split folder's train/, val/ and test/
    would (fastai's valid_col; Kaggle's CSVs): the run's fractions draw nothing."""
    tree = make_tree(tmp_path / "imgs", per_class=10, size=16)
    csv = _split_csv(tmp_path, tree, "split", lambda i: ("Train", "valid", "test")[i % 3])
    source = describe(str(csv))
    assert source.presplit and set(source.listings()) == {"train", "val", "test"}
    s = load_splits(source, _pre(), val_fraction=0.1, test_fraction=0.1)
    lines = (tmp_path / "labels.csv").read_text().splitlines()[1:]
    want = {part: {str(tmp_path / line.split(",")[0]) for line in lines
                   if line.split(",")[2].lower() in names}
            for part, names in (("train", ("train",)), ("val", ("valid",)),
                                ("test", ("test",)))}
    assert {n: _files(getattr(s, n)) for n in ("train", "val", "test")} == want
    tested = load_eval_set(str(csv), _pre(), s.classes)  # evaluate: the test rows
    assert _files(tested) == want["test"]


def test_an_is_valid_column_and_bad_split_values(make_tree, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "imgs", per_class=10, size=16)
    csv = _split_csv(tmp_path, tree, "is_valid", lambda i: i % 4 == 0)
    s = load_splits(str(csv), _pre(), val_fraction=0.1, test_fraction=0.1)
    assert len(s.val) == 8 and len(s.train) == 22 and s.test is None
    csv = _split_csv(tmp_path, tree, "split", lambda i: "train" if i else "holdout?")
    with pytest.raises(CnnkitError, match=r"labels\.csv:2: split is 'holdout\?'; write "
                                          r"train, val or test"):
        load_splits(str(csv), _pre())
    csv = _split_csv(tmp_path, tree, "split", lambda i: "test")
    with pytest.raises(CnnkitError, match="puts no row in train"):
        load_splits(str(csv), _pre())
