"""Messages for people: info on stdout, warnings on stderr, one line each.

In a distributed run only rank 0 prints info, warnings and progress (:func:`set_rank`);
every rank prints its errors, naming itself, so a failure on any process is seen.
"""

from __future__ import annotations

import math
import os
import reprlib
import sys

from rich.console import Console

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)
_quiet = False
_rank = 0
RANK_ERRORS_ENV = "CNNKIT_RANK_ERRORS"  # folder for the errors of ranks other than 0


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def set_rank(rank: int) -> None:
    """This process's rank in a distributed run: all but rank 0 stay silent but for errors."""
    global _rank
    _rank = rank


def silent() -> bool:
    """Whether info lines and progress bars are hidden (--quiet, or not rank 0)."""
    return _quiet or _rank != 0


def console() -> Console:
    return _out


def err_console() -> Console:
    """stderr: warnings and progress bars that must not mix with data on stdout."""
    return _err


def quoted(name: object) -> str:
    """A file name as a message shows it: as is when plain, else quoted with its escapes
    (a newline or a byte that is not UTF-8 must not break or garble the line)."""
    text = str(name)
    if text.isprintable() and _encodes(text):
        return text
    return repr(text)


def cut(text: str, limit: int = 80) -> str:
    """``text`` as a message quotes a value a user sent: at most ``limit`` characters, the
    rest counted (a hostile value must not flood the message or the terminal)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 3, 60, 60, 40
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 6
    return short


_SHORT = _short_repr()


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` as a message quotes it: nested and long parts elided, at most about
    ``limit`` characters, and never the whole of a huge value (a YAML alias bomb's list of
    lists would take minutes and gigabytes to write out)."""
    return cut(_SHORT.repr(value), limit)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def info(message: str) -> None:
    if not silent():
        _out.print(message, markup=False)


def warn(message: str) -> None:
    if _rank != 0:
        return
    _err.print(f"warning: {message}", markup=False, style="yellow")


def error(message: str) -> None:
    folder = os.environ.get(RANK_ERRORS_ENV)
    if folder:  # under `cnnkit train --devices`: every rank leaves its error for the
        # launcher, which shows another rank's only when rank 0 did not say the same
        with open(os.path.join(folder, f"rank{_rank}.txt"), "w", encoding="utf-8") as fh:
            fh.write(message)
        if _rank:
            return
    who = f"(process {_rank}) " if _rank else ""
    _err.print(f"error: {who}{message}", markup=False, style="bold red")
    sys.stderr.flush()


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 epoch``, ``3 epochs``; ``many``: the plural where it is not ``word`` + s
    (``plural(2, "class", "classes")``)."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {many or word + 's'}"


def percent(p: float) -> str:
    """A probability as a percentage cut (not rounded) to 0.1%: 0.89996 reads 89.9%, so a
    class answered 'unknown' below --threshold 0.9 never shows 90.0%; every command and
    picture shows one probability the same way."""
    return f"{math.floor(round(p * 1000, 6)) / 10:.1f}%"
