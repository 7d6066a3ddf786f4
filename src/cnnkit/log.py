"""Messages for people: info on stdout, warnings on stderr, one line each."""

from __future__ import annotations

import sys

from rich.console import Console

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def console() -> Console:
    return _out


def info(message: str) -> None:
    if not _quiet:
        _out.print(message, markup=False)


def warn(message: str) -> None:
    _err.print(f"warning: {message}", markup=False, style="yellow")


def error(message: str) -> None:
    _err.print(f"error: {message}", markup=False, style="bold red")
    sys.stderr.flush()
