"""Finding labelled images on disk: class folders, pre-split trees, CSVs, hidden files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cnnkit.base.errors import CnnkitError
from cnnkit.data.folders import (
    check_classes,
    is_hidden,
    list_class_folders,
    read_csv,
    safe_name,
    split_dirs,
)


def _img(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)
    return path


def _tree(root: Path, classes=("cat", "dog"), n: int = 3) -> Path:
    for c in classes:
        for i in range(n):
            _img(root / c / f"{i}.png")
    return root


def test_class_folders_become_sorted_classes(tmp_path: Path) -> None:
    _tree(tmp_path, ("zebra", "ant", "moose"), 2)
    listing = list_class_folders(tmp_path)
    assert listing.classes == ("ant", "moose", "zebra")
    assert len(listing.paths) == 6
    for path, label in zip(listing.paths, listing.labels):
        assert Path(path).parent.name == listing.classes[label]


def test_images_in_nested_sub_folders_belong_to_their_class(tmp_path: Path) -> None:
    _tree(tmp_path)
    _img(tmp_path / "cat" / "2019" / "summer" / "deep.jpg")
    listing = list_class_folders(tmp_path)
    assert listing.classes == ("cat", "dog")
    deep = [lab for p, lab in zip(listing.paths, listing.labels) if p.endswith("deep.jpg")]
    assert deep == [0]


@pytest.mark.parametrize("name", [".DS_Store", ".hidden", "__MACOSX", ".ipynb_checkpoints",
                                  "Thumbs.db", "desktop.ini", "__pycache__"])
def test_hidden_names(name: str) -> None:
    assert is_hidden(name)


def test_hidden_files_and_folders_are_never_data(tmp_path: Path) -> None:
    _tree(tmp_path)
    for hidden in (".ipynb_checkpoints", "__MACOSX", ".git", ".trash"):
        _img(tmp_path / hidden / "x.png")  # would be a third "class"
        _img(tmp_path / "cat" / hidden / "y.png")  # would be a cat image
    _img(tmp_path / "cat" / "._0.png")  # a macOS resource fork named like an image
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    listing = list_class_folders(tmp_path)
    assert listing.classes == ("cat", "dog")
    assert len(listing.paths) == 6
    assert not any("/." in p or "__MACOSX" in p for p in listing.paths)


def test_pre_split_tree_is_recognised(tmp_path: Path) -> None:
    for split in ("train", "Validation", "test"):
        _tree(tmp_path / split)
    dirs = split_dirs(tmp_path)
    assert dirs is not None and set(dirs) == {"train", "val", "test"}
    assert dirs["val"].name == "Validation"
    assert split_dirs(_tree(tmp_path / "plain")) is None


def test_a_class_called_train_next_to_other_classes_is_not_a_split(tmp_path: Path) -> None:
    _tree(tmp_path, ("train", "plane", "car"))
    assert split_dirs(tmp_path) is None


def test_classes_are_matched_to_a_known_list(tmp_path: Path) -> None:
    _tree(tmp_path, ("dog", "T-shirt_top"))
    listing = list_class_folders(tmp_path, ("T-shirt/top", "cat", "dog"))
    assert listing.classes == ("T-shirt/top", "cat", "dog")
    assert sorted(set(listing.labels)) == [0, 2]
    with pytest.raises(CnnkitError, match="does not know"):
        list_class_folders(tmp_path, ("cat", "dog"))


def test_safe_name() -> None:
    assert safe_name("T-shirt/top") == "T-shirt_top"
    assert safe_name(r"a\b:c") == "a_b_c"
    assert "/" not in safe_name("/")


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / "bird").mkdir()
    (tmp_path / "bird" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(CnnkitError, match=r"bird.*no images"):
        list_class_folders(tmp_path)


def test_loose_images_without_class_folders(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    with pytest.raises(CnnkitError, match="2 images but no class folders"):
        list_class_folders(tmp_path)


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    listing = list_class_folders(_tree(tmp_path, ("cat",)))
    with pytest.raises(CnnkitError, match=r"only one class \(cat\)"):
        check_classes(listing, str(tmp_path))


# --- CSV ---------------------------------------------------------------------------------


def _csv_tree(tmp_path: Path) -> Path:
    for i in range(4):
        _img(tmp_path / "img" / f"c{i}.png")
        _img(tmp_path / "img" / f"d{i}.jpg")
    return tmp_path


@pytest.mark.parametrize("header", [None, "path,label", "filename,class", "image_path,category",
                                    "File,Label", "img,y"])
def test_csv_with_or_without_a_header(tmp_path: Path, header: str | None) -> None:
    _csv_tree(tmp_path)
    rows = [f"img/c{i}.png,cat" for i in range(4)] + [f"img/d{i}.jpg,dog" for i in range(4)]
    text = "\n".join(([header] if header else []) + rows) + "\n"
    (tmp_path / "labels.csv").write_text(text)
    listing = read_csv(tmp_path / "labels.csv")
    assert listing.classes == ("cat", "dog")
    assert len(listing.paths) == 8
    assert listing.labels == (0,) * 4 + (1,) * 4
    assert all(Path(p).is_file() for p in listing.paths)


def test_csv_paths_are_relative_to_the_csv_and_absolute_paths_work(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    absolute = tmp_path / "img" / "d0.jpg"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "l.csv").write_text(f"../img/c0.png,cat\n{absolute}, dog \n\n")
    listing = read_csv(tmp_path / "sub" / "l.csv")
    assert listing.classes == ("cat", "dog") and listing.labels == (0, 1)


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    (tmp_path / "l.csv").write_bytes("path,label\nimg/c0.png,cat\nimg/d0.jpg,dog\n"
                                     .encode("utf-8-sig"))
    assert read_csv(tmp_path / "l.csv").classes == ("cat", "dog")


def test_csv_mistakes_are_explained(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    (tmp_path / "missing.csv").write_text("img/c0.png,cat\nimg/nothere.png,dog\n")
    with pytest.raises(CnnkitError, match=r"does not exist: .*nothere\.png"):
        read_csv(tmp_path / "missing.csv")
    (tmp_path / "one.csv").write_text("img/c0.png\n")
    with pytest.raises(CnnkitError, match="expected 'path,label'"):
        read_csv(tmp_path / "one.csv")
    (tmp_path / "notimg.csv").write_text("img/c0.png,cat\nnotes.txt,dog\n")
    with pytest.raises(CnnkitError, match=r"notimg\.csv:2: 'notes\.txt' is not an image"):
        read_csv(tmp_path / "notimg.csv")
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(CnnkitError, match="lists no images"):
        read_csv(tmp_path / "empty.csv")
    with pytest.raises(CnnkitError, match="not found"):
        read_csv(tmp_path / "nope.csv")


def test_csv_labels_must_be_known_classes(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    (tmp_path / "l.csv").write_text("img/c0.png,cat\nimg/d0.jpg,bird\n")
    with pytest.raises(CnnkitError, match="'bird' is not one of"):
        read_csv(tmp_path / "l.csv", ("cat", "dog"))
