"""Walking a folder for image files, safely: the one directory scan that the data
sources, the decode cache's callers and ``cnnkit check`` share, and the listing of a
class-per-folder (or pre-split) tree made with it, in one visit.

Real folders hold symlinks that loop (``circle/self -> .``), point nowhere or point
outside the tree, and names that are not valid UTF-8 (archives made on Windows). Each
directory is followed once, by its device and inode, so a loop cannot multiply a class;
every file that cannot be used is skipped with the reason, never with a traceback.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import is_image_file

IGNORED_NAMES = {"__MACOSX", "__pycache__", "Thumbs.db", "desktop.ini"}
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test"}
FORMATS = "JPEG, PNG, BMP, WebP, GIF or TIFF"


def is_hidden(name: str) -> bool:
    """Dot-files, macOS resource forks and notebook checkpoints are never data."""
    return name.startswith(".") or name in IGNORED_NAMES


def is_utf8(name: str) -> bool:
    """Whether a name read from the disk is valid UTF-8 (not surrogate-escaped bytes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Scan:
    """What a walk found: image files, in a stable order, and what it left out, and why."""

    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    loops: list[str] = field(default_factory=list)  # directory links already visited
    outside: list[str] = field(default_factory=list)  # links that lead out of the root

    def add(self, other: Scan) -> None:
        self.files += other.files
        self.skipped += other.skipped
        self.loops += other.loops
        self.outside += other.outside

    def warn(self) -> None:
        """One warning per file or link left out, naming it."""
        for path in self.loops:
            log.warn(f"{log.quoted(path)} leads to a folder that is already read (a symlink "
                     "loop, a second link to it, or another class folder); its images are "
                     "read once")
        for path, reason in self.skipped:
            log.warn(f"skipped {log.quoted(path)}: {reason}")


def scan_images(root: str | os.PathLike, seen: set[tuple[int, int]] | None = None, *,
                top: str | os.PathLike | None = None, elsewhere: tuple[str, ...] = ()) -> Scan:
    """Image files under ``root`` (recursively, to any depth), each directory read once.

    ``seen``: (device, inode) of directories already read, shared by the scans of one
    data set so that a link from one class folder into another is not read twice.
    ``top``: the data set's root (``root`` itself by default): a link is "outside" only
    when it leads out of it. ``elsewhere``: the real paths of the other class folders; a
    folder link into one of them is not followed, so its images are read once, under
    their own class, whichever class folder is read first.
    """
    result = Scan()
    tree = _Tree(os.path.realpath(top if top is not None else root), elsewhere)
    seen = set() if seen is None else seen
    try:
        st = os.stat(root)
    except OSError as exc:
        result.skipped.append((str(root), _reason(exc)))
        return result
    if (st.st_dev, st.st_ino) in seen:
        result.loops.append(str(root))
        return result
    seen.add((st.st_dev, st.st_ino))
    # A stack, not recursion: a tree thousands of folders deep is still read whole. Sub
    # folders are pushed in reverse, so they are read in the same order as a recursion.
    stack = [str(root)]
    while stack:
        stack += reversed(_read_folder(stack.pop(), tree, seen, result))
    return result


@dataclass(frozen=True)
class _Tree:
    top: str  # the data set's root, as a real path
    elsewhere: tuple[str, ...]  # the other class folders, as real paths


def _read_folder(folder: str, tree: _Tree, seen: set[tuple[int, int]],
                 result: Scan) -> list[str]:
    """Add the images of one folder to ``result``; returns its sub-folders to read."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        result.skipped.append((folder, f"cannot list the folder ({_reason(exc)})"))
        return []
    subdirs = []
    for entry in entries:
        if is_hidden(entry.name):
            continue
        path = entry.path
        if not is_utf8(entry.name):
            if entry.is_dir() or is_image_file(entry.name):
                result.skipped.append((path, "its name is not valid UTF-8; rename it"))
            continue
        link = entry.is_symlink()
        try:
            st = os.stat(path)  # follows links
        except OSError as exc:
            if link or is_image_file(entry.name):
                result.skipped.append((path, _reason(exc)))
            continue
        real = os.path.realpath(path) if link else ""
        if link and not _under(real, tree.top):
            result.outside.append(path)
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen or (link and any(_under(real, d) for d in tree.elsewhere)):
                result.loops.append(path)  # read once: already, or under its own class
                continue
            seen.add(key)
            subdirs.append(path)
        elif stat.S_ISREG(st.st_mode) and is_image_file(entry.name):
            result.files.append(path)
    return subdirs


def _under(real: str, top: str) -> bool:
    """Whether the real path ``real`` is ``top`` or inside it."""
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink that loops"
    if exc.errno == errno.ENOENT:
        return "a symlink that points nowhere (its target is gone)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def sub_folders(root: Path) -> tuple[list[Path], Scan]:
    """Visible sub-folders of ``root`` (links followed), by name; unusable ones reported."""
    result = Scan()
    dirs = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if is_hidden(entry.name):
            continue
        if not entry.is_dir():
            if entry.is_symlink() and not os.path.exists(entry.path):
                result.skipped.append((entry.path, _reason(_stat_error(entry.path))))
            continue
        if not is_utf8(entry.name):
            result.skipped.append((entry.path, "its name is not valid UTF-8; rename it"))
            continue
        dirs.append(Path(entry.path))
    return dirs, result


def _stat_error(path: str) -> OSError:
    try:
        os.stat(path)
    except OSError as exc:
        return exc
    return OSError(errno.ENOENT, "not found")


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
