"""A CSV as people save it (UTF-8 with or without a byte-order mark, UTF-16, Excel's
Windows-1252), and what is not a CSV at all: one line naming the file and the line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from cnnkit.base.errors import CnnkitError
from cnnkit.data.folders import read_csv

ROWS = "path,label\ncat/1.png,café\ndog/2.png,chien\n"


def _images(root: Path) -> Path:
    for rel in ("cat/1.png", "dog/2.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / rel)
    return root


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_the_common_encodings_are_read(tmp_path: Path, encoding: str) -> None:
    path = _images(tmp_path) / "labels.csv"
    path.write_bytes(ROWS.encode(encoding))
    listing = read_csv(path)
    assert listing.classes == ("café", "chien")
    assert [Path(p).name for p in listing.paths] == ["1.png", "2.png"]


def test_random_bytes_are_one_line_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"path,label\ncat/1.png,a\n" + bytes(range(128, 256)) + os.urandom(2000))
    with pytest.raises(CnnkitError, match=r"labels\.csv:3: is not text in UTF-8, UTF-16 or "
                                          r"Windows-1252") as err:
        read_csv(path)
    assert "\n" not in str(err.value)


def test_nul_bytes_are_a_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"path,label\ncat/1.png,a\ndog\x00/2.png,b\n")
    with pytest.raises(CnnkitError, match=r"labels\.csv:3: holds NUL bytes"):
        read_csv(path)


def test_a_200_kb_field_is_one_line_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("path,label\ncat/1.png,a\n" + "x" * 200_000 + ".png,b\n")
    with pytest.raises(CnnkitError, match=r"labels\.csv:3: a field longer than 131,072 "
                                          "characters") as err:
        read_csv(path)
    assert len(str(err.value)) < 400


def test_a_long_bad_value_is_quoted_cut_short(tmp_path: Path) -> None:
    path = _images(tmp_path) / "labels.csv"
    path.write_text("cat/1.png,a\n" + "y" * 100_000 + ",b\n")
    with pytest.raises(CnnkitError, match=r"labels\.csv:2: 'yyy.*\(100,002 characters\) is "
                                          "not an image file") as err:
        read_csv(path)
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("field", ['"cat\ndog"', '"cat|dog\tbird"', '"bird|a\x07b"'])
def test_a_label_with_a_line_break_or_control_character_is_one_line(tmp_path: Path,
                                                                    field: str) -> None:
    # a quoted 'cat<newline>dog' was one label that data info showed as two rows (cat,
    # dog) and that classes.txt, one name a line, would split in two
    path = _images(tmp_path) / "labels.csv"
    path.write_text(f"cat/1.png,{field}\ndog/2.png,bird\n", newline="")
    with pytest.raises(CnnkitError, match=r"labels\.csv:1: the label '.*' holds a control "
                                          "character"):
        read_csv(path)


def test_a_header_names_the_columns_in_any_order(tmp_path: Path, capsys) -> None:
    """'label,path' is read as 'path,label' says: by the header's names, not positions."""
    path = _images(tmp_path) / "labels.csv"
    path.write_text("Class,notes,File\ncafé,x,cat/1.png\nchien,y,dog/2.png\n")
    listing = read_csv(path)
    assert listing.classes == ("café", "chien")
    assert [Path(p).name for p in listing.paths] == ["1.png", "2.png"]
    assert "not read: 'notes'" in capsys.readouterr().out


def test_a_split_column_is_read_and_the_columns_said(tmp_path: Path, capsys) -> None:
    from cnnkit.data.folders import csv_parts

    path = _images(tmp_path) / "labels.csv"
    path.write_text("path,label,split,fold\ncat/1.png,café,train,1\ndog/2.png,chien,test,2\n")
    assert csv_parts(path) == ("train", "test")
    assert [Path(p).name for p in read_csv(path, part="test").paths] == ["2.png"]
    out = capsys.readouterr().out
    assert "splits from 'split'; not read: 'fold'" in out


def test_a_header_of_other_names_is_read_by_position(tmp_path: Path) -> None:
    path = _images(tmp_path) / "labels.csv"
    path.write_text("picture,kind\ncat/1.png,café\ndog/2.png,chien\n")
    assert read_csv(path).classes == ("café", "chien")
