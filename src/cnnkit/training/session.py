"""``train`` and ``resume``: from a config to a finished run folder."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cnnkit.artifacts.modelfile import read_card
from cnnkit.artifacts.rundir import RunDir, check_folder
from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.training import distributed
from cnnkit.training.checkpoint import load_checkpoint
from cnnkit.training.console import ConsoleProgress
from cnnkit.training.events import Events, Planned, RunEnded, RunFailed, RunStarted
from cnnkit.training.fit import Callback, TrainResult, fit_run
from cnnkit.training.launch import announce_run, budget_start, under_torchrun
from cnnkit.training.lrfind import LRFinding, check_range, find_lr, plot_finding, report
from cnnkit.training.planner import Restart, decide
from cnnkit.training.run_start import describe_cluster, lock_run, started_run
from cnnkit.training.stopped import on_full_disk
from cnnkit.training.tracking import Trackers, check_installed

__all__ = ["Callback", "TrainResult", "lr_find", "plan", "resume", "train"]


def train(config: TrainConfig | str | None = None, /, *, callbacks: Sequence[Callback] = (),
          events: Events | None = None, started: float | None = None,
          planned: Planned | None = None, **options: Any) -> TrainResult:
    """Train a model. ``train("fashion-mnist", model="seed-cnn", epochs=3)``.

    ``callbacks`` are called as ``callback(trainer, row)`` after every epoch, where
    ``row`` is that epoch's metrics (add keys to it and they land in metrics.csv).
    ``events``: an :class:`~cnnkit.training.events.Events` hub that hears the run's
    events (the plan, steps, epochs, best model, end or error) and can stop it.
    ``started``: where a ``time`` budget counts from on the ``time.monotonic()`` clock
    (the command's start; default: this call, or under torchrun the launcher's start).
    ``planned``: the estimate :func:`plan` gave for the same options moments ago (the
    studio's Train tab); when it describes this run (mode, model, device, input, epochs,
    classes and images), it is announced again instead of timing steps anew.
    """
    if started is None:
        started = budget_start() if under_torchrun() else time.monotonic()
    config = TrainConfig.of(config, options)
    trackers = check_installed(config.trackers)
    check_folder(config.out, "--out")
    hub = _hub(events)
    where: list[Path] = []  # the run folder, once there is one
    with _reporting(hub, where):
        cluster = distributed.start(config.device)  # under torchrun: join the others
        with on_full_disk(None):  # the decode cache
            decided = decide(config, cluster, started=started, events=hub, planned=planned)
        with started_run(decided, hub, trackers, where) as run:
            result = fit_run(decided, run, None, callbacks, hub)
        hub.emit(RunEnded(run.root, result.history, result.test,
                          time.monotonic() - started))
    distributed.stop()
    return result


def plan(config: TrainConfig | str | None = None, /, *, events: Events | None = None,
         **options: Any) -> Planned:
    """What :func:`train` would do with these options and how long it would take here,
    without training: the data is loaded and a few steps timed, as ``train`` does before
    its first epoch (the same estimate line), and no run folder is written."""
    config = TrainConfig.of(config, options)
    hub = _hub(events)
    found: list[Planned] = []
    hub.subscribe(lambda e: found.append(e) if isinstance(e, Planned) else None)
    with _reporting(hub, []):
        decide(config, events=hub, find=False)
    return found[-1]


def _hub(events: Events | None) -> Events:
    """The run's hub: the console's progress, then the caller's hub (whose stop request
    this one honours); trackers join it once the run folder exists."""
    return (events if events is not None else Events()).child(ConsoleProgress())


@contextlib.contextmanager
def _reporting(hub: Events, where: list[Path]) -> Iterator[None]:
    """Tell the hub when the run fails or is interrupted, then let the error go on."""
    try:
        yield
    except KeyboardInterrupt:
        hub.emit(RunFailed("interrupted", "KILLED", where[-1] if where else None))
        raise
    except BaseException as exc:
        message = str(exc) if isinstance(exc, CnnkitError) else f"{type(exc).__name__}: {exc}"
        hub.emit(RunFailed(message, "FAILED", where[-1] if where else None))
        raise


def lr_find(config: TrainConfig | str | None = None, /, *, plot: str | Path | None = None,
            steps: int = 100, start: float = 1e-7, end: float = 10.0,
            **options: Any) -> LRFinding:
    """The learning-rate range test for the model and data a ``train`` call would use:
    ``lr_find("digits", model="lenet5", plot="lr.png").suggestion()`` (None when the
    curve is too short or noisy to trust: ``.doubt`` says why). Writes no run folder."""
    check_range(start, end, steps)
    config = TrainConfig.of(config, options)
    decided = decide(config, cost=False)
    plan, splits = decided.plan, decided.splits
    finding = find_lr(plan, decided.model, splits, start=start, end=end, steps=steps,
                      class_weights=decided.class_weights)
    report(finding)
    if plot is not None:
        plot_finding(finding, plot, f"Learning-rate range test: {plan.config.model} on "
                     f"{splits.source.name}")
    return finding


def resume(run_dir: str | Path, *, events: Events | None = None) -> TrainResult:
    """Continue a stopped run from its last checkpoint, with the same config and data;
    ``events`` as for :func:`train`."""
    started = time.monotonic()
    run = RunDir.open(run_dir)
    hub = _hub(events)
    with _reporting(hub, [run.root]):
        with lock_run(run), on_full_disk(run):  # a second --resume stops here, one line
            result = _resume(run, hub, started)
        hub.emit(RunEnded(run.root, result.history, result.test, time.monotonic() - started))
    distributed.stop()
    return result


def _resume(run: RunDir, hub: Events, started: float) -> TrainResult:
    """``started``: what is left of --time counts from here."""
    if distributed.from_env().writes:  # rank 0 tidies; the others only read the run
        run.remove_stale_files()
    cfg = run.train_config()
    if cfg.mode == "features":
        raise CnnkitError(f"{run.root} used --mode features, which has no epochs to resume: "
                          "run the same command again (its features are cached).")
    if not run.checkpoint_path.is_file() and run.model_path.is_file() and run.read_metrics():
        done = len(run.read_metrics())
        how = (f"already finished its {log.plural(cfg.epochs, 'epoch')}" if done >= cfg.epochs
               else f"stopped early after epoch {done}")
        raise CnnkitError(f"{run.root} {how}; nothing to resume (its training state was "
                          f"dropped when it ended). Start a new run to train longer, or from "
                          f"its weights with --init-from {run.root}.")
    model_state, optim_state, meta, rng, average = load_checkpoint(run.checkpoint_path)
    card, _ = read_card(run.root)
    trackers = check_installed(cfg.trackers)
    cluster = distributed.start(cfg.device)
    decided = decide(cfg, cluster, started=started, events=hub,
                     restart=Restart(run, card, model_state, meta))
    if cluster.writes:
        announce_run(run.root)
    hub.emit(RunStarted(run.root, resuming=True))
    describe_cluster(decided.plan)
    if cluster.writes:
        hub.subscribe(Trackers(run, cfg, trackers, resuming=True))
    return fit_run(decided, run,
                    {"meta": meta, "optimizer": optim_state, "rng": rng, "average": average},
                    (), hub)
