"""Decode image files once; keep the resized uint8 pixels in a cache on disk.

The cache key covers every file's path, size and modification time and the decode
settings, so a changed file is decoded again and an unchanged tree is never re-read.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.base import log
from cnnkit.base.atomic import atomic_path, write_json
from cnnkit.base.device import require_memory
from cnnkit.base.paths import cache_dir
from cnnkit.data.decode import CorruptImageError, decode

CACHE_VERSION = 1
CHUNK = 256  # images per task
PROCESS_MIN = 500  # decode with worker processes from this many images on


def _key(paths: tuple[str, ...], channels: int, size: int, interpolation: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, channels, size, interpolation]).encode())
    for p in paths:
        try:
            st = os.stat(p)
            stamp = f"{st.st_size}\0{st.st_mtime_ns}"
        except OSError as exc:  # gone, or a link that loops: the decode reports it
            stamp = f"unreadable {exc.errno}"
        # fsencode: a name that is not valid UTF-8 keeps its own bytes.
        h.update(b"\0" + os.fsencode(os.path.abspath(p)) + f"\0{stamp}".encode())
    return h.hexdigest()[:32]


def decode_files(
    paths: tuple[str, ...],
    channels: int,
    size: int,
    interpolation: str = "bilinear",
    *,
    use_cache: bool = True,
    progress: bool = True,
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode ``paths`` to uint8 ``(N_ok, C, size, size)``.

    Returns the images, the indices (into ``paths``) that decoded, and one message per
    file that did not; corrupt files are reported and skipped, never modified.
    """
    folder = cache_dir("decoded")
    key = _key(paths, channels, size, interpolation)
    npy, meta = folder / f"{key}.npy", folder / f"{key}.json"
    if use_cache and npy.is_file() and meta.is_file():
        cached = _read_cached(npy, meta, (channels, size, size), len(paths))
        if cached is not None:
            _warn(cached[2])
            return cached

    require_memory(len(paths) * channels * size * size,
                   f"Decoding {len(paths):,} images at {size}x{size}",
                   "Use a smaller --img-size, or fewer images (--per-class).")
    images = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    errors: list[str | None] = [None] * len(paths)
    chunks = [range(i, min(i + CHUNK, len(paths))) for i in range(0, len(paths), CHUNK)]
    with worker_pool(len(paths), len(chunks)) as pool:  # workers start before any progress thread
        jobs = [pool.submit(_decode_chunk, [paths[i] for i in r], channels, size, interpolation)
                for r in chunks]
        steps = zip(chunks, jobs)
        if progress and len(paths) >= 200:
            from cnnkit.base.progress import track
            steps = track(steps, total=len(chunks), description="decoding images")
        for r, job in steps:
            chunk_images, chunk_ok, chunk_errors = job.result()
            images[r.start:r.stop] = chunk_images
            ok[r.start:r.stop] = chunk_ok
            errors[r.start:r.stop] = chunk_errors
    kept = np.flatnonzero(ok)
    images = images[kept] if len(kept) < len(paths) else images
    messages = [e for e in errors if e is not None]
    if use_cache:
        with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
            np.save(_ChunkWriter(fh), images)
        write_json(meta, {"ok": kept.tolist(), "errors": messages, "paths": len(paths)})
    _warn(messages)
    return torch.from_numpy(images), kept.tolist(), messages


class _ChunkWriter:
    """A file that numpy writes to through ``write()``, in chunks: then a full disk is the
    OSError (ENOSPC) Python's files raise, not numpy's own "N requested and M written",
    which has no error number and read as a crash."""

    def __init__(self, fh: Any) -> None:
        self.write = fh.write


def _read_cached(npy: Path, meta: Path, shape: tuple[int, int, int], n_paths: int
                 ) -> tuple[torch.Tensor, list[int], list[str]] | None:
    """A cache entry that holds what it says (the kept images' count and shape), else
    None: a damaged or foreign entry is decoded again, never used."""
    try:
        info = json.loads(meta.read_text())
        images = np.load(npy, mmap_mode="c" if npy.stat().st_size > 2**31 else None)
        ok, errors = info["ok"], info["errors"]
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    whole = (isinstance(ok, list) and all(isinstance(i, int) and 0 <= i < n_paths for i in ok)
             and isinstance(errors, list) and all(isinstance(e, str) for e in errors)
             and images.dtype == np.uint8 and images.shape == (len(ok), *shape))
    return (torch.from_numpy(images), ok, errors) if whole else None


def worker_pool(n_images: int, n_chunks: int) -> Executor:
    """Worker processes for many images, else one thread.

    Decoding small images is mostly Python work under the GIL, so processes beat threads
    (figures in docs/design-notes.md, "Decoding uses forked worker processes"). Fork (not
    spawn) so that a user's script is not re-imported by the workers; they only run
    Pillow and NumPy.
    """
    workers = min(os.cpu_count() or 1, n_chunks)
    if workers > 1 and n_images >= PROCESS_MIN and \
            "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(1)


def _decode_chunk(paths: list[str], channels: int, size: int, interpolation: str
                  ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    images = np.zeros((len(paths), channels, size, size), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    errors: list[str | None] = [None] * len(paths)
    for i, path in enumerate(paths):
        try:
            images[i] = decode(path, channels, size, interpolation).transpose(2, 0, 1)
            ok[i] = True
        except CorruptImageError as exc:
            errors[i] = str(exc)
        except FileNotFoundError:
            errors[i] = f"{log.quoted(path)}: file disappeared while reading"
    return images, ok, errors


def _warn(messages: list[str]) -> None:
    for msg in messages:
        log.warn(f"skipped image {msg}")
    if len(messages) > 1:
        log.warn(f"skipped {len(messages)} images that could not be decoded or were "
                 "refused; the files were left as they are")


def clear() -> int:
    """Delete every cached decode; returns the number of files removed."""
    removed = 0
    for p in Path(cache_dir("decoded")).iterdir():
        p.unlink()
        removed += 1
    return removed
