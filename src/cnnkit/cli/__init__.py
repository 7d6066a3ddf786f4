"""The ``cnnkit`` command: a thin layer over the Python API.

User mistakes (:class:`CnnkitError`) and usage errors (a missing argument, an unknown
option) print one line and exit 2; nothing here holds logic that the API lacks.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import typer

from cnnkit.base.errors import CnnkitError
from cnnkit.cli.app import app

__all__ = ["app", "main"]


def _register() -> None:
    # Each module adds its commands to ``app`` (cnnkit.cli.app, which imports none of them).
    from cnnkit.cli import (  # noqa: F401
        check_cmd,
        data_cmds,
        demo_cmd,
        export_cmds,
        inspect_cmds,
        lrfind_cmd,
        model_cmds,
        runs_cmds,
        serve_cmd,
        studio_cmd,
        suggest_cmd,
        train_cmds,
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``docker stop``, ``kill``): a run stops as on Ctrl-C."""


def sigterm_handler(received: list[int]) -> Callable[[int, object], None]:
    """SIGTERM raises :class:`Terminated` in this process (noted in ``received``). A
    process forked from it (a library's worker pool: cleanlab's, under check --labels)
    inherits the handler; there SIGTERM is how the pool ends its workers, so it ends the
    worker as it would have, quietly, instead of a 'Process ForkPoolWorker' traceback."""
    pid = os.getpid()

    def on_sigterm(signum: int, frame: object) -> None:
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.append(signum)
        raise Terminated

    return on_sigterm


def main(argv: list[str] | None = None) -> int:
    """Run the command line. SIGTERM stops a run as Ctrl-C does (the last finished epoch
    kept, the resume command said) and exits 143, as a process stopped by SIGTERM does."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, sigterm_handler(received))
    try:
        code = _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 128 + signal.SIGTERM if received else code


def _main(argv: list[str] | None) -> int:
    from cnnkit.base import log

    _register()
    try:
        # obj: the arguments as given, for `train --devices N` to start them in N processes
        from cnnkit.cli.ray_cmds import bare_flag

        args = bare_flag(list(sys.argv[1:] if argv is None else argv))
        result = app(args=args, prog_name="cnnkit", standalone_mode=False, obj={"argv": args})
        return result if isinstance(result, int) else 0
    except typer.exceptions.TyperException as exc:  # click's usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())  # `cnnkit`, `cnnkit data`: the help, not an error
            return 0
        where = ctx.command_path if ctx is not None else "cnnkit"
        message = " ".join(exc.format_message().split())  # one line
        stop = "" if message.endswith((".", "!", "?", ")")) else "."
        log.error(f"{where}: {message}{stop} Run '{where} --help' for the options.")
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:  # click's form of Ctrl-C
        log.error("interrupted")
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except CnnkitError as exc:
        log.error(str(exc))
        return 2
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        log.error(_path_clash(exc))
        return 2
    except PermissionError as exc:
        log.error(f"permission denied: {_target(str(exc.filename)) if exc.filename else exc}. "
                  "Choose a folder you can write "
                  "to (e.g. --out).")
        return 2
    except FileNotFoundError as exc:  # an output path in a folder that is not there
        log.error(_not_found(exc))
        return 2
    except OSError as exc:
        if exc.errno == errno.EROFS:
            log.error(f"{log.quoted(str(exc.filename or '?'))} is on a read-only file system; "
                      "choose a folder you can write to.")
            return 2
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            what = f" while writing {log.quoted(exc.filename)}" if exc.filename else ""
            log.error(f"the disk is full{what} ({exc.strerror}); free some space and run "
                      "again (finished epochs are kept; a run continues with "
                      "cnnkit train --resume RUN).")
            return 2
        raise
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def _not_found(exc: FileNotFoundError) -> str:
    """One line for a file or folder that is not there: most often the folder of a file
    to be written."""

    from cnnkit.base import log

    path = _target(str(exc.filename or "."))
    if not path.parent.is_dir():
        return (f"{log.quoted(str(path))}: its folder {log.quoted(str(path.parent))} does "
                "not exist; create it first, or choose another path.")
    return (f"{log.quoted(str(path))}: {exc.strerror or 'not found'}; choose a file in a "
            "folder you can write to.")


def _target(name: str) -> Path:
    """The file a write was for: an atomic write's temporary file (``.NAME.XXXX.tmp``
    beside it) names its target."""
    path = Path(name)
    found = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", path.name)
    return path.with_name(found.group(1)) if found else path


def _path_clash(exc: OSError) -> str:
    """One line for a file where a folder must be, or a folder where a file must be."""

    from cnnkit.base import log

    if isinstance(exc, IsADirectoryError):
        target = exc.filename2 or exc.filename
        return (f"{log.quoted(str(target))} is a folder, where a file is to be written; pass "
                "a file name (inside it, or elsewhere).")
    path = Path(str(exc.filename2 or exc.filename or "."))
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
    into = f" (to write {log.quoted(str(path))})" if blocker != path else ""
    return (f"{log.quoted(str(blocker))} is a file, where a folder is needed{into}; choose "
            "another output path, or move the file.")


if __name__ == "__main__":
    sys.exit(main())
