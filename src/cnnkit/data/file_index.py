"""What each image file is, remembered by its size and modification time: a content hash,
its pixel size and mode, whether it decodes, and a perceptual hash.

``cnnkit check`` reads every file once; a second check of the same folder only stats
the files and reads the index from the cache folder, as the decode cache does for
pixels (a changed file has a new size or time and is read again).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.base.atomic import write_text
from cnnkit.base.paths import cache_dir
from cnnkit.data.cache import worker_pool
from cnnkit.data.decode import (
    CorruptImageError,
    ImageTooLargeError,
    open_image,
    read_header,
    refusal,
)

INDEX_VERSION = 2  # 2: elongated images are refused
CHUNK = 128


@dataclass(frozen=True)
class FileFacts:
    size: int  # bytes
    mtime_ns: int
    digest: str = ""  # content hash; "" when the file could not be read
    width: int = 0
    height: int = 0
    mode: str = ""
    error: str | None = None  # why the file cannot be used, if it cannot
    checked: bool = False  # fully decoded (else only its header was read)
    dhash: int | None = None  # 64-bit difference hash of the decoded image

    @property
    def read(self) -> bool:
        """Whether the header was read (an entry :func:`file_digests` left holds only the
        content hash)."""
        return bool(self.mode) or self.error is not None


def index_path(root: str | os.PathLike) -> Path:
    key = hashlib.sha256(os.fsencode(os.path.abspath(root))).hexdigest()[:24]
    return cache_dir("index") / f"{key}.json"


def file_facts(paths: list[str], root: str | os.PathLike, *, decode: bool, near: bool,
               progress: bool = True) -> dict[str, FileFacts]:
    """Facts for every path (a path that cannot even be stat'ed gets an error)."""
    index_file = index_path(root)
    old = _load(index_file)
    out: dict[str, FileFacts] = {}
    todo: list[tuple[str, int, int]] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as exc:
            out[p] = FileFacts(0, 0, error=exc.strerror or type(exc).__name__)
            continue
        known = old.get(p)
        if (known is not None and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns
                and known.read and (known.checked or not decode)
                and (known.dhash is not None or not near or known.error is not None)):
            out[p] = known
        else:
            todo.append((p, st.st_size, st.st_mtime_ns))
    if todo:
        chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
        with worker_pool(len(todo), len(chunks)) as pool:
            jobs = [pool.submit(_inspect_chunk, c, decode, near) for c in chunks]
            done = as_completed(jobs)
            if progress and len(todo) >= 500:
                from cnnkit.base.progress import track
                done = track(done, total=len(jobs), description="reading images")
            for job in done:
                out.update(job.result())
        old.update({p: out[p] for p, _, _ in todo})
        _save(index_file, old)
    return out


def file_digests(paths: Sequence[str], root: str | os.PathLike) -> list[str]:
    """Each file's content hash, as :class:`FileFacts` keeps it ("" for a file that cannot
    be read): the index's where the file is unchanged, else from its bytes alone (no
    header or pixels), so that recognising a large folder costs one read of each file,
    and a second time only the stats."""
    index_file = index_path(root)
    old = _load(index_file)
    out: list[str] = []
    new: dict[str, FileFacts] = {}
    for p in paths:
        try:
            st = os.stat(p)
            known = old.get(p)
            if (known is not None and known.digest and known.size == st.st_size
                    and known.mtime_ns == st.st_mtime_ns):
                out.append(known.digest)
                continue
            with open(p, "rb") as fh:
                digest = content_hash(fh.read())
        except OSError:
            out.append("")
            continue
        new[p] = FileFacts(st.st_size, st.st_mtime_ns, digest)
        out.append(digest)
    if new:
        old.update(new)
        _save(index_file, old)
    return out


def content_hash(data: bytes) -> str:
    """The hash that names a file's contents (:attr:`FileFacts.digest`)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _inspect_chunk(items: list[tuple[str, int, int]], decode: bool, near: bool
                   ) -> dict[str, FileFacts]:
    return {p: _inspect(p, size, mtime, decode, near) for p, size, mtime in items}


def _inspect(path: str, size: int, mtime: int, decode: bool, near: bool) -> FileFacts:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return FileFacts(size, mtime, error=exc.strerror or type(exc).__name__, checked=True)
    digest = content_hash(data)
    if not data:
        return FileFacts(size, mtime, digest, error="empty file (0 bytes)", checked=True)
    try:
        width, height, mode = read_header(io.BytesIO(data))
    except ImageTooLargeError as exc:
        return FileFacts(size, mtime, digest, error=_reason(exc), checked=True)
    except Exception as exc:  # any failure to parse a header is the file's, not ours
        why = _reason(exc).removeprefix("cannot decode image (").removesuffix(")")
        return FileFacts(size, mtime, digest, error=f"not an image ({why})", checked=True)
    refused = refusal(width, height)
    if refused is not None:
        return FileFacts(size, mtime, digest, width, height, mode, refused, True)
    if not decode:
        return FileFacts(size, mtime, digest, width, height, mode)
    try:
        img = open_image(data)
    except CorruptImageError as exc:
        return FileFacts(size, mtime, digest, width, height, mode, _reason(exc), True)
    return FileFacts(size, mtime, digest, width, height, mode, None, True,
                     dhash(img) if near else None)


def _reason(exc: Exception) -> str:
    """The decoder's message without the name it gives bytes."""
    return str(exc).removeprefix("<bytes>: ")


def dhash(img: Image.Image) -> int:
    """Difference hash: 8x8 signs of horizontal brightness steps in a 9x8 thumbnail."""
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR),
                       dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def _load(path: Path) -> dict[str, FileFacts]:
    try:
        doc = json.loads(path.read_text())
        if doc.get("version") != INDEX_VERSION:
            return {}
        return {p: FileFacts(**f) for p, f in doc["files"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}  # no index yet, or a damaged one: read the files again


def _save(path: Path, facts: dict[str, FileFacts]) -> None:
    """Compact JSON (no indent: the C encoder) of each entry's fields as they are (no
    deep copy): a cache file, written whenever a file is new to the index."""
    # Names that are not UTF-8 never reach here: the scan skips them.
    write_text(path, json.dumps({"version": INDEX_VERSION,
                                 "files": {p: vars(f) for p, f in facts.items()}},
                                separators=(",", ":")))
