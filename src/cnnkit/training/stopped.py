"""What to tell a user whose run stopped (Ctrl-C, SIGTERM, a full disk, a lost process):
advice that matches what is on disk, read from the checkpoint itself rather than assumed.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.training.checkpoint import saved_epochs

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def what_to_do(run: RunDir, resume_command: str | None = None) -> str:
    """'epoch N ... is saved; continue with ...' when the checkpoint holds a finished
    epoch, else that nothing can be resumed and the command is to be run again."""
    done = saved_epochs(run.checkpoint_path)
    if done:
        command = resume_command or f"cnnkit train --resume {run.root}"
        return f"epoch {done} (the last finished) is saved; continue with: {command}"
    return ("no epoch had finished, so nothing is saved to resume; run the same command "
            f"again ({run.root} can be deleted)")


def disk_full(exc: OSError, run: RunDir | None, *, trained: bool = False) -> CnnkitError:
    """The one line for a full disk: which file, and what is saved (from the checkpoint)."""
    what = f" while writing {log.quoted(exc.filename)}" if exc.filename else ""
    head = f"the disk is full{what} ({exc.strerror}); free some space"
    if run is None:
        return CnnkitError(f"{head} and run the same command again (training had not "
                           "started).")
    if trained:
        return CnnkitError(f"{head}; training finished and its model is saved "
                           f"({run.model_path}): write the test metrics and report with: "
                           f"cnnkit report {run.root}")
    return CnnkitError(f"{head}; {what_to_do(run)}")


@contextlib.contextmanager
def on_full_disk(run: RunDir | None, *, trained: bool = False) -> Iterator[None]:
    """Turn a full disk inside the block into :func:`disk_full`'s one line."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise disk_full(exc, run, trained=trained) from None
