"""The terminal's view of a run: a subscriber to its events that prints the plan, the
phases, one progress bar per epoch and each epoch's figures (nothing when quiet)."""

from __future__ import annotations

from typing import Any

from cnnkit.base import log
from cnnkit.base.progress import EpochBar, StepBar
from cnnkit.training import events as ev


def summary(row: dict[str, Any], figure: str = "acc") -> str:
    """``train loss 0.41 acc 86.00% | val loss 0.45 acc 84.00%`` (``figure``: the task's
    headline figure, ``acc`` for single-label)."""
    text = f"train loss {row['train_loss']:.4f} {figure} {row[f'train_{figure}']:.2%}"
    if f"val_{figure}" in row:
        text += f" | val loss {row['val_loss']:.4f} {figure} {row[f'val_{figure}']:.2%}"
    return text


class ConsoleProgress:
    """Events to lines and bars on stdout, as ``cnnkit train`` shows them."""

    def __init__(self) -> None:
        self.bar: EpochBar | None = None
        self.work: StepBar | None = None
        self.synced = 0
        self.at_chance = ""

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Tested):  # a warning: said even when quiet
            self.at_chance = event.at_chance
        if isinstance(event, ev.RunEnded) and self.at_chance:
            log.warn(self.at_chance)  # after "done:", the last line the user reads
        if log.silent():
            return
        handler = getattr(self, f"_{event.kind}", None)
        if handler is not None:
            handler(event)

    def _plan(self, e: ev.Planned) -> None:
        log.info(e.line)
        if e.faster:
            log.info(e.faster)

    def _phase(self, e: ev.PhaseStarted) -> None:
        if e.announce:
            log.info(f"phase {e.name}: {e.epochs} epoch(s), training {e.trainable_params:,} "
                     f"parameters, frozen: {e.frozen} ({e.frozen_params:,} parameters)")

    def _working(self, e: ev.Working) -> None:
        if self.work is None or self.work.label != e.what:
            self._close_work()
            self.work = StepBar(e.what, e.total)
        self.work.to(e.done)
        if e.done >= e.total:
            self._close_work()

    def _close_work(self) -> None:
        if self.work is not None:
            self.work.close()
            self.work = None

    def _epoch_start(self, e: ev.EpochStarted) -> None:
        self.bar = EpochBar(e.epoch, e.epochs, e.steps, e.phase, e.figure)
        self.synced = 0

    def _step(self, e: ev.StepDone) -> None:
        if self.bar is not None:
            self.bar.update(e.loss, e.acc, e.images_per_s, advance=e.step - self.synced)
            self.synced = e.step

    def _epoch(self, e: ev.EpochEnded) -> None:
        if self.bar is None:  # a round of the features mode: no bar, one line
            note = f" ({e.note})" if e.note else ""
            log.info(f"{e.unit} {e.epoch}/{e.epochs}{note}: {summary(e.row, e.figure)}")
            return
        mark = " *" if e.improved and f"val_{e.figure}" in e.row else ""
        self.bar.close(f"{summary(e.row, e.figure)} | {e.row['train_time_s']:.1f}s{mark}")
        self.bar = None

    def _error(self, e: ev.RunFailed) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._close_work()
