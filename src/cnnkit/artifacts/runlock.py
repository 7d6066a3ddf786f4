"""An exclusive lock on a run folder, so that two processes never write one run.

``<run>/.lock`` holds the owner's process id and host; the lock itself is a kernel
``flock`` on that file, which the system releases when the owner dies, so a lock left by
a killed run is stale by construction and the next process simply takes it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from cnnkit.base.errors import CnnkitError

LOCK_NAME = ".lock"


class RunLock:
    """Held while a process trains or resumes a run; :meth:`release` (or the process's
    end) lets the next one in."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: str | os.PathLike, name: str = LOCK_NAME,
                what: str | None = None) -> RunLock:
        """Take the lock ``folder/name`` or raise CnnkitError naming the process that
        holds it; ``what``: the thing locked, as the message names it (the folder)."""
        path = Path(folder) / name
        for _ in range(10):  # retried only when the file was replaced under us
            fd = _open_lock_file(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _owner(fd)
                os.close(fd)
                raise CnnkitError(f"{what or Path(folder)} is in use by another cnnkit "
                                  f"process ({owner}); wait for it to finish or stop it, "
                                  "then run again.") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file as we opened it: take the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            return cls(path, fd)
        raise CnnkitError(f"Could not lock {Path(folder)}: its lock file keeps changing.")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still held, so no one locks a file about to vanish
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[RunLock]:
    lock = RunLock.acquire(folder)
    try:
        yield lock
    finally:
        lock.release()


def _open_lock_file(path: Path) -> int:
    """The lock file, opened without following a link: a ``.lock`` that is a symlink (a
    run folder handed over, or edited) must not let the lock write into another file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        fd = -1
    if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd >= 0:
            os.close(fd)
        raise CnnkitError(f"{path} is not cnnkit's lock file (it is a link, a folder or a "
                          "device); remove it, then run again.")
    return fd


def _owner(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        text = []
    if len(text) >= 2:
        return f"process {text[0]} on {text[1]}"
    return "a process that has not written its id yet"
