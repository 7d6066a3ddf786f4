"""Names that come from the page: class names and image file names, checked before any
path is made from them. A name is one plain folder or file name inside the project: no
separators, no ``..``, nothing hidden, no control, format or look-alike characters that
would make it another path on some system, or fool a person reading it."""

from __future__ import annotations

import re
import unicodedata

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError

MAX_CLASS_CHARS = 64
MAX_FILE_CHARS = 100
# Separators and the characters Windows refuses in file names: a project must stay a
# project when it is zipped and unpacked elsewhere.
FORBIDDEN = frozenset('/\\:*?"<>|')
# Folder names that make a project look split into train/val/test (cnnkit.data.folders).
SPLIT_NAMES = frozenset({"train", "val", "valid", "validation", "test"})
WINDOWS_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                              *(f"lpt{i}" for i in range(1, 10))})
_FILE_KEEP = re.compile(r"[^\w.-]+")


def _odd(ch: str) -> bool:
    """Control, format (bidirectional overrides, zero-width joiners), surrogate,
    private-use, unassigned, and every separator but the plain space."""
    category = unicodedata.category(ch)
    return (category[0] == "C") or (category[0] == "Z" and ch != " ")


def class_name(text: object) -> str:
    """``text`` as a class (folder) name, or CnnkitError saying what to change."""
    if not isinstance(text, str):
        raise CnnkitError(f"A class name must be text. Received: {log.shown(text)}")
    name = unicodedata.normalize("NFC", text).strip()
    shown = log.cut(repr(text), 80)
    if not name:
        raise CnnkitError("A class needs a name: type one (letters, digits, spaces, - or _).")
    if len(name) > MAX_CLASS_CHARS:
        raise CnnkitError(f"Class names are at most {MAX_CLASS_CHARS} characters. Received "
                          f"{len(name)}: {shown}")
    bad = sorted({c for c in name if c in FORBIDDEN or _odd(c)})
    if bad:
        what = ", ".join(repr(c) if c in FORBIDDEN else f"U+{ord(c):04X}" for c in bad)
        raise CnnkitError(f"A class name cannot hold {what} (it becomes a folder name). "
                          f"Received: {shown}")
    folded = unicodedata.normalize("NFKC", name)
    if name.startswith(".") or folded.startswith(".") or name.endswith(".") \
            or any(c in FORBIDDEN for c in folded):
        raise CnnkitError("A class name cannot start or end with a dot, nor hold characters "
                          "that read as a path (a full-width slash, say): training skips "
                          f"hidden folders and other systems read such names apart. "
                          f"Received: {shown}")
    if folded.casefold() in SPLIT_NAMES:
        raise CnnkitError(f"{name!r} names a split (train, val, test), and a project with such "
                          "a folder would be read as already split: choose another name.")
    if folded.casefold().split(".")[0] in WINDOWS_RESERVED:
        raise CnnkitError(f"{name!r} is a device name on Windows, where the project could not "
                          "be unpacked: choose another name.")
    return name


def file_stem(filename: object, fallback: str = "image") -> str:
    """A safe stem for an uploaded file's name: its last path part, without its suffix,
    reduced to letters, digits, '.', '-' and '_' (others become '_'), never hidden."""
    text = filename if isinstance(filename, str) else ""
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", text))[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = "".join("_" if _odd(c) else c for c in stem)
    stem = _FILE_KEEP.sub("_", stem).strip("._-")
    stem = unicodedata.normalize("NFKC", stem)
    stem = _FILE_KEEP.sub("_", stem).strip("._-")[:MAX_FILE_CHARS]
    if not stem or stem.casefold().split(".")[0] in WINDOWS_RESERVED:
        return fallback
    return stem
