"""Finding labelled images listed in a CSV, from its bytes to its listing, in one module;
class-per-folder and pre-split trees are walked by :mod:`cnnkit.data.scan` (their names
are here too, for callers of either).

A user's CSV is read as people save them: UTF-8 with or without a byte-order mark,
UTF-16 with one (Excel's "Unicode text"), or Windows-1252 (Excel's plain "CSV" on a
Western Windows). Anything else, a binary file or a field no CSV of paths holds, is one
line naming the file and the line, never a UnicodeDecodeError or a ``_csv.Error``.
"""

from __future__ import annotations

import codecs
import csv
import functools
import os
from collections.abc import Iterator
from pathlib import Path

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import IMAGE_SUFFIXES, is_image_file
from cnnkit.data.labelsets import MULTILABEL_HEADERS, lists_several, parse_labels
from cnnkit.data.scan import (
    IGNORED_NAMES,
    Listing,
    class_dirs,
    is_hidden,
    list_class_folders,
    safe_name,
    split_dirs,
)

__all__ = ["IGNORED_NAMES", "Listing", "check_classes", "class_dirs", "is_hidden",
           "list_class_folders", "read_csv", "safe_name", "split_dirs"]
_TOLD: set[str] = set()  # CSV files already said to be read as Windows-1252
# header names of the image column and of the label column, in any order and case
PATH_HEADERS = ("path", "file", "filename", "file_name", "filepath", "file_path", "image",
                "image_path", "img", "img_path", "fname")
LABEL_HEADERS = ("label", "class", "class_name", "category", "target", *MULTILABEL_HEADERS)
# a column that splits the rows: 'split' (train, val, test) or fastai's 'is_valid'
SPLIT_HEADERS = ("split", "set", "subset")
VALID_HEADERS = ("is_valid", "is_val", "valid")
SPLIT_VALUES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "dev": "val", "test": "test", "testing": "test",
                "holdout": "test"}
TRUE_FALSE = {"true": "val", "1": "val", "yes": "val", "false": "train", "0": "train",
              "no": "train"}


def csv_parts(path: Path) -> tuple[str, ...]:
    """The splits a CSV's split column holds ("train", "val", "test", in that order);
    none when it has no such column."""
    _, _, parts = _csv_rows(path)
    return tuple(p for p in ("train", "val", "test") if parts and p in parts)


def read_csv(path: Path, classes: tuple[str, ...] | None = None, *,
             base: Path | None = None, part: str | None = None) -> Listing:
    """Read ``path,label`` rows (a header row is optional); paths are relative to the CSV
    (or to ``base``). A multi-label CSV (:mod:`cnnkit.data.labelsets` says when a CSV is
    one and how its labels are written) gives a multi-label listing. ``part``: only the
    rows its split column puts in that split (:func:`csv_parts`)."""
    if not path.is_file():
        raise CnnkitError(f"CSV file not found: {path}.")
    header, rows, parts = _csv_rows(path)
    _check_widths(path, header, rows)
    if part is not None and parts is not None:
        rows = [r for r, p in zip(rows, parts) if p == part]
    multi = (header is not None and _columns(header)[1] is not None
             and header[_columns(header)[1]].strip().lower() in MULTILABEL_HEADERS) or any(
        lists_several(label) for _, _, label, _ in rows)
    if multi:
        return _multilabel_listing(path, rows, classes, base or path.parent)
    kept: list[tuple[str, str]] = []
    where: dict[str, tuple[str, int]] = {}  # normalised path -> (label, line)
    for lineno, file, label, _ in rows:
        if not label:
            raise CnnkitError(f"{path}:{lineno}: {file!r} has an empty label. Give every "
                              "row a class name: 'path,label' (for multi-label data, name "
                              "the column 'labels' in a header row: an empty field is then "
                              "an image with no label).")
        key = os.path.normpath(file)
        if key in where:
            label0, line0 = where[key]
            if label0 != label:
                raise CnnkitError(f"{path}:{lineno}: {file!r} is listed under two labels, "
                                  f"{_cut(repr(label0))} (line {line0}) and "
                                  f"{_cut(repr(label))}. An image has one class: keep one "
                                  "of the rows (for multi-label data, list an image's labels "
                                  "in one field: 'a.jpg,cat|dog').")
            continue  # the same row twice: one image, read once
        where[key] = (label, lineno)
        kept.append((file, label))
    if not kept:
        raise CnnkitError(f"{path} lists no images" + (f" in its {part} split" if part else "")
                          + ". Each row should be 'path,label'.")
    names = classes if classes is not None else tuple(sorted({label for _, label in kept}))
    for _, label in kept:
        if label not in names:
            raise CnnkitError(f"{path}: label {_cut(repr(label))} is not one of the model's "
                              f"classes ({', '.join(names)}).")
    paths = _resolve(path, [file for file, _ in kept], base or path.parent)
    return Listing(tuple(paths), tuple(names.index(label) for _, label in kept), names)


