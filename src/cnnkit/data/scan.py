"""Walking a folder for image files, safely: the one directory scan that folders, the
decode cache's callers and ``cnnkit check`` share.

Real folders hold symlinks that loop (``circle/self -> .``), point nowhere or point
outside the tree, and names that are not valid UTF-8 (archives made on Windows). Each
directory is followed once, by its device and inode, so a loop cannot multiply a class;
every file that cannot be used is skipped with the reason, never with a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cnnkit.base import log
from cnnkit.data.decode import is_image_file

IGNORED_NAMES = {"__MACOSX", "__pycache__", "Thumbs.db", "desktop.ini"}


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
