"""A studio project: a folder with one sub-folder per class, edited safely.

Everything the page asks to change happens here, inside the project folder and nowhere
else: names are checked (:mod:`.names`) and looked up among the folder's own entries
before a path is made; nothing is written through a symbolic link; a new image is
decoded in full (the decoder's limits hold) and lands under a fresh name, never over a
file; a deleted class or image is moved to ``.cnnkit/trash/`` and can be put back. One
lock per project serialises the changes of every tab, and the studio holds the folder's
lock (``.cnnkit/studio.lock``) so a second studio on the same folder stops with one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.artifacts.runlock import RunLock
from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import (
    CorruptImageError,
    ImageTooLargeError,
    UnsupportedFormatError,
    is_image_file,
    open_image,
)
from cnnkit.data.folders import split_dirs
from cnnkit.data.scan import is_hidden, scan_images, sub_folders
from cnnkit.studio.names import class_name, file_stem

STATE = ".cnnkit"  # the studio's own folder in a project: runs, jobs, trash, its lock
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # what an upload may be
SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif",
          "TIFF": ".tif"}
MAX_IMAGE_BYTES = 25 * 2**20
_ENTRY = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$")


class NotFound(CnnkitError):
    """A class, image or trash entry the request names is not in the project."""


class Conflict(CnnkitError):
    """The change clashes with what is there (a name taken, a class not empty)."""


class BadImage(CnnkitError):
    """An upload that is not an image the decoder accepts (``status``: the HTTP answer)."""

    def __init__(self, message: str, status: int = 415) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ClassInfo:
    name: str
    images: int


@dataclass(frozen=True)
class ImageInfo:
    name: str  # relative to its class folder, with '/' between parts
    bytes: int
    modified: float


class Project:
    """A project folder, opened (and made when missing) by :meth:`open`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()
        self._held: RunLock | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> Project:
        folder = Path(path).expanduser()
        if folder.exists() and not folder.is_dir():
            raise CnnkitError(f"{folder} is a file; pass a folder for the project (one "
                              "sub-folder per class), or a new name to start one.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unwritable(folder, exc) from None
        root = folder.resolve()
        if split_dirs(root):
            raise CnnkitError(f"{root} is split into train/val/test folders; the studio edits "
                              "a folder with one sub-folder per class. Open one of its "
                              "splits' parent-less copy, or start a new project.")
        project = cls(root)
        state = project.state
        if state.is_symlink() or (state.exists() and not state.is_dir()):
            raise CnnkitError(f"{state} is not a folder the studio made (a link or a file); "
                              "move it away, then start the studio again.")
        try:  # runs, jobs, uploads and the lock are all written here: find out now
            state.mkdir(exist_ok=True)
            probe = state / f".write-{uuid.uuid4().hex}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise _unwritable(root, exc) from None
        return project

    # -- the folder and its lock ------------------------------------------------------

    @property
    def state(self) -> Path:
        return self.root / STATE

    @property
    def runs_dir(self) -> Path:
        return self.state / "runs"

    @property
    def jobs_dir(self) -> Path:
        return self.state / "jobs"

    @property
    def trash_dir(self) -> Path:
        return self.state / "trash"

    def hold(self) -> None:
        """Take the project's lock for as long as this process runs the studio."""
        self._held = RunLock.acquire(self.state, "studio.lock", what=f"The project {self.root}")

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None

    # -- reading ----------------------------------------------------------------------

    def classes(self) -> list[ClassInfo]:
        dirs, _ = sub_folders(self.root)
        return [ClassInfo(d.name, len(scan_images(d, top=self.root).files)) for d in dirs]

    def images(self, name: str) -> list[ImageInfo]:
        folder = self._class_dir(name)
        out = []
        for path in scan_images(folder, top=self.root).files:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                out.append(ImageInfo(Path(path).relative_to(folder).as_posix(), st.st_size,
                                     st.st_mtime))
        return out

    def image_path(self, name: str, image: str) -> Path:
        """The file of ``image`` in class ``name``, checked to be an image inside the
        class folder (a link out of the project is not followed)."""
        folder = self._class_dir(name)
        parts = image.split("/") if isinstance(image, str) else []
        if not parts or any(p in ("", ".", "..") or "\\" in p or "\0" in p or is_hidden(p)
                            for p in parts):
            raise NotFound(f"No image {log.cut(repr(image))} in class {name!r}.")
        path = folder.joinpath(*parts)
        real = os.path.realpath(path)
        if not real.startswith(os.path.realpath(folder) + os.sep) or \
                not os.path.isfile(real) or not is_image_file(path.name):
            raise NotFound(f"No image {log.cut(repr(image))} in class {name!r}.")
        return path

    def fingerprint(self) -> str:
        """Changes whenever a class or an image is added, removed, renamed or edited."""
        digest = hashlib.sha1()
        for info in self.classes():
            digest.update(info.name.encode() + b"\0")
            for image in self.images(info.name):
                digest.update(f"{image.name}\0{image.bytes}\0{image.modified}\0".encode())
        return digest.hexdigest()

    def relative(self, path: str | os.PathLike) -> tuple[str, str] | None:
        """``(class, image)`` for a file inside the project, else None."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(self.root)
        except ValueError:
            return None
        parts = rel.parts
        if len(parts) < 2 or parts[0] == STATE:
            return None
        return parts[0], "/".join(parts[1:])

    # -- classes ----------------------------------------------------------------------

    def add_class(self, name: object) -> str:
        name = class_name(name)
        with self._lock:
            self._free(name)
            (self.root / name).mkdir()
        return name

    def rename_class(self, old: str, new: object) -> str:
        new = class_name(new)
        with self._lock:
            folder = self._class_dir(old, write=True)
            if new == old:
                return new
            self._free(new, besides=old)
            os.rename(folder, self.root / new)
        return new

    def delete_class(self, name: str) -> str:
        """Move the class folder, with its images, to the trash; returns the entry."""
        with self._lock:
            folder = self._class_dir(name, write=True)
            return self._to_trash(folder, {"what": "class", "class": name})

    def _free(self, name: str, besides: str | None = None) -> None:
        """Fail when ``name`` is taken: by a class (also in another case, which would be
        the same folder on macOS and Windows) or by any other entry of the folder."""
        for entry in os.listdir(self.root):
            if entry == besides:
                continue
            if entry == name or entry.casefold() == name.casefold():
                what = "a class" if (self.root / entry).is_dir() else "a file"
                raise Conflict(f"The project already has {what} named {entry!r}; choose "
                               "another name.")

    def _class_dir(self, name: object, write: bool = False) -> Path:
        """The folder of class ``name``: an entry of the project with that exact name."""
        if not isinstance(name, str) or not name or is_hidden(name) or "/" in name:
            raise NotFound(f"No class {log.cut(repr(name))} in {self.root}.")
        dirs, _ = sub_folders(self.root)
        folder = next((d for d in dirs if d.name == name), None)
        if folder is None:
            raise NotFound(f"No class {log.cut(repr(name))} in {self.root}; it may have been "
                           "renamed or deleted in another tab: reload the page.")
        if write and folder.is_symlink():
            raise Conflict(f"Class {name!r} is a link to another folder; the studio does not "
                           "write through links. Edit it where it lives.")
        return folder

    # -- images -----------------------------------------------------------------------

    def add_image(self, name: str, data: bytes, filename: object = None) -> str:
        """Store an uploaded image in class ``name`` under a fresh name (its suffix says
        its real format); returns that name."""
        fmt = check_image(data, filename)
        stem, suffix = file_stem(filename), SUFFIX[fmt]
        with self._lock:
            folder = self._class_dir(name, write=True)
            return _write_new(folder, stem, suffix, data)

    def delete_image(self, name: str, image: str) -> str:
        with self._lock:
            self._class_dir(name, write=True)
            path = self.image_path(name, image)
            return self._to_trash(path, {"what": "image", "class": name, "image": image})

    def move_image(self, name: str, image: str, to: str) -> str:
        """Relabel: move ``image`` from class ``name`` to class ``to`` (renamed if a file
        of its name is there already); returns its name in ``to``."""
        with self._lock:
            self._class_dir(name, write=True)
            source = self.image_path(name, image)
            target = self._class_dir(to, write=True)
            if target == self._class_dir(name):
                return image  # already there: nothing to move, nothing renamed
            stem, suffix = os.path.splitext(source.name)
            for k in range(1000):
                new = f"{stem}-{k}{suffix}" if k else f"{stem}{suffix}"
                try:
                    os.link(source, target / new, follow_symlinks=False)
                except FileExistsError:
                    continue
                os.unlink(source)
                return new
        raise Conflict(f"Class {to!r} holds too many files named like {source.name!r}.")

    # -- the trash --------------------------------------------------------------------

    def _to_trash(self, path: Path, what: dict[str, Any]) -> str:
        entry_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        entry = self.trash_dir / entry_id
        entry.mkdir(parents=True)
        os.rename(path, entry / "item")
        write_json(entry / "manifest.json", {**what, "name": path.name, "time": time.time()})
        return entry_id

    def undo(self, entry_id: str) -> dict[str, Any]:
        """Put a trashed class or image back where it was."""
        if not isinstance(entry_id, str) or not _ENTRY.match(entry_id):
            raise NotFound(f"No deletion {log.cut(repr(entry_id))} to undo.")
        entry = self.trash_dir / entry_id
        import json

        try:
            what = json.loads((entry / "manifest.json").read_text())
        except (OSError, ValueError):
            raise NotFound(f"No deletion {entry_id!r} to undo (already undone?).") from None
        with self._lock:
            if what.get("what") == "class":
                name = class_name(what.get("class"))
                self._free(name)
                os.rename(entry / "item", self.root / name)
            else:
                name = class_name(what.get("class"))
                folder = self.root / name
                if not folder.is_dir():
                    self._free(name)
                    folder.mkdir()
                parts = str(what.get("image", "")).split("/")
                if any(p in ("", ".", "..") or is_hidden(p) for p in parts):
                    raise NotFound(f"Deletion {entry_id!r} is damaged; it cannot be undone.")
                target = folder.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    raise Conflict(f"{name}/{what['image']} exists again; nothing was undone.")
                os.rename(entry / "item", target)
            shutil.rmtree(entry)
        return what


def _unwritable(folder: Path, exc: OSError) -> CnnkitError:
    return CnnkitError(f"The project folder {folder} cannot be written ({exc.strerror or exc}): "
                       "the studio keeps the images, runs and jobs in it. Choose a folder "
                       "you can write to, or copy this one somewhere writable.")


def check_image(data: bytes, filename: object = None) -> str:
    """Decode ``data`` in full as the decoder reads training images (its size limits
    hold); returns its format. A refusal is :class:`BadImage` naming the file."""
    shown = log.cut(str(filename) if isinstance(filename, str) and filename else "the upload",
                    60)
    if len(data) > MAX_IMAGE_BYTES:
        raise BadImage(f"{shown} is {len(data) / 2**20:.1f} MiB; images are at most "
                       f"{MAX_IMAGE_BYTES // 2**20} MiB here. Send a smaller one.", 413)
    if not data:
        raise BadImage(f"{shown} is empty.", 400)
    try:
        img = open_image(data, formats=FORMATS)
        from PIL import Image

        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as head:
            fmt = head.format or ""
        img.close()
    except UnsupportedFormatError:
        raise BadImage(f"{shown} is not an image in a format training reads "
                       f"({', '.join(FORMATS)}).") from None
    except ImageTooLargeError as exc:
        raise BadImage(str(exc).replace("<bytes>", shown, 1), 413) from None
    except CorruptImageError as exc:
        raise BadImage(str(exc).replace("<bytes>", shown, 1) + "; the file may be truncated "
                       "or damaged.", 400) from None
    if fmt not in SUFFIX:
        raise BadImage(f"{shown} is a {fmt or 'an unknown'} image; training reads "
                       f"{', '.join(FORMATS)}.")
    return fmt


def _write_new(folder: Path, stem: str, suffix: str, data: bytes) -> str:
    """Write ``data`` to a new file ``stem[-k]suffix`` in ``folder``, whole or not at all:
    to a hidden temporary file first, then linked to a name no file has (never over one)."""
    tmp = folder / f".upload-{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        for k in range(10_000):
            name = f"{stem}-{k}{suffix}" if k else f"{stem}{suffix}"
            try:
                os.link(tmp, folder / name, follow_symlinks=False)
            except FileExistsError:
                continue
            return name
        raise Conflict(f"{folder.name} holds too many files named like {stem}{suffix}.")
    finally:
        tmp.unlink(missing_ok=True)