def _csv_rows(path: Path) -> tuple[list[str] | None, list[tuple[int, str, str, int]],
                                   list[str] | None]:
    """The header row (if any), each row as (line, path, label field, its width: the
    fields up to the last one that holds text), and each row's split where a header
    names a split column (else None). Read once per version of the file: a CSV with a
    split column is asked for its splits, then each split's rows (callers only read
    what this returns)."""
    st = path.stat()
    return _parsed(path, os.path.abspath(path), st.st_ino, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _parsed(path: Path, *_version: object) -> tuple[
        list[str] | None, list[tuple[int, str, str, int]], list[str] | None]:
    """:func:`_csv_rows` of ``path`` as it is (``_version``: where it is, its inode,
    modification time and size, so an edited file is read again)."""
    header: list[str] | None = None
    rows: list[tuple[int, str, str, int]] = []
    parts: list[str] | None = None
    at_split: int | None = None
    first = True
    at_path, at_label = 0, 1  # the columns, unless a header names them otherwise
    lines, encoding = read_rows(path)
    if encoding == "cp1252" and str(path) not in _TOLD:
        _TOLD.add(str(path))  # once, though a command may list the CSV more than once
        log.info(f"{path}: read as Windows-1252 text (it is not UTF-8)")
    for lineno, row in lines:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2:
            raise CnnkitError(f"{path}:{lineno}: expected 'path,label'. "
                              f"Received: {_cut(repr(row))}")
        if first and not is_image_file(row[0].strip()):
            first = False
            header = row  # a header row, whatever its column names ('image_path,class')
            named_path, named_label = _columns(row)
            at_path = named_path if named_path is not None else 0
            at_label = named_label if named_label is not None else (1 if at_path != 1 else 0)
            at_split = _split_column(row, at_path, at_label)
            parts = [] if at_split is not None else None
            _tell_unused(path, row, at_path, at_label, at_split)
            continue
        first = False
        if max(at_path, at_label) >= len(row):
            raise CnnkitError(f"{path}:{lineno}: expected a field under each of the header's "
                              f"columns {header[at_path].strip()!r} and "
                              f"{header[at_label].strip()!r}. "
                              f"Received: {_cut(repr(row))}")
        file, label = row[at_path].strip(), row[at_label].strip()
        if not is_image_file(file):
            raise CnnkitError(f"{path}:{lineno}: {_cut(repr(file))} is not an image file "
                              f"(expected one of {', '.join(IMAGE_SUFFIXES)}).")
        for name in parse_labels(label):
            if any(ch < " " or ch == "\x7f" for ch in name):
                raise CnnkitError(f"{path}:{lineno}: the label {_cut(repr(name))} holds a "
                                  "control character (a line break, a tab): a class name is "
                                  "one line of text. Is a quote left open?")
        rows.append((lineno, file, label, _width(row)))
        if parts is not None and at_split is not None and header is not None:
            parts.append(_split_of(path, lineno, header[at_split].strip(),
                                   row[at_split] if at_split < len(row) else ""))
    return header, rows, parts


def _columns(header: list[str]) -> tuple[int | None, int | None]:
    """The image and label columns a header row names ('label,path' works as
    'path,label'); None for one it does not name."""
    names = [c.strip().lower() for c in header]
    at_path = next((i for i, n in enumerate(names) if n in PATH_HEADERS), None)
    at_label = next((i for i, n in enumerate(names) if n in LABEL_HEADERS), None)
    return at_path, at_label


def _split_column(header: list[str], at_path: int, at_label: int) -> int | None:
    """The column that splits the rows, where the header names one."""
    names = [c.strip().lower() for c in header]
    return next((i for i, n in enumerate(names) if i not in (at_path, at_label)
                 and n in SPLIT_HEADERS + VALID_HEADERS), None)


def _split_of(path: Path, lineno: int, column: str, field: str) -> str:
    """A row's split from its split column: train/val/test (and their common spellings),
    or, under an 'is_valid' column, true/false."""
    value = field.strip().lower()
    if column.lower() in VALID_HEADERS:
        if value in TRUE_FALSE:
            return TRUE_FALSE[value]
        raise CnnkitError(f"{path}:{lineno}: {column} is {_cut(repr(field))}; write True "
                          "(a validation image) or False (a training image).")
    if value in SPLIT_VALUES:
        return SPLIT_VALUES[value]
    raise CnnkitError(f"{path}:{lineno}: {column} is {_cut(repr(field))}; write train, val "
                      "or test (or leave the column out, and the run splits the rows by "
                      "--val-fraction and --test-fraction).")


def _tell_unused(path: Path, header: list[str], at_path: int, at_label: int,
                 at_split: int | None) -> None:
    """Say which columns are read and which are not, once per file."""
    key = f"{path}:columns"
    unused = [c.strip() for i, c in enumerate(header)
              if i not in (at_path, at_label, at_split) and c.strip()]
    if key in _TOLD or not (unused or at_split is not None):
        return
    _TOLD.add(key)
    split = f", splits from {header[at_split].strip()!r}" if at_split is not None else ""
    rest = f"; not read: {', '.join(map(repr, unused))}" if unused else ""
    log.info(f"{path}: images from {header[at_path].strip()!r}, labels from "
             f"{header[at_label].strip()!r}{split}{rest}")


def _width(row: list[str]) -> int:
    """Fields up to the last one that holds text (trailing empty ones, as spreadsheets
    write, do not count)."""
    return max((i + 1 for i, c in enumerate(row) if c.strip()), default=0)


def _check_widths(path: Path, header: list[str] | None,
                  rows: list[tuple[int, str, str, int]]) -> None:
    """Text in a column no header names is refused: 'a.jpg,cat,dog' means two labels
    written in two fields, and reading the first alone would drop the second unseen."""
    allowed = max(_width(header), 2) if header is not None else 2
    for lineno, file, _, width in rows:
        if width > allowed:
            count = {2: "two", 3: "three", 4: "four"}.get(allowed, str(allowed))
            named = (f"the header names {count} columns" if header is not None
                     else "a row is 'path,label'")
            raise CnnkitError(f"{path}:{lineno}: more than {count} fields, and {named}. "
                              "An image's labels go in one field, separated by '|' or ';': "
                              f"'{file},cat|dog'; a header row naming every column keeps "
                              "other columns.")


def _multilabel_listing(path: Path, rows: list[tuple[int, str, str, int]],
                        classes: tuple[str, ...] | None, base: Path) -> Listing:
    """A multi-label CSV: each image with the union of the label sets of its rows."""
    sets: dict[str, tuple[str, dict[str, None]]] = {}  # normalised path -> (file, labels)
    for _, file, field, _ in rows:
        entry = sets.setdefault(os.path.normpath(file), (file, {}))
        for name in parse_labels(field):
            entry[1].setdefault(name, None)
    if not sets:
        raise CnnkitError(f"{path} lists no images. Each row should be 'path,labels'.")
    seen = sorted({name for _, labels in sets.values() for name in labels})
    if not seen:
        raise CnnkitError(f"{path} gives no image a label: every labels field is empty. A "
                          "multi-label CSV needs at least one labelled image ('a.jpg,cat|dog').")
    names = classes if classes is not None else tuple(seen)
    unknown = [name for name in seen if name not in names]
    if unknown:
        raise CnnkitError(f"{path}: label(s) {', '.join(_cut(repr(u)) for u in unknown[:5])} "
                          f"are not among the model's classes ({', '.join(names)}). Evaluate "
                          "on data labelled with the model's classes.")
    paths = _resolve(path, [file for file, _ in sets.values()], base)
    labels = tuple(tuple(names.index(n) for n in labels) for _, labels in sets.values())
    return Listing(tuple(paths), labels, tuple(names), multilabel=True)


def _resolve(path: Path, files: list[str], base: Path) -> list[str]:
    """The listed files' paths (relative ones from ``base``); all must exist."""
    paths = [str(Path(file) if os.path.isabs(file) else base / file) for file in files]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        where = "the CSV's folder" if base == path.parent else str(base)
        raise CnnkitError(f"{path} lists a file that does not exist: {missing[0]}{more}. Paths "
                          f"in the CSV are relative to {where}.")
    return paths


def _cut(text: str, limit: int = 120) -> str:
    """A value quoted in a message, cut short: a CSV field can be megabytes long."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# Decoded in this order when the file has no byte-order mark: UTF-8 rejects almost any
# text in another encoding, so a file that decodes as UTF-8 is UTF-8.
FALLBACK = ("utf-8", "cp1252")
ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16",
                  "cp1252": "Windows-1252"}
SAVE_AS = "Save it as 'CSV UTF-8 (comma delimited)' (Excel) or UTF-8 text."


def encodings(path: Path) -> tuple[str, ...]:
    """The encodings to try for ``path``, from its byte-order mark if it has one."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return ("utf-8-sig",)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return ("utf-16",)
    return FALLBACK


def read_rows(path: Path) -> tuple[list[tuple[int, list[str]]], str]:
    """Every row of ``path`` with the line it starts on, and the encoding it was read in."""
    for encoding in encodings(path):
        try:
            return list(_rows(path, encoding)), encoding
        except UnicodeDecodeError:
            continue
    line, sample = _first_bad_line(path)
    raise CnnkitError(f"{path}:{line}: is not text in UTF-8, UTF-16 or Windows-1252 (bytes "
                      f"{sample!r}); it may not be a CSV file at all. {SAVE_AS}")


def _rows(path: Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    with open(path, newline="", encoding=encoding) as fh:
        reader = csv.reader(fh)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "field limit" in str(exc):
                    raise CnnkitError(
                        f"{path}:{start}: a field longer than {csv.field_size_limit():,} "
                        "characters, which no 'path,label' row holds: is this the CSV of "
                        "image paths? (An unclosed quote also runs a field on to the end.)"
                    ) from None
                raise CnnkitError(f"{path}:{start}: cannot be read as CSV ({exc}).") from None
            if any("\x00" in cell for cell in row):
                raise CnnkitError(f"{path}:{start}: holds NUL bytes, which text never does: "
                                  "it is a binary file, or UTF-16 without a byte-order mark. "
                                  f"{SAVE_AS}")
            yield start, row


def _first_bad_line(path: Path) -> tuple[int, bytes]:
    """The first line that is not UTF-8, and a few bytes from where it goes wrong."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, line[max(exc.start - 8, 0):exc.start + 8]
    return 1, b""


def check_classes(listing: Listing, where: str) -> None:
    """A classifier needs at least two classes, each with at least one image (a
    multi-label one at least one label: each is a yes/no question)."""
    if listing.multilabel:
        return  # read_csv refuses a multi-label CSV that names no label
    if len(listing.classes) < 2:
        only = listing.classes[0] if listing.classes else "none"
        raise CnnkitError(f"{where} has only one class ({only}): a classifier needs at least "
                          "two classes, one sub-folder (or CSV label) each.")
