"""Files made from a model, bound to the weights they came from and checked before use.

An ONNX export, its int8 copy, any file computed from a model answers as the weights did
when it was made, and only then. Its record, ``<file>.source.json`` beside it, holds the
file's own sha256 and size, the sha256 of the weights it was made from, the options
that change its answers (opset, precision, calibration), and what was measured of it
when it was made (its parity with torch, an int8 file's test accuracy: figures for a
model card, not compared). :func:`check` compares the rest before the file is used: a
cached export that fails is made again; a file a user hands in is refused with one line
(:func:`require`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cnnkit._version import __version__
from cnnkit.base.atomic import write_json
from cnnkit.base.errors import CnnkitError

FORMAT = "cnnkit-derived"
FORMAT_VERSION = 1
SUFFIX = ".source.json"
MAX_RECORD_BYTES = 64 * 1024


def record_path(path: str | os.PathLike) -> Path:
    """Where the record of ``path`` lives: ``model.onnx`` -> ``model.onnx.source.json``."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bind(path: str | os.PathLike, source_sha256: str, options: dict[str, Any],
         measured: dict[str, Any] | None = None) -> Path:
    """Record that ``path`` (finished, in place) was made from the weights
    ``source_sha256`` with ``options``, and what was ``measured`` of it then (JSON
    values); returns the record's path."""
    path = Path(path)
    record = record_path(path)
    write_json(record, {"format": FORMAT, "format_version": FORMAT_VERSION,
                        "file": path.name, "sha256": sha256_of(path),
                        "size": path.stat().st_size, "source_sha256": source_sha256,
                        "options": options, "measured": measured or {},
                        "cnnkit_version": __version__})
    return record


def check(path: str | os.PathLike, source_sha256: str | None = None,
          options: dict[str, Any] | None = None) -> str | None:
    """Why ``path`` cannot be trusted (no record, changed since it was made, made from
    other weights or with other options), or None when it can. ``source_sha256`` and
    ``options``, when given, must be those recorded."""
    path = Path(path)
    doc = _read_record(path)
    if isinstance(doc, str):
        return doc
    if source_sha256 is not None and doc["source_sha256"] != source_sha256:
        return (f"it was made from other weights (sha256 {doc['source_sha256'][:12]}..., "
                f"not {source_sha256[:12]}...)")
    if options is not None and doc["options"] != options:
        return f"it was made with other options ({doc['options']}, not {options})"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or type(exc).__name__})"
    if size != doc["size"] or sha256_of(path) != doc["sha256"]:
        return (f"it was changed after it was made (its sha256 is not the one in "
                f"{record_path(path).name})")
    return None


def options(path: str | os.PathLike) -> dict[str, Any]:
    """The options recorded for ``path`` (empty when its record is missing or damaged);
    call :func:`check` first to trust them."""
    doc = _read_record(Path(path))
    return {} if isinstance(doc, str) else dict(doc["options"])


def measured(path: str | os.PathLike) -> dict[str, Any]:
    """What was measured of ``path`` when it was made (empty when its record has none)."""
    doc = _read_record(Path(path))
    found = {} if isinstance(doc, str) else doc.get("measured")
    return dict(found) if isinstance(found, dict) else {}


def source(path: str | os.PathLike) -> str | None:
    """The sha256 of the weights ``path`` was made from, as its record says (None when it
    has no readable record)."""
    doc = _read_record(Path(path))
    return None if isinstance(doc, str) else doc["source_sha256"]


def require(path: str | os.PathLike, source_sha256: str | None = None,
            options: dict[str, Any] | None = None) -> None:
    """:func:`check`, as one line for a file the user named: a CnnkitError when it fails."""
    why = check(path, source_sha256, options)
    if why is not None:
        raise CnnkitError(f"{path} cannot be used: {why}. Make it again from the model "
                          "(cnnkit export) rather than editing it.")


def _read_record(path: Path) -> dict[str, Any] | str:
    """The record of ``path``, checked, or why there is none to trust."""
    record = record_path(path)
    try:
        if record.stat().st_size > MAX_RECORD_BYTES:
            return f"its record {record.name} is too large to be one"
        doc = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no record of the weights it was made from ({record.name})"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return f"its record {record.name} is damaged"
    fields = {"format": str, "format_version": int, "file": str, "sha256": str, "size": int,
              "source_sha256": str, "options": dict}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or any(
            not isinstance(doc.get(k), t) or isinstance(doc.get(k), bool)
            for k, t in fields.items()):
        return f"its record {record.name} is damaged"
    if doc["format_version"] > FORMAT_VERSION:
        return f"its record {record.name} was written by a newer cnnkit"
    return doc
