"""``train`` and ``resume``: from a config to a finished run folder."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnkit.artifacts.modelfile import ModelCard, read_card
from cnnkit.artifacts.rundir import RunDir, check_folder, human_size
from cnnkit.artifacts.runlock import RunLock, locked
from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.sources import Splits
from cnnkit.tasks.base import Result
from cnnkit.training import distributed, features, transfer
from cnnkit.training.checkpoint import load_checkpoint
from cnnkit.training.console import ConsoleProgress
from cnnkit.training.events import Events, Planned, RunEnded, RunFailed, RunStarted, Tested
from cnnkit.training.finish import evaluate_test
from cnnkit.training.launch import announce_run, budget_start, under_torchrun
from cnnkit.training.loop import Trainer
from cnnkit.training.lrfind import TRAIN_PICK, LRFinding, check_range, find_lr, plot_finding, report
from cnnkit.training.planner import Decided, Restart, decide
from cnnkit.training.recipe import Plan
from cnnkit.training.stopped import on_full_disk, what_to_do
from cnnkit.training.tracking import Trackers, check_installed

Callback = Callable[[Trainer, dict[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    """What a finished run left: its folder, per-epoch history and test metrics."""

    run_dir: Path
    history: list[dict[str, Any]]
    test: Result | None
    config: TrainConfig

    @property
    def test_accuracy(self) -> float | None:
        """The test split's accuracy (None without a test split, or for a task whose
        results have none)."""
        return None if self.test is None else self.test.scalars().get("acc")


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
        with on_full_disk(None):  # the decode cache, the run folder's first files
            decided = decide(config, cluster, started=started, events=hub, planned=planned)
            run = _create_run(decided)
        where.append(run.root)
        hub.emit(RunStarted(run.root))
        _describe_cluster(decided.plan)
        with lock_run(run, cluster), on_full_disk(run):
            if cluster.writes:  # trackers log from the writing process only
                hub.subscribe(Trackers(run, decided.plan.config, trackers,
                                       samples=_samples(decided.splits)))
            result = _fit_run(decided, run, None, callbacks, hub)
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


def _create_run(decided: Decided) -> RunDir:
    """The run folder, made and filled by the one process that writes (rank 0 of a
    distributed run); the others learn its path and never write to it. --lr find ran
    before it exists: a finder that fails leaves none."""
    plan, splits = decided.plan, decided.splits
    cfg = plan.config
    root = None
    if plan.cluster.writes:
        run = RunDir.create(cfg.out, cfg.name or f"{splits.source.name}-{_short(cfg.model)}")
        if decided.finding is not None:
            _record_finding(decided.finding, run)
        run.write_config({**cfg.to_dict(), "data": plan.source.run_spec()})
        run.write_classes(splits.classes)
        files = splits.files()
        if files:
            write_json(run.split_path, {"classes": list(splits.classes),
                                        **{k: _split_rows(getattr(splits, k)) for k in files}})
        log.info(f"run: {run.root}")
        announce_run(run.root)
        root = str(run.root)
    return RunDir(distributed.broadcast(plan.cluster, root))


def _describe_cluster(plan: Plan) -> None:
    cluster, cfg = plan.cluster, plan.config
    if not cluster.distributed:
        return
    where = f"{plan.device.type.upper()}s" if plan.device.type == "cuda" else "the CPU"
    log.info(f"distributed: {cluster.world} processes on {where} "
             f"({'NCCL' if plan.device.type == 'cuda' else 'gloo'}); global batch "
             f"{cfg.batch_size} = {cfg.batch_size // cluster.world} per process, lr {cfg.lr:g}; "
             f"sync-bn {'on' if plan.sync_bn else 'off'}")












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




def _record_finding(finding: LRFinding, run: RunDir) -> None:
    """--lr find's curve in the run folder, and which rate the plan took from it: the
    suggestion, or the default rate for a curve too short or noisy to trust."""
    suggested = finding.suggestion()
    write_json(run.root / "lr_find.json",
               {"picked": TRAIN_PICK if suggested is not None else "default",
                **finding.to_dict()})
    plot_finding(finding, run.plots_dir / "lr_find.png")
    if suggested is None:
        log.info(f"--lr find: the curve is {finding.doubt}; training at the default rate, "
                 f"{finding.default:g} (curve: {run.plots_dir / 'lr_find.png'})")
        return
    log.info(f"--lr find: training at the finder's {TRAIN_PICK} suggestion, "
             f"{float(f'{suggested:.3g}'):g} (the default would be {finding.default:g})")


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


def lock_run(run: RunDir, cluster: distributed.Cluster | None = None
             ) -> contextlib.AbstractContextManager[RunLock | None]:
    """The run folder's lock, taken by the one process that writes the run (rank 0 of a
    distributed run; the others take none) and held until the run ends. Another process
    that asks for it gets one line naming the holder."""
    cluster = cluster if cluster is not None else distributed.from_env()
    return locked(run.root) if cluster.writes else contextlib.nullcontext()


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
    _describe_cluster(decided.plan)
    if cluster.writes:
        hub.subscribe(Trackers(run, cfg, trackers, resuming=True))
    return _fit_run(decided, run,
                    {"meta": meta, "optimizer": optim_state, "rng": rng, "average": average},
                    (), hub)


def _fit_run(decided: Decided, run: RunDir, resume: dict[str, Any] | None,
             callbacks: Sequence[Callback], hub: Events) -> TrainResult:
    """Train, then (on the writing process) test and report. The caller turns a full disk
    while training into its one line; after training, it is said here that the model is
    saved."""
    plan, splits = decided.plan, decided.splits
    history = _train_epochs(decided, run, resume, callbacks, hub)
    if not plan.cluster.writes:
        return TrainResult(run.root, history, None, plan.config)  # rank 0 tests and reports
    with on_full_disk(run, trained=True):
        return _finish(plan, run, splits, history, hub)


def _train_epochs(decided: Decided, run: RunDir, resume: dict[str, Any] | None,
                  callbacks: Sequence[Callback], hub: Events) -> list[dict[str, Any]]:
    """Every epoch still to train (none when a resumed run had trained them all but was
    stopped before its end: it is tested and reported now); returns the history."""
    plan, splits, model, card = decided.plan, decided.splits, decided.model, decided.card
    class_weights, sample_weights = decided.class_weights, decided.sample_weights
    cfg = plan.config
    if cfg.mode == "features":

        return features.fit(plan, model, splits, card, run, class_weights, hub)
    phases = plan.phases
    if cfg.mode == "fine-tune" and cfg.probe and resume is None and plan.cluster.writes:
        # Distributed: rank 0 fits the probe; DistributedDataParallel then starts every
        # rank from rank 0's weights, so the others wait and receive its head.

        features.probe(plan, model, splits, run, class_weights, hub)
    if resume is not None and _all_trained(resume["meta"], phases) \
            and not run.ended_path.exists():  # stopped after its last epoch, before its end
        log.info(f"{run.root} had trained all its epochs; testing and reporting it now")
        if plan.cluster.writes:  # its last epoch may be in the checkpoint only
            run.write_metrics(resume["meta"]["history"])
        return resume["meta"]["history"]
    if resume is not None and resume["meta"].get("out_of_time"):
        raise CnnkitError(f"{run.root} ended on its --time budget after epoch "
                          f"{len(resume['meta']['history'])}, its schedule annealed; nothing to "
                          "resume. Start a new run to train longer, or from its weights with "
                          f"--init-from {run.root}.")
    if resume is not None and resume["meta"].get("stopped_early"):
        raise CnnkitError(f"{run.root} stopped early after epoch {len(resume['meta']['history'])}"
                          f" (validation accuracy had not improved for "
                          f"{log.plural(cfg.patience, 'epoch')}); "
                          "nothing to resume. Start a new run to train differently.")
    if resume is not None and resume["meta"]["phase"] >= len(phases) - 1 and \
            resume["meta"]["epoch_in_phase"] + 1 >= phases[-1].epochs:
        raise CnnkitError(f"{run.root} already finished its {log.plural(cfg.epochs, 'epoch')}; "
                          "nothing to "
                          "resume. Start a new run to train longer.")
    start = (f"the weights of {cfg.init_from}" if cfg.init_from else
             "the linear probe" if cfg.mode == "fine-tune" and cfg.probe else None)
    trainer = Trainer(plan, model, splits, card, run, phases, class_weights, sample_weights,
                      callbacks, hub, trained_start=start)
    try:
        return trainer.fit(resume)
    except KeyboardInterrupt:
        log.warn(f"interrupted; {what_to_do(run)}")
        raise
    except RuntimeError as exc:
        if not (plan.cluster.distributed and distributed.peer_lost(exc)):
            raise
        text = str(exc).strip()
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
        command = (f"cnnkit train --resume {run.root} --devices {plan.cluster.world} (or the "
                   "same torchrun command with --resume)")
        raise CnnkitError(
            f"another process of this {plan.cluster.world}-process run stopped or stopped "
            f"answering ({reason}); {what_to_do(run, command)}" + _timeout_hint(reason)
        ) from None


def _all_trained(meta: dict[str, Any], phases: tuple[transfer.Phase, ...]) -> bool:
    """Whether a checkpoint's run had trained all it was going to (every epoch, or until
    early stopping)."""
    return bool(meta.get("stopped_early")) or (
        meta["phase"] >= len(phases) - 1 and meta["epoch_in_phase"] + 1 >= phases[-1].epochs)


def _timeout_hint(reason: str) -> str:
    if "imed out" not in reason:
        return ""
    seconds = distributed.timeout().total_seconds()
    return (f". If a process was only slow, allow more than {seconds:g} s with "
            f"{distributed.TIMEOUT_ENV}")


def _finish(plan: Plan, run: RunDir, splits: Splits, history: list[dict[str, Any]],
            hub: Events) -> TrainResult:
    cfg = plan.config
    best, best_card, test = evaluate_test(plan, run, splits.test, splits.val, splits.train)
    hub.emit(Tested(run.root, test))
    run.remove_stale_files()
    if cfg.keep_checkpoint:
        run.mark_ended()
    else:  # the run has ended: nothing is left to resume
        freed = run.drop_checkpoint()
        if freed:
            log.info(f"dropped the training state ({human_size(freed)}; --keep-checkpoint "
                     "keeps it)")
    if cfg.plots:
        _write_report(run, best, best_card, splits, test)
    log.info(f"done: {run.root} ({human_size(run.size_bytes())})")
    return TrainResult(run.root, history, test, cfg)


def _write_report(run: RunDir, model: torch.nn.Module, card: ModelCard, splits: Splits,
                test: Result | None) -> None:
    """Plots and report.html from what training has in memory (a few seconds).

    The run's model and metrics are already saved; a failure here is reported as a
    warning with the command that retries it, rather than losing the finished run.
    """
    from cnnkit.inspect.report import write_run_report

    try:
        report = write_run_report(run, model=model, card=card, splits=splits, test=test)
    except Exception as exc:
        log.warn(f"could not write the plots and report ({type(exc).__name__}: {exc}); "
                 f"retry with: cnnkit report {run.root}")
        return
    log.info(f"report: {report.html} ({len(report.plots)} plots in {report.seconds:.1f}s)")


def _samples(splits: Splits, n: int = 16) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """The first ``n`` training images in a seeded order, for a tracker to show."""
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[:n]
    return splits.train.images[order].cpu(), splits.train.labels[order].cpu(), splits.classes






def _short(model: str) -> str:
    name = Path(model).stem if model.endswith((".yaml", ".yml")) else model
    return name if len(name) <= 24 else "custom"


def _split_rows(part: Any) -> list[list[Any]]:
    # Absolute paths: `cnnkit evaluate` finds the test files from any working directory.
    # Multi-label data: each file's label indices (none for an image with no label).
    if part.multilabel:
        return [[os.path.abspath(p), [int(k) for k in (y > 0.5).nonzero().flatten().tolist()]]
                for p, y in zip(part.paths, part.labels)]
    return [[os.path.abspath(p), int(y)] for p, y in zip(part.paths, part.labels.tolist())]
