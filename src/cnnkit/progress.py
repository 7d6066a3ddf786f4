"""Progress bars (rich): decoding, training epochs with loss, accuracy, images/s, ETA."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cnnkit import log

T = TypeVar("T")


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    if log._quiet:
        yield from items
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=log.console(),
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


class EpochBar:
    """One bar per epoch: running loss and accuracy, images per second, time left."""

    def __init__(self, epoch: int, epochs: int, steps: int, phase: str = "") -> None:
        self.enabled = not log._quiet
        label = f"epoch {epoch}/{epochs}" + (f" {phase}" if phase else "")
        if self.enabled:
            self.bar = Progress(
                TextColumn(label), BarColumn(bar_width=12), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.2%} "
                           "{task.fields[ips]:,.0f} img/s"),
                TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(compact=True),
                console=log.console(), transient=False,
            )
            self.task = self.bar.add_task(label, total=steps, loss=0.0, acc=0.0, ips=0.0)
            self.bar.start()

    def update(self, loss: float, acc: float, ips: float, advance: int = 1) -> None:
        if self.enabled:
            self.bar.update(self.task, advance=advance, loss=loss, acc=acc, ips=ips)

    def close(self, suffix: str = "") -> None:
        if self.enabled:
            self.bar.stop()
            if suffix:
                log.info(f"  {suffix}")
