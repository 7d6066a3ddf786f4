"""Finding labelled images on disk: class-per-folder trees, pre-split trees and CSVs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.data.csvfile import read_rows
from cnnkit.data.decode import IMAGE_SUFFIXES, is_image_file
from cnnkit.data.labelsets import MULTILABEL_HEADERS, lists_several, parse_labels
from cnnkit.data.scan import IGNORED_NAMES, Scan, is_hidden, scan_images, sub_folders

__all__ = ["IGNORED_NAMES", "Listing", "check_classes", "class_dirs", "is_hidden",
           "list_class_folders", "read_csv", "safe_name", "split_dirs"]
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test"}
FORMATS = "JPEG, PNG, BMP, WebP, GIF or TIFF"
_TOLD: set[str] = set()  # CSV files already said to be read as Windows-1252


@dataclass(frozen=True)
class Listing:
    """Image files with class indices (multi-label: a tuple of indices per file, maybe
    empty); ``classes`` are names in index order."""

    paths: tuple[str, ...]
    labels: tuple[int, ...] | tuple[tuple[int, ...], ...]
    classes: tuple[str, ...]
    multilabel: bool = False


def safe_name(cls: str) -> str:
    """A class name as a folder name ('T-shirt/top' -> 'T-shirt_top')."""
    return re.sub(r"[\\/:*?\"<>|]+", "_", cls).strip() or "_"


def _image_files(folder: Path, seen: set[tuple[int, int]] | None = None,
                 report: Scan | None = None, top: Path | None = None,
                 elsewhere: tuple[str, ...] = ()) -> list[str]:
    found = scan_images(folder, seen, top=top, elsewhere=elsewhere)
    _tell(found, report)
    return found.files


def _tell(found: Scan, report: Scan | None) -> None:
    """Warn now, or add to ``report`` (for ``cnnkit check``, which lists them itself)."""
    if report is None:
        found.warn()
    else:
        report.add(found)


def class_dirs(root: Path, report: Scan | None = None) -> list[Path]:
    """Visible sub-folders by name; a link that points nowhere or a name that is not
    UTF-8 is left out with a warning."""
    dirs, left_out = sub_folders(root)
    _tell(left_out, report)
    return dirs


def _class_dirs_once(root: Path, report: Scan | None
                     ) -> tuple[list[Path], set[tuple[int, int]]]:
    """Class folders, leaving out any that is the root itself or another class folder
    again (a link such as ``loop -> .``), which would copy images under a second label."""
    st = os.stat(root)
    seen = {(st.st_dev, st.st_ino)}
    kept = []
    for d in class_dirs(root, report):
        st = os.stat(d)
        if (st.st_dev, st.st_ino) in seen:
            _tell(Scan(loops=[str(d)]), report)
            continue
        seen.add((st.st_dev, st.st_ino))
        kept.append(d)
    return kept, seen


def split_dirs(root: Path) -> dict[str, Path] | None:
    """``{"train": ..., "val": ..., "test": ...}`` if ``root`` is already split, else None."""
    subdirs, _ = sub_folders(root)
    names = {p.name.lower(): p for p in subdirs}
    if "train" not in names or not all(n in SPLIT_NAMES for n in names):
        return None
    return {SPLIT_NAMES[n]: p for n, p in names.items()}


def list_class_folders(root: Path, classes: tuple[str, ...] | None = None, *,
                       report: Scan | None = None, top: Path | None = None) -> Listing:
    """List a class-per-folder tree; with ``classes``, folders must be among them.

    Files and links left out are warned about, or added to ``report`` when given.
    ``top``: the whole data set's folder when ``root`` is one split of it (a link within
    ``top`` is not "outside").
    """
    if not root.is_dir():
        raise CnnkitError(f"Data folder not found: {root}. Pass a folder with one "
                          "sub-folder per class, a CSV file, or a built-in set name.")
    dirs, seen = _class_dirs_once(root, report)
    inside = os.path.realpath(top or root)
    away = [str(d) for d in dirs if d.is_symlink()
            and os.path.commonpath([os.path.realpath(d), inside]) != inside]
    if away:  # class folders that are links out of the data folder
        _tell(Scan(outside=away), report)
    if not dirs:
        loose = _image_files(root, None, report)
        hint = f" It holds {len(loose)} images but no class folders." if loose else ""
        raise CnnkitError(f"{root} has no class sub-folders.{hint} Put each class's images "
                          f"in a sub-folder named after the class ({root}/cat/1.jpg, "
                          f"{root}/dog/2.jpg, ...).")
    names = tuple(d.name for d in dirs)
    if classes is not None:
        # A class name that cannot be a folder name ('T-shirt/top') matches its safe form.
        safe = {safe_name(c): c for c in classes}
        names = tuple(n if n in classes else safe.get(n, n) for n in names)
        unknown = [d.name for d, n in zip(dirs, names) if n not in classes]
        if unknown:
            raise CnnkitError(f"{root} has class folder(s) {', '.join(unknown)} that the model "
                              f"does not know. Its classes: {', '.join(classes)}.")
    else:
        classes = names
    paths: list[str] = []
    labels: list[int] = []
    real = [os.path.realpath(d) for d in dirs]
    for i, (d, name) in enumerate(zip(dirs, names)):
        seen.discard(_inode(d))  # a class folder's own walk starts at it
        others = tuple(r for j, r in enumerate(real) if j != i and r != real[i])
        files = _image_files(d, seen, report, top or root, others)
        if not files:
            raise CnnkitError(f"Class folder {d} has no images ({FORMATS}). Add images to it "
                              "or remove the folder.")
        paths += files
        labels += [classes.index(name)] * len(files)
    return Listing(tuple(paths), tuple(labels), tuple(classes))


def _inode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def read_csv(path: Path, classes: tuple[str, ...] | None = None, *,
             base: Path | None = None) -> Listing:
    """Read ``path,label`` rows (a header row is optional); paths are relative to the CSV
    (or to ``base``). A multi-label CSV (:mod:`cnnkit.data.labelsets` says when a CSV is
    one and how its labels are written) gives a multi-label listing."""
    if not path.is_file():
        raise CnnkitError(f"CSV file not found: {path}.")
    header, rows = _csv_rows(path)
    multi = (header is not None and header[1].strip().lower() in MULTILABEL_HEADERS) or any(
        lists_several(label) for _, _, label, _ in rows)
    if multi:
        return _multilabel_listing(path, header, rows, classes, base or path.parent)
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
        raise CnnkitError(f"{path} lists no images. Each row should be 'path,label'.")
    names = classes if classes is not None else tuple(sorted({label for _, label in kept}))
    for _, label in kept:
        if label not in names:
            raise CnnkitError(f"{path}: label {_cut(repr(label))} is not one of the model's "
                              f"classes ({', '.join(names)}).")
    paths = _resolve(path, [file for file, _ in kept], base or path.parent)
    return Listing(tuple(paths), tuple(names.index(label) for _, label in kept), names)


def _csv_rows(path: Path) -> tuple[list[str] | None, list[tuple[int, str, str, int]]]:
    """The header row (if any) and each row as (line, path, label field, fields after
    the label that hold text)."""
    header: list[str] | None = None
    rows: list[tuple[int, str, str, int]] = []
    first = True
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
        file, label = row[0].strip(), row[1].strip()
        if first and not is_image_file(file):
            first = False
            header = row
            continue  # a header row, whatever its column names ('image_path,class')
        first = False
        if not is_image_file(file):
            raise CnnkitError(f"{path}:{lineno}: {_cut(repr(file))} is not an image file "
                              f"(expected one of {', '.join(IMAGE_SUFFIXES)}).")
        rows.append((lineno, file, label, sum(1 for c in row[2:] if c.strip())))
    return header, rows


def _multilabel_listing(path: Path, header: list[str] | None,
                        rows: list[tuple[int, str, str, int]],
                        classes: tuple[str, ...] | None, base: Path) -> Listing:
    """A multi-label CSV: each image with the union of the label sets of its rows."""
    sets: dict[str, tuple[str, dict[str, None]]] = {}  # normalised path -> (file, labels)
    for lineno, file, field, extra in rows:
        if extra and header is None:
            raise CnnkitError(f"{path}:{lineno}: more than two fields. A multi-label row "
                              "lists its labels in one field, separated by '|' or ';': "
                              f"'{file},cat|dog'.")
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


def check_classes(listing: Listing, where: str) -> None:
    """A classifier needs at least two classes, each with at least one image (a
    multi-label one at least one label: each is a yes/no question)."""
    if listing.multilabel:
        return  # read_csv refuses a multi-label CSV that names no label
    if len(listing.classes) < 2:
        only = listing.classes[0] if listing.classes else "none"
        raise CnnkitError(f"{where} has only one class ({only}): a classifier needs at least "
                          "two classes, one sub-folder (or CSV label) each.")
