"""Atomic file writes: a crash leaves either the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; files are for sharing
        os.replace(tmp_path, target)
        _fsync_folder(target.parent)  # the rename itself is on disk before the next write
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # a write(): name the file
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        raise
    except Exception as exc:
        # A writer that wraps I/O errors in its own type (safetensors: "... (os error 28)")
        # is raised as the OSError it is, so a full disk reads as one everywhere.
        code = _os_error_code(exc)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(target)) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a system that cannot open folders (Windows): the rename is what it is
    try:
        with contextlib.suppress(OSError):  # some file systems refuse it on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


def _os_error_code(exc: Exception) -> int | None:
    match = re.search(r"os error (\d+)", str(exc))
    return int(match.group(1)) if match else None


def remove_stale(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` leaves when its process is
    killed mid-write (``.<name>.<random>.tmp``); returns what was removed.

    Only for a folder no other process is writing (a run folder under its lock).
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
