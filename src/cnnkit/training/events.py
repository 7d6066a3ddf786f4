"""Training events: what a run says as it goes, to whoever subscribes.

The trainer emits events to an :class:`Events` hub: the plan and its time estimate, a
phase starting, work before the epochs (features, the linear probe), each step's running
figures, each epoch's row, a new best model, the tested model, the end, an error. The
console's progress bars (:mod:`cnnkit.training.console`), MLflow and TensorBoard
(:mod:`cnnkit.training.tracking`) and the studio's page subscribe; none of them reaches
into the loop. ``train(..., events=hub)`` adds a hub of your own::

    hub = Events()
    hub.subscribe(lambda e: print(e.kind, e.to_dict()))
    cnnkit.train("digits", epochs=2, events=hub)

A subscriber runs in the training process, between steps: it must be quick, and an
exception it raises stops the run (as a callback's does). :meth:`Events.request_stop`
(from a subscriber or another thread) ends the run after the current step as early
stopping ends it: that epoch is validated, the best model so far is kept, tested and
reported, and the run folder is complete.

Every event has a ``kind`` and ``to_dict()`` (JSON-ready); in a distributed run each
process emits its own, and the default subscribers act on rank 0's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from cnnkit.tasks.metrics import EvalResult


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it (paths as text, NaN and infinities as None)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, EvalResult):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Event:
    """The base of every event: its ``kind`` names it in JSON."""

    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f.name: _plain(getattr(self, f.name))
                                      for f in fields(self)}}


@dataclass(frozen=True)
class Planned(Event):
    """The plan, before any training: the estimate line (and, for a long CPU run, the
    faster choices) as the console prints them, and the figures behind them."""

    kind: ClassVar[str] = "plan"
    line: str
    seconds: float
    mode: str
    model: str
    device: str
    img_size: int
    epochs: int
    images: dict[str, int]  # train, val, test
    classes: tuple[str, ...]
    phases: tuple[tuple[str, int], ...] = ()  # (name, epochs) of each phase of epochs
    faster: str = ""


@dataclass(frozen=True)
class RunStarted(Event):
    """The run folder exists (or a resumed one is open)."""

    kind: ClassVar[str] = "run"
    run_dir: Path
    resuming: bool = False


@dataclass(frozen=True)
class Working(Event):
    """Work before or between the epochs that has a count: the frozen backbone's
    features, the linear probe. ``done == total`` when it is finished."""

    kind: ClassVar[str] = "working"
    what: str
    done: int
    total: int
    seconds: float = 0.0


@dataclass(frozen=True)
class PhaseStarted(Event):
    """A phase begins: which parameters train (a fine-tune's head, then its base)."""

    kind: ClassVar[str] = "phase"
    index: int
    name: str
    epochs: int
    trainable_params: int
    frozen_params: int
    frozen: str = ""
    announce: bool = True  # whether the console says so (not for a plain one-phase run)


@dataclass(frozen=True)
class EpochStarted(Event):
    kind: ClassVar[str] = "epoch_start"
    epoch: int
    epochs: int
    steps: int
    phase: str = ""  # shown beside the epoch when the run has several phases
    figure: str = "acc"  # the task's headline figure (StepDone.acc holds its value)


@dataclass(frozen=True)
class StepDone(Event):
    """Running figures of the epoch so far, after step ``step`` of ``steps``."""

    kind: ClassVar[str] = "step"
    epoch: int
    step: int
    steps: int
    loss: float
    acc: float  # the task's headline figure so far (accuracy for single-label)
    images_per_s: float
    seconds: float  # since the epoch began


@dataclass(frozen=True)
class EpochEnded(Event):
    """An epoch (or a features-mode L-BFGS round) is done: ``row`` is its line of
    metrics.csv; ``improved``: its model is the best so far; ``stopping``: why the run
    ends after it before its last epoch ("asked", "early stopping", "time"), or ""."""

    kind: ClassVar[str] = "epoch"
    epoch: int
    epochs: int
    row: dict[str, Any]
    improved: bool
    unit: str = "epoch"  # or "round"
    note: str = ""  # e.g. "L-BFGS, 25 steps"
    stopping: str = ""
    figure: str = "acc"  # the task's headline figure: the row's train_<figure>, val_<figure>


@dataclass(frozen=True)
class BestModel(Event):
    """A new best model was saved (every epoch's, when the run keeps the last)."""

    kind: ClassVar[str] = "best"
    epoch: int
    path: Path
    val_acc: float | None = None  # the task's headline figure on validation
    val_loss: float | None = None
    figure: str = "acc"  # its name (accuracy for single-label)


@dataclass(frozen=True)
class Tested(Event):
    """The kept model is final and tested on the held-out split (``test`` is None when
    the run has none); the plots and report come next. ``at_chance``: when the kept
    model scores at chance on validation (it learnt nothing), the line that says so and
    why, which the console prints as the run's last."""

    kind: ClassVar[str] = "test"
    run_dir: Path
    test: EvalResult | None = field(default=None, repr=False)
    at_chance: str = ""  # a line: the kept model scores at chance on validation


@dataclass(frozen=True)
class RunEnded(Event):
    """The run folder is complete (``seconds`` since the call began)."""

    kind: ClassVar[str] = "end"
    run_dir: Path
    history: list[dict[str, Any]] = field(repr=False)
    test: EvalResult | None = field(default=None, repr=False)
    seconds: float = 0.0


@dataclass(frozen=True)
class RunFailed(Event):
    """The run stopped on an error (``status`` FAILED) or an interruption (KILLED)."""

    kind: ClassVar[str] = "error"
    message: str
    status: str = "FAILED"
    run_dir: Path | None = None


Listener = Callable[[Event], None]


class Events:
    """Subscribers, called in order with every event; and a request to stop."""

    def __init__(self, *listeners: Listener) -> None:
        self._listeners: list[Listener] = list(listeners)
        self._stop = threading.Event()
        self._parent: Events | None = None

    def child(self, *listeners: Listener) -> Events:
        """A hub whose events go to ``listeners`` and then to this hub's, and which stops
        when this one is asked to (a run adds its own subscribers without changing the
        caller's hub)."""
        hub = Events(*listeners)
        hub._parent = self
        return hub

    def subscribe(self, listener: Listener) -> Listener:
        self._listeners.append(listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            listener(event)
        if self._parent is not None:
            self._parent.emit(event)

    def request_stop(self) -> None:
        """End the run after the current step, keeping what it has learnt (thread-safe)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set() or (self._parent is not None and
                                       self._parent.stop_requested)
