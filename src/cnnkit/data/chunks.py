"""Decode a long list of image files chunk by chunk, ahead of the consumer.

For prediction over collections that do not fit in memory: worker processes decode the
next chunks while the caller works on the current one, and at most ``ahead`` chunks
wait decoded at any time, so memory stays bounded whatever the number of files. Chunks
come back in input order; a file that cannot be read is reported, not raised.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from cnnkit.base.device import usable_cores
from cnnkit.data.decode import CorruptImageError, decode


@dataclass
class Chunk:
    """``paths[i]`` decoded into ``images[i]`` where ``errors[i]`` is None."""

    paths: list[str]
    images: np.ndarray  # uint8 (n, C, size, size); rows of failed files are zeros
    errors: list[str | None]

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)


def decode_chunk(paths: Sequence[str], channels: int, size: int, interpolation: str
                 ) -> Chunk:
    """Decode ``paths``; a file that fails gets its error message instead of raising."""
    images = np.zeros((len(paths), channels, size, size), dtype=np.uint8)
    errors: list[str | None] = [None] * len(paths)
    for i, path in enumerate(paths):
        try:
            images[i] = decode(path, channels, size, interpolation).transpose(2, 0, 1)
        except CorruptImageError as exc:
            errors[i] = _message(str(exc), path)
        except FileNotFoundError:
            errors[i] = "file not found"
        except OSError as exc:  # a folder, no permission, an I/O error
            errors[i] = exc.strerror or type(exc).__name__
    return Chunk(list(paths), images, errors)


def _message(text: str, path: str) -> str:
    """The decoder's message without the path in front (the row already names the file)."""
    return text.split(": ", 1)[1] if text.startswith(f"{path}: ") else text


def _pool(workers: int) -> Executor:
    """Forked worker processes (they run only Pillow and NumPy, and a user's script is not
    imported again), or one thread where fork is missing or one worker is asked for."""
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(1)


def decode_ahead(paths: Sequence[str], channels: int, size: int, interpolation: str, *,
                 chunk: int = 64, workers: int | None = None, ahead: int | None = None
                 ) -> Iterator[Chunk]:
    """Chunks of ``chunk`` decoded files, in order, decoded by ``workers`` processes while
    the caller consumes earlier ones (default: one per core when there are two chunks or
    more); at most ``ahead`` (default: workers + 1) chunks are in flight or waiting."""
    if workers is None:  # forking costs more than it saves on a few images
        workers = usable_cores() if len(paths) >= 2 * chunk else 1
    ahead = max(1, ahead or workers + 1)
    starts = iter(range(0, len(paths), chunk))
    pending: deque[Future] = deque()
    with _pool(min(workers, max(1, -(-len(paths) // chunk)))) as pool:
        try:
            for start in starts:
                pending.append(pool.submit(decode_chunk, paths[start:start + chunk],
                                           channels, size, interpolation))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for job in pending:
                job.cancel()
