"""The one directory scan: symlink loops, dangling links, non-UTF-8 and newline names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from cnnkit.base.errors import CnnkitError
from cnnkit.data.cache import decode_files
from cnnkit.data.folders import list_class_folders, read_csv
from cnnkit.data.scan import Scan, scan_images


def _img(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)
    return path


def _tree(root: Path, n: int = 3) -> Path:
    for c in ("cat", "dog"):
        for i in range(n):
            _img(root / c / f"{i}.png", 40 * i)
    return root


def _latin1(folder: Path, name: bytes = b"caf\xe9.png") -> str:
    """A file whose name is not valid UTF-8, as archives made on Windows leave them."""
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as fh:
        Image.new("RGB", (8, 8)).save(fh, format="PNG")
    return os.fsdecode(path)


def test_a_directory_link_to_itself_or_an_ancestor_is_read_once(tmp_path: Path, capsys) -> None:
    _tree(tmp_path)
    (tmp_path / "cat" / "self").symlink_to(".")
    (tmp_path / "cat" / "up").symlink_to("..")
    (tmp_path / "loop").symlink_to(".")  # a "class" that is the whole tree again
    listing = list_class_folders(tmp_path)
    assert listing.classes == ("cat", "dog")
    assert len(listing.paths) == 6 and len(set(map(os.path.realpath, listing.paths))) == 6
    err = " ".join(capsys.readouterr().err.split())
    assert "self leads to a folder that is already read" in err
    assert "loop leads to a folder" in err


def test_a_link_from_one_class_into_another_does_not_copy_its_images(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / "cat" / "dogs").symlink_to("../dog")
    listing = list_class_folders(tmp_path)
    assert len(listing.paths) == 6


def test_a_linked_folder_elsewhere_is_read_and_reported_as_outside(tmp_path: Path) -> None:
    _img(tmp_path / "elsewhere" / "x.png")
    _img(tmp_path / "data" / "a.png")
    (tmp_path / "data" / "more").symlink_to(tmp_path / "elsewhere")
    scan = scan_images(tmp_path / "data")
    assert [Path(p).name for p in scan.files] == ["a.png", "x.png"]
    assert scan.outside == [str(tmp_path / "data" / "more")]


def test_looping_dangling_and_non_utf8_files_are_skipped_naming_each(tmp_path: Path,
                                                                     capsys) -> None:
    _tree(tmp_path)
    (tmp_path / "cat" / "loop.png").symlink_to("loop.png")
    (tmp_path / "cat" / "gone.png").symlink_to("nowhere.png")
    bad = _latin1(tmp_path / "dog")
    listing = list_class_folders(tmp_path)
    assert len(listing.paths) == 6
    err = capsys.readouterr().err
    assert "loop.png" in err and "a symlink that loops" in err
    assert "gone.png" in err and "points nowhere" in err
    assert repr(bad) in err and "not valid UTF-8" in err


def test_the_decode_cache_key_survives_names_and_links_that_os_stat_rejects(tmp_path: Path
                                                                             ) -> None:
    good = str(_img(tmp_path / "a.png"))
    (tmp_path / "loop.png").symlink_to("loop.png")
    bad = _latin1(tmp_path)
    images, ok, errors = decode_files((good, str(tmp_path / "loop.png"), bad), 3, 8,
                                      use_cache=True, progress=False)
    assert ok == [0, 2] and len(images) == 2
    assert len(errors) == 1 and "loop.png" in errors[0]


def test_a_newline_in_a_name_is_quoted_in_the_warning(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "two\nlines.png"
    bad.write_bytes(b"not an image")
    decode_files((str(bad),), 3, 8, use_cache=False, progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "'" + str(tmp_path) + "/two\\nlines.png'" in lines[0]


def _csv(tmp_path: Path, rows: str) -> Path:
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    path = tmp_path / "labels.csv"
    path.write_text("path,label\n" + rows)
    return path


def test_a_csv_row_with_an_empty_label_is_an_error_naming_the_line(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match=r"labels.csv:3: 'b.png' has an empty label"):
        read_csv(_csv(tmp_path, "a.png,cat\nb.png, \n"))


def test_a_path_under_two_labels_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match=r"labels.csv:4: './a.png' is listed under two labels, "
                                          r"'cat' \(line 2\) and 'dog'"):
        read_csv(_csv(tmp_path, "a.png,cat\nb.png,dog\n./a.png,dog\n"))


def test_the_same_row_twice_is_one_image(tmp_path: Path) -> None:
    listing = read_csv(_csv(tmp_path, "a.png,cat\nb.png,dog\na.png,cat\n"))
    assert len(listing.paths) == 2


def test_a_tree_1100_folders_deep_is_read_whole(tmp_path: Path, nested_folders) -> None:
    _tree(tmp_path, n=1)
    deep = _img(nested_folders(tmp_path / "cat", 1100) / "deep.png")
    listing = list_class_folders(tmp_path)
    assert listing.paths == (str(tmp_path / "cat" / "0.png"), str(deep),
                             str(tmp_path / "dog" / "0.png"))


def test_sub_folders_are_read_in_order_after_the_folder_s_own_files(tmp_path: Path) -> None:
    for rel in ("b/z.png", "a/y/x.png", "a/w.png", "a/y/v/u.png", "c.png", "a/b/t.png"):
        _img(tmp_path / rel)
    names = [os.path.relpath(p, tmp_path) for p in scan_images(tmp_path).files]
    assert names == ["c.png", "a/w.png", "a/b/t.png", "a/y/x.png", "a/y/v/u.png", "b/z.png"]


def test_links_within_the_data_folder_are_inside_it_and_read_once(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data")
    _img(root / "dog" / "sub" / "9.png")
    (root / "cat" / "dogs").symlink_to("../dog")  # a sibling class folder
    (root / "cat" / "everything").symlink_to("..")  # the data root
    (root / "cat" / "puppies").symlink_to("../dog/sub")  # inside a class read later
    report = Scan()
    listing = list_class_folders(root, report=report)
    assert report.outside == []
    assert sorted(Path(p).name for p in report.loops) == ["dogs", "everything", "puppies"]
    by_class = {c: sorted(os.path.relpath(p, root) for p, y in zip(listing.paths, listing.labels)
                          if listing.classes[y] == c) for c in listing.classes}
    assert by_class == {"cat": ["cat/0.png", "cat/1.png", "cat/2.png"],
                        "dog": ["dog/0.png", "dog/1.png", "dog/2.png", "dog/sub/9.png"]}


def test_a_class_folder_that_links_out_of_the_data_folder_is_outside(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data")
    _img(tmp_path / "elsewhere" / "bird" / "0.png")
    (root / "bird").symlink_to(tmp_path / "elsewhere" / "bird")
    report = Scan()
    list_class_folders(root, report=report)
    assert report.outside == [str(root / "bird")]


def test_a_split_tree_s_links_between_splits_are_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _tree(root / "train")
    _tree(root / "test")
    (root / "train" / "cat" / "more").symlink_to("../../test/cat")
    report = Scan()
    list_class_folders(root / "train", report=report, top=root)
    assert report.outside == []
