"""The one exception type for user mistakes.

Anything raised as :class:`CnnkitError` is the user's to fix (a missing path, a folder
that is not a run, a bad option); the CLI prints its message as one line and exits
non-zero. Every other exception is a bug in cnnkit and keeps its traceback.
"""

from __future__ import annotations


class CnnkitError(Exception):
    """A user mistake, with a message that says what was wrong and what to do."""

