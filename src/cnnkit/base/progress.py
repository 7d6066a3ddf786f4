"""Progress bars (rich): decoding, training epochs with loss, accuracy, images/s, ETA."""

from __future__ import annotations

import time
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

from cnnkit.base import log

T = TypeVar("T")


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    if log.silent():
        yield from items
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=log.console(),
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


class StepBar:
    """A transient bar for work pushed from elsewhere: ``to(done)`` as it goes (the
    events of :mod:`cnnkit.training.events` drive it; :func:`track` wraps a loop)."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.bar: Progress | None = None
        if not log.silent():
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn(), console=log.console(), transient=True)
            self.task = self.bar.add_task(label, total=total)
            self.bar.start()

    def to(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class EpochBar:
    """One bar per epoch: running loss and accuracy, images per second, time left."""

    # Where output is a log file, not a terminal, rich draws the bar only when it stops:
    # a line at every tenth of the epoch (10 s apart at least) shows that a long CPU epoch
    # is moving.
    PLAIN_LINES = 10
    PLAIN_GAP_S = 10.0

    def __init__(self, epoch: int, epochs: int, steps: int, phase: str = "",
                 figure: str = "acc") -> None:
        """``figure``: the name of the task's headline figure (a share, shown in %)."""
        self.enabled = not log.silent()
        label = f"epoch {epoch}/{epochs}" + (f" {phase}" if phase else "")
        self.label, self.steps, self.done, self.figure = label, steps, 0, figure
        self.plain = self.enabled and not log.console().is_terminal
        self.started = self.shown = time.monotonic()
        if self.enabled:
            self.bar = Progress(
                TextColumn(label), BarColumn(bar_width=12), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} " + figure
                           + " {task.fields[acc]:.2%} {task.fields[ips]:,.0f} img/s"),
                TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(compact=True),
                console=log.console(), transient=False,
            )
            self.task = self.bar.add_task(label, total=steps, loss=0.0, acc=0.0, ips=0.0)
            self.bar.start()

    def update(self, loss: float, acc: float, ips: float, advance: int = 1) -> None:
        if self.enabled:
            self.bar.update(self.task, advance=advance, loss=loss, acc=acc, ips=ips)
        if self.plain:
            before, self.done = self.done, self.done + advance
            tick = max(1, self.steps // self.PLAIN_LINES)
            now = time.monotonic()
            if (self.done // tick > before // tick and self.done < self.steps
                    and now - self.shown >= self.PLAIN_GAP_S):
                self.shown = now
                spent = now - self.started
                left = spent * (self.steps - self.done) / self.done
                log.info(f"{self.label} {self.done}/{self.steps} loss {loss:.4f} "
                         f"{self.figure} {acc:.2%} {ips:,.0f} img/s {_clock(spent)} < "
                         f"{_clock(left)}")

    def close(self, suffix: str = "") -> None:
        if self.enabled:
            self.bar.stop()
            if suffix:
                log.info(f"  {suffix}")


class RateBar:
    """Items done of a known total with items/s and time left, on stderr (stdout may be
    data). Where stderr is not a terminal, one plain line every tenth of the work (10 s
    apart at least) instead."""

    def __init__(self, total: int, label: str, *, unit: str = "img",
                 enabled: bool = True) -> None:
        self.total, self.label, self.unit, self.done = total, label, unit, 0
        self.enabled = enabled and not log._quiet and total > 0
        con = log.err_console()
        self.plain = self.enabled and not con.is_terminal
        self.started = self.shown = time.monotonic()
        self.bar: Progress | None = None
        if self.enabled and not self.plain:
            self.bar = Progress(
                TextColumn(label), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:,.1f} " + unit + "/s"),
                TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(compact=True),
                console=con, transient=False)
            self.task = self.bar.add_task(label, total=total, rate=0.0)
            self.bar.start()

    def advance(self, n: int) -> None:
        before, self.done = self.done, self.done + n
        now = time.monotonic()
        rate = self.done / max(now - self.started, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, advance=n, rate=rate)
        elif self.plain:
            tick = max(1, self.total // 10)
            if (self.done // tick > before // tick and self.done < self.total
                    and now - self.shown >= EpochBar.PLAIN_GAP_S):
                self.shown = now
                left = (self.total - self.done) / rate if rate > 0 else 0.0
                log.err_console().print(
                    f"{self.label} {self.done:,}/{self.total:,} {rate:,.1f} {self.unit}/s "
                    f"{_clock(now - self.started)} < {_clock(left)}", markup=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"
