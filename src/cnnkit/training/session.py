"""``train`` and ``resume``: from a config to a finished run folder."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from cnnkit.artifacts.modelfile import ModelCard, find_sidecar, load_model, load_state, read_card
from cnnkit.artifacts.rundir import RunDir, check_folder, human_size
from cnnkit.artifacts.runlock import RunLock, locked
from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.sources import Splits, load_run_splits
from cnnkit.models.build import create_model
from cnnkit.tasks.base import Result
from cnnkit.tasks.registry import get_task
from cnnkit.training import budget, distributed, features, transfer
from cnnkit.training.checkpoint import load_checkpoint
from cnnkit.training.console import ConsoleProgress
from cnnkit.training.events import Events, Planned, RunEnded, RunFailed, RunStarted, Tested
from cnnkit.training.finish import evaluate_test
from cnnkit.training.launch import announce_run, budget_start, under_torchrun
from cnnkit.training.loop import Trainer
from cnnkit.training.lrfind import TRAIN_PICK, LRFinding, check_range, find_lr, plot_finding, report
from cnnkit.training.precheck import check_data, check_memory, check_model_size
from cnnkit.training.recipe import Plan, finalize, resolve_config, with_epochs
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


def _as_config(config: TrainConfig | str | None, options: dict[str, Any]) -> TrainConfig:
    """The config a ``train``/``lr_find`` call means: a data name, a config, or options."""
    if isinstance(config, str):
        return TrainConfig.from_dict({"data": config, **options})
    if config is None:
        return TrainConfig.from_dict(options)
    return config.replace(**options) if options else config


def train(config: TrainConfig | str | None = None, /, *, callbacks: Sequence[Callback] = (),
          events: Events | None = None, started: float | None = None,
          **options: Any) -> TrainResult:
    """Train a model. ``train("fashion-mnist", model="seed-cnn", epochs=3)``.

    ``callbacks`` are called as ``callback(trainer, row)`` after every epoch, where
    ``row`` is that epoch's metrics (add keys to it and they land in metrics.csv).
    ``events``: an :class:`~cnnkit.training.events.Events` hub that hears the run's
    events (the plan, steps, epochs, best model, end or error) and can stop it.
    ``started``: where a ``time`` budget counts from on the ``time.monotonic()`` clock
    (the command's start; default: this call, or under torchrun the launcher's start).
    """
    if started is None:
        started = budget_start() if under_torchrun() else time.monotonic()
    config = _as_config(config, options)
    check_installed(config.track)
    check_folder(config.out, "--out")
    hub = _hub(events)
    where: list[Path] = []  # the run folder, once there is one
    with _reporting(hub, where):
        cluster = distributed.start(config.device)  # under torchrun: join the others
        with on_full_disk(None):  # the decode cache, the run folder's first files
            plan, splits, model = _prepare(config, cluster)
            plan, splits, model = _cost(config, plan, splits, model, started, hub)
            cfg, pre = plan.config, plan.pre
            card = ModelCard(plan.arch, splits.classes, pre,
                             {"mode": cfg.mode, "data": cfg.data, "model": cfg.model,
                              **({"init_from": cfg.init_from} if cfg.init_from else {})},
                             task=plan.task)
            run, plan = _create_run(plan, splits, model)
        where.append(run.root)
        hub.emit(RunStarted(run.root))
        with lock_run(run, plan.cluster), on_full_disk(run):
            _describe_cluster(plan)
            if cluster.writes:  # trackers log from the writing process only
                hub.subscribe(Trackers(run, plan.config, samples=_samples(splits)))
            result = _fit_run(plan, splits, model, card, run, None, callbacks, hub)
        hub.emit(RunEnded(run.root, result.history, result.test,
                          time.monotonic() - started))
    distributed.stop()
    return result


def plan(config: TrainConfig | str | None = None, /, *, events: Events | None = None,
         **options: Any) -> Planned:
    """What :func:`train` would do with these options and how long it would take here,
    without training: the data is loaded and a few steps timed, as ``train`` does before
    its first epoch (the same estimate line), and no run folder is written."""
    config = _as_config(config, options)
    hub = _hub(events)
    found: list[Planned] = []
    hub.subscribe(lambda e: found.append(e) if isinstance(e, Planned) else None)
    with _reporting(hub, []):
        prepared, splits, model = _prepare(config)
        _cost(config, prepared, splits, model, time.monotonic(), hub)
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


def _create_run(plan: Plan, splits: Splits, model: torch.nn.Module) -> tuple[RunDir, Plan]:
    """The run folder, made and filled by the one process that writes (rank 0 of a
    distributed run); the others learn its path (and --lr find's rate) and never write
    to it."""
    cfg = plan.config
    root = lr = None
    if plan.cluster.writes:
        # --lr find runs before the run folder exists: a finder that fails leaves none
        finding = _find(plan, splits, model) if plan.find_lr else None
        run = RunDir.create(cfg.out, cfg.name or f"{splits.source.name}-{_short(cfg.model)}")
        if finding is not None:
            plan = _use_finding(plan, finding, run)
            cfg = plan.config
        run.write_config({**cfg.to_dict(), "data": plan.source.run_spec()})
        run.write_classes(splits.classes)
        files = splits.files()
        if files:
            write_json(run.split_path, {"classes": list(splits.classes),
                                        **{k: _split_rows(getattr(splits, k)) for k in files}})
        log.info(f"run: {run.root}")
        announce_run(run.root)
        root, lr = str(run.root), cfg.lr
    root, lr = distributed.broadcast(plan.cluster, (root, lr))
    if plan.find_lr and not plan.cluster.writes:
        plan = replace(plan, config=cfg.replace(lr=lr))
    return RunDir(root), plan


def _load(plan: Plan) -> Splits:
    """The run's splits; in a distributed run rank 0 decodes (and fills the cache) first,
    then the others read what it left, so no two processes decode the same files."""
    cluster = plan.cluster
    if cluster.distributed and not cluster.writes:
        distributed.broadcast(cluster, None)  # wait for rank 0's splits
    splits = load_run_splits(plan.config, plan.pre, plan.source)
    if cluster.distributed and cluster.writes:
        distributed.broadcast(cluster, None)
    return splits


def _describe_cluster(plan: Plan) -> None:
    cluster, cfg = plan.cluster, plan.config
    if not cluster.distributed:
        return
    where = f"{plan.device.type.upper()}s" if plan.device.type == "cuda" else "the CPU"
    log.info(f"distributed: {cluster.world} processes on {where} "
             f"({'NCCL' if plan.device.type == 'cuda' else 'gloo'}); global batch "
             f"{cfg.batch_size} = {cfg.batch_size // cluster.world} per process, lr {cfg.lr:g}; "
             f"sync-bn {'on' if plan.sync_bn else 'off'}")


def _prepare(config: TrainConfig, cluster: distributed.Cluster = distributed.SINGLE,
             budget_size: int | None = None) -> tuple[Plan, Splits, torch.nn.Module]:
    """The plan, the loaded data and a new model: everything before the run folder.
    ``budget_size``: the input side --time chose (the data was checked at the first)."""
    config, init = _init_from(config)
    plan = resolve_config(config, init, cluster=cluster, budget_size=budget_size)
    for line in plan.notes:
        log.info(line)
    check_model_size(plan)
    if cluster.writes and budget_size is None:  # the audit keeps an index in the cache
        check_data(plan)
    torch.manual_seed(plan.config.seed)
    splits = _load(plan)
    plan = finalize(_task_of(plan, splits, init), splits)
    check_memory(plan)
    cfg, pre = plan.config, plan.pre
    if init is not None:
        model = _initial_model(plan, init, splits)
    else:
        # Build the model first: one that cannot be built must not leave an empty run folder.
        model = create_model(plan.arch, plan.task.outputs(splits.classes), pre.channels,
                             pre.img_size, pretrained=cfg.mode != "scratch", weights=cfg.weights)
    log.info(f"model: {plan.arch.name}, {sum(p.numel() for p in model.parameters()):,} "
             f"parameters for {len(splits.classes)} classes")
    _drop_path(model, cfg)
    return plan, splits, model


def _cost(config: TrainConfig, plan: Plan, splits: Splits, model: torch.nn.Module,
          started: float, hub: Events) -> tuple[Plan, Splits, torch.nn.Module]:
    """Time a few real steps, fit --time (at another input side: the data again), say
    the estimate, and give the loop its deadline."""
    costs = budget.Costs(plan, model, splits)
    if plan.config.time is not None:
        line = size = epochs = None
        if plan.cluster.writes:  # rank 0 decides for all
            fitted, line = budget.fit(plan, costs, started)
            size, epochs = fitted.pre.img_size, fitted.config.epochs
        size, epochs, line = distributed.broadcast(plan.cluster, (size, epochs, line))
        log.info(line)
        if size != plan.pre.img_size:
            plan, splits, model = _prepare(config, plan.cluster, budget_size=size)
            costs = budget.Costs(plan, model, splits)
        plan = with_epochs(plan, epochs)
    est = costs.estimate(plan)
    if plan.cluster.writes:
        hub.emit(budget.announce(plan, costs, est))
    if plan.config.time is not None:
        plan = replace(plan, deadline=budget.deadline(plan, est, started))
    return plan, splits, model


def _cost_left(plan: Plan, splits: Splits, model: torch.nn.Module, meta: dict[str, Any],
               started: float, hub: Events) -> Plan:
    """--resume: the estimate of the epochs left, and what is left of --time."""
    done = _epochs_done(plan, meta)
    left = [p.epochs - d for p, d in zip(transfer.phases(plan), done)]
    if meta.get("stopped_early") or not any(e > 0 for e in left):
        return plan  # nothing to resume: _fit_run says why
    costs = budget.Costs(plan, model, splits)
    est = costs.estimate(plan, done, probe=False)
    if plan.cluster.writes:
        hub.emit(budget.announce(plan, costs, est, done))
    return budget.resume_budget(plan, meta["history"], started, est)


def _epochs_done(plan: Plan, meta: dict[str, Any]) -> tuple[int, ...]:
    """Epochs a checkpoint has trained in each phase."""
    phases = transfer.phases(plan)
    at, epoch = meta["phase"], meta["epoch_in_phase"] + 1
    return tuple(p.epochs if i < at or (i == at and meta.get("phase_done")) else
                 epoch if i == at else 0 for i, p in enumerate(phases))


def _init_from(config: TrainConfig) -> tuple[TrainConfig, ModelCard | None]:
    """--init-from RUN: that run's model card, and the options it implies (its model; no
    probe or head-only epochs, since its head is trained). Conflicting options fail here,
    before any image is loaded."""
    if config.init_from is None:
        return config, None
    first = config.init_from
    card, _ = read_card(first)
    folder = RunDir(find_sidecar(first).parent)
    model = (folder.read_config().get("model") if folder.config_path.is_file() else None) \
        or card.architecture.name
    if config.model not in (None, model):
        raise CnnkitError(f"--init-from {first} starts from its {model}, and --model asks for "
                          f"{config.model}. Drop --model: the architecture comes from the run.")
    if config.mode == "features":
        raise CnnkitError("--mode features fits a new head to a frozen backbone; to use a "
                          f"run's backbone there, pass --weights {first}/model.safetensors "
                          "instead of --init-from.")
    if config.weights:
        raise CnnkitError("--weights and --init-from both give the starting weights; "
                          "pass one of them.")
    pre = card.preprocess
    for name, value in (("img_size", pre.img_size), ("channels", pre.channels)):
        if getattr(config, name) not in (None, value):
            raise CnnkitError(f"--init-from {first} was trained at {name.replace('_', ' ')} "
                              f"{value}; drop --{name.replace('_', '-')} (its weights fit "
                              "that input).")
    head_epochs = 0 if config.head_epochs is None else config.head_epochs
    return config.replace(model=model, probe=False, head_epochs=head_epochs,
                          init_from=os.path.abspath(first)), card


def _task_of(plan: Plan, splits: Splits, init: ModelCard | None) -> Plan:
    """The plan with the task its data poses: label sets per image are multi-label. An
    --init-from model must have been trained for the same kind of labels."""
    multi = splits.train.multilabel
    if init is None:  # the source's task, unless its labels turn out to be label sets
        return replace(plan, task=get_task("multi-label")) if multi and (
            plan.task.name != "multi-label") else plan
    if multi != (init.task.name == "multi-label"):
        data, first = plan.config.data, plan.config.init_from
        if multi:
            raise CnnkitError(f"{data} is multi-label data (a set of labels per image) and "
                              f"--init-from {first} is a single-label model: it answers one "
                              "class per image. Start anew without --init-from, or give "
                              "each image one class.")
        raise CnnkitError(f"{data} gives one class per image and --init-from {first} is a "
                          "multi-label model; train it on multi-label data (a CSV of "
                          "'path,labels' rows, labels separated by '|'), or start anew.")
    return plan


def _initial_model(plan: Plan, init: ModelCard, splits: Splits) -> torch.nn.Module:
    """The --init-from run's model, once its classes are checked against the data's."""
    first = plan.config.init_from
    if init.classes != splits.classes:
        extra = sorted(set(splits.classes) - set(init.classes))
        gone = sorted(set(init.classes) - set(splits.classes))
        why = "; ".join(filter(None, (
            f"the data adds {', '.join(extra)}" if extra else "",
            f"the data lacks {', '.join(gone)}" if gone else "",
            "the same classes in another order" if not extra and not gone else "")))
        raise CnnkitError(f"--init-from {first} was trained on other classes ({why}); its "
                          "weights start only a run on the same classes. Train on the same "
                          "data, or start anew without --init-from.")
    model, _ = load_model(first, plan.device)
    log.info(f"init: the weights of {first} ({init.info.get('mode', 'a run')} of "
             f"{plan.config.model}); input {plan.pre.img_size}x{plan.pre.img_size}x"
             f"{plan.pre.channels} as there")
    return model


def lr_find(config: TrainConfig | str | None = None, /, *, plot: str | Path | None = None,
            steps: int = 100, start: float = 1e-7, end: float = 10.0,
            **options: Any) -> LRFinding:
    """The learning-rate range test for the model and data a ``train`` call would use:
    ``lr_find("digits", model="lenet5", plot="lr.png").suggestion()`` (None when the
    curve is too short or noisy to trust: ``.doubt`` says why). Writes no run folder."""
    check_range(start, end, steps)
    config = _as_config(config, options)
    plan, splits, model = _prepare(config)
    class_weights, _ = _imbalance(plan, splits)
    finding = find_lr(plan, model, splits, start=start, end=end, steps=steps,
                      class_weights=class_weights)
    report(finding)
    if plot is not None:
        plot_finding(finding, plot, f"Learning-rate range test: {plan.config.model} on "
                     f"{splits.source.name}")
    return finding


def _find(plan: Plan, splits: Splits, model: torch.nn.Module) -> LRFinding:
    class_weights, _ = _imbalance(plan, splits)
    finding = find_lr(plan, model, splits, class_weights=class_weights)
    report(finding)
    return finding


def _use_finding(plan: Plan, finding: LRFinding, run: RunDir) -> Plan:
    """--lr find: the range test's suggestion becomes the run's peak rate; a curve too
    short or noisy to trust leaves the default rate, and says so."""
    suggested = finding.suggestion()
    write_json(run.root / "lr_find.json",
               {"picked": TRAIN_PICK if suggested is not None else "default",
                **finding.to_dict()})
    plot_finding(finding, run.plots_dir / "lr_find.png")
    if suggested is None:
        log.info(f"--lr find: the curve is {finding.doubt}; training at the default rate, "
                 f"{plan.config.lr:g} (curve: {run.plots_dir / 'lr_find.png'})")
        return plan
    lr = float(f"{suggested:.3g}")
    log.info(f"--lr find: training at the finder's {TRAIN_PICK} suggestion, {lr:g} "
             f"(the default would be {plan.config.lr:g})")
    return replace(plan, config=plan.config.replace(lr=lr))


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
    cluster = distributed.start(cfg.device)
    plan = resolve_config(cfg, card, cluster=cluster)
    torch.manual_seed(cfg.seed)
    splits = _load(plan)
    if splits.classes != card.classes:
        raise CnnkitError(f"The data's classes have changed since {run.root} started; "
                          "start a new run instead of --resume.")
    model = create_model(plan.arch, card.task.outputs(card.classes), plan.pre.channels,
                         plan.pre.img_size)
    load_state(model, model_state, str(run.checkpoint_path))
    _drop_path(model, cfg)
    done = sum(1 for _ in meta["history"])
    check_installed(cfg.track)
    log.info(f"resuming {run.root} after epoch {done}")
    plan = _cost_left(plan, splits, model, meta, started, hub)
    if cluster.writes:
        announce_run(run.root)
    hub.emit(RunStarted(run.root, resuming=True))
    _describe_cluster(plan)
    if cluster.writes:
        hub.subscribe(Trackers(run, cfg, resuming=True))
    return _fit_run(plan, splits, model, card, run,
                    {"meta": meta, "optimizer": optim_state, "rng": rng, "average": average},
                    (), hub)


def _fit_run(plan: Plan, splits: Splits, model: torch.nn.Module, card: ModelCard,
             run: RunDir, resume: dict[str, Any] | None, callbacks: Sequence[Callback],
             hub: Events) -> TrainResult:
    """Train, then (on the writing process) test and report."""
    with on_full_disk(run):
        history = _train_epochs(plan, splits, model, card, run, resume, callbacks, hub)
    if not plan.cluster.writes:
        return TrainResult(run.root, history, None, plan.config)  # rank 0 tests and reports
    with on_full_disk(run, trained=True):
        return _finish(plan, run, splits, history, hub)


def _train_epochs(plan: Plan, splits: Splits, model: torch.nn.Module, card: ModelCard,
                  run: RunDir, resume: dict[str, Any] | None, callbacks: Sequence[Callback],
                  hub: Events) -> list[dict[str, Any]]:
    """Every epoch still to train (none when a resumed run had trained them all but was
    stopped before its end: it is tested and reported now); returns the history."""
    cfg = plan.config
    class_weights, sample_weights = _imbalance(plan, splits)
    if cfg.mode == "features":

        return features.fit(plan, model, splits, card, run, class_weights, hub)
    phases = transfer.phases(plan)
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


def _all_trained(meta: dict[str, Any], phases: list[transfer.Phase]) -> bool:
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
    best, best_card, test = evaluate_test(plan, run, splits.test, splits.val)
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


def _drop_path(model: torch.nn.Module, cfg: TrainConfig) -> None:
    if cfg.drop_path:
        from cnnkit.models.droppath import set_drop_path

        blocks = set_drop_path(model, cfg.drop_path)
        log.info(f"drop-path: {blocks} residual blocks skipped at random while training, "
                 f"at rates rising to {cfg.drop_path:g}")


def _imbalance(plan: Plan, splits: Splits
               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(loss weights, sampling weights) for --imbalance, as the task weighs its targets."""
    train = splits.train
    counts = torch.tensor(plan.task.class_counts(train.labels, len(train.classes)),
                          dtype=torch.float)
    how = plan.config.imbalance
    ratio = (counts.max() / counts.clamp(min=1).min()).item()
    if how == "auto":
        how = "weighted-loss" if ratio >= 3 else "none"
        if how != "none":
            log.info(f"classes are imbalanced (largest {int(counts.max())}, smallest "
                      f"{int(counts.min())} images): using a class-weighted loss "
                      "(--imbalance to change)")
    return plan.task.balance(train.labels, counts, how)


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
