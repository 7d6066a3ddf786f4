"""Reading a user's CSV file as people save them: UTF-8 with or without a byte-order
mark, UTF-16 with one (Excel's "Unicode text"), or Windows-1252 (Excel's plain "CSV" on
a Western Windows). Anything else, a binary file or a field no CSV of paths holds, is
one line naming the file and the line, never a UnicodeDecodeError or a ``_csv.Error``.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path

from cnnkit.base.errors import CnnkitError

# Decoded in this order when the file has no byte-order mark: UTF-8 rejects almost any
# text in another encoding, so a file that decodes as UTF-8 is UTF-8.
FALLBACK = ("utf-8", "cp1252")
ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16",
                  "cp1252": "Windows-1252"}
SAVE_AS = "Save it as 'CSV UTF-8 (comma delimited)' (Excel) or UTF-8 text."


def encodings(path: Path) -> tuple[str, ...]:
    """The encodings to try for ``path``, from its byte-order mark if it has one."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return ("utf-8-sig",)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return ("utf-16",)
    return FALLBACK


def read_rows(path: Path) -> tuple[list[tuple[int, list[str]]], str]:
    """Every row of ``path`` with the line it starts on, and the encoding it was read in."""
    for encoding in encodings(path):
        try:
            return list(_rows(path, encoding)), encoding
        except UnicodeDecodeError:
            continue
    line, sample = _first_bad_line(path)
    raise CnnkitError(f"{path}:{line}: is not text in UTF-8, UTF-16 or Windows-1252 (bytes "
                      f"{sample!r}); it may not be a CSV file at all. {SAVE_AS}")


def _rows(path: Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    with open(path, newline="", encoding=encoding) as fh:
        reader = csv.reader(fh)
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "field limit" in str(exc):
                    raise CnnkitError(
                        f"{path}:{start}: a field longer than {csv.field_size_limit():,} "
                        "characters, which no 'path,label' row holds: is this the CSV of "
                        "image paths? (An unclosed quote also runs a field on to the end.)"
                    ) from None
                raise CnnkitError(f"{path}:{start}: cannot be read as CSV ({exc}).") from None
            if any("\x00" in cell for cell in row):
                raise CnnkitError(f"{path}:{start}: holds NUL bytes, which text never does: "
                                  "it is a binary file, or UTF-16 without a byte-order mark. "
                                  f"{SAVE_AS}")
            yield start, row


def _first_bad_line(path: Path) -> tuple[int, bytes]:
    """The first line that is not UTF-8, and a few bytes from where it goes wrong."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, line[max(exc.start - 8, 0):exc.start + 8]
    return 1, b""
