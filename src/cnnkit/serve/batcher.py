"""Gather concurrent requests' images into batches for the model, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


class QueueFull(Exception):
    """More images are waiting than the server accepts; the client should retry later."""


@dataclass
class _Job:
    image: np.ndarray
    future: asyncio.Future


class MicroBatcher:
    """A bounded queue of decoded images and one worker that runs them in batches.

    The worker takes what is waiting (up to ``max_batch_size`` images); when that is less
    than a full batch it waits up to ``max_wait_ms`` for more, then runs the batch in a
    thread of its own, so the event loop keeps answering (``/health``, new uploads) while
    the model computes. Images arriving meanwhile form the next batch.
    """

    def __init__(self, infer: Callable[[list[np.ndarray]], np.ndarray], *,
                 max_batch_size: int, max_wait_ms: float, max_queue: int,
                 name: str = "model", thread_init: Callable[[], None] | None = None) -> None:
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self._pending: list[_Job] = []
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"cnnkit-infer-{name}",
                                            initializer=thread_init)
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.images = 0
        self.busy_s = 0.0  # time the model spent on batches

    def stats(self) -> dict[str, float]:
        """Counters since start: batches, images, mean batch size, seconds in the model."""
        return {"batches": self.batches, "images": self.images,
                "mean_batch_size": round(self.images / self.batches, 2) if self.batches else 0,
                "model_seconds": round(self.busy_s, 3), "waiting": len(self._pending)}

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the model's thread, between batches (e.g. a warm-up pass)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def infer(self, images: list[np.ndarray]) -> np.ndarray:
        """Probabilities ``(len(images), classes)``; raises :class:`QueueFull` at once
        when the queue has no room for all of them (nothing of the request is queued)."""
        if len(self._pending) + len(images) > self.max_queue:
            raise QueueFull(f"{len(self._pending)} images are waiting for the model")
        loop = asyncio.get_running_loop()
        jobs = [_Job(img, loop.create_future()) for img in images]
        self._pending.extend(jobs)
        self._arrived.set()
        return np.stack(await asyncio.gather(*(j.future for j in jobs)))

    async def _next_batch(self) -> list[_Job]:
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(self._pending) < self.max_batch_size:
            left = deadline - loop.time()
            if left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                break
        batch = self._pending[:self.max_batch_size]
        del self._pending[:self.max_batch_size]
        return [j for j in batch if not j.future.cancelled()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            began = loop.time()
            try:
                probs = await loop.run_in_executor(
                    self._executor, self._infer, [j.image for j in batch])
            except Exception as exc:  # the requests get the error, the worker goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                self.busy_s += loop.time() - began
            self.batches += 1
            self.images += len(batch)
            for job, row in zip(batch, probs):
                if not job.future.done():
                    job.future.set_result(row)
