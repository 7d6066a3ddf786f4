"""A run's folder as training starts: a new run's made and filled by the process that
writes (rank 0 of a distributed run), its path told to the other processes and to the
launcher, locked for the run's length and watched by the trackers (:func:`started_run`).
A resumed run takes its lock (:func:`lock_run`) before its plan is decided, so that a
second ``--resume`` of it stops at once."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from cnnkit.artifacts.rundir import RunDir
from cnnkit.artifacts.runlock import RunLock, locked
from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.base.config import duration_text
from cnnkit.training import distributed
from cnnkit.training.events import Events, RunStarted
from cnnkit.training.launch import announce_run
from cnnkit.training.lrfind import record_finding
from cnnkit.training.planner import Decided
from cnnkit.training.recipe import Plan
from cnnkit.training.stopped import on_full_disk
from cnnkit.training.tracking import Trackers

SAMPLES = 16  # training images a tracker shows (TensorBoard), the first in a seeded order
SHORT_NAME = 24  # a model name longer than this is "custom" in the run folder's name


@contextlib.contextmanager
def started_run(decided: Decided, hub: Events, trackers: tuple[str, ...],
                where: list[Path]) -> Iterator[RunDir]:
    """A new run's folder, locked by the writing process until the block ends, with the
    ``trackers`` (as :func:`~cnnkit.training.tracking.check_installed` found them)
    subscribed to ``hub``; its path is added to ``where`` (for the error report) as soon
    as it exists. --lr find ran before: a finder that fails leaves no folder."""
    plan, splits = decided.plan, decided.splits
    cfg, cluster = plan.config, plan.cluster
    describe_cluster(plan)
    root = None
    with on_full_disk(None):  # the run folder's first files
        if cluster.writes:
            model = Path(cfg.model).stem if cfg.model.endswith((".yaml", ".yml")) else cfg.model
            model = model if len(model) <= SHORT_NAME else "custom"
            run = RunDir.create(cfg.out, cfg.name or f"{splits.source.name}-{model}")
            if decided.finding is not None:
                record_finding(decided.finding, run)
            # time as --time and --config take it, so the file repeats the run
            run.write_config({**cfg.to_dict(), "data": plan.source.run_spec(),
                              **({"time": duration_text(cfg.time)} if cfg.time else {})})
            run.write_classes(splits.classes)
            listing = splits.listing()
            if listing is not None:
                write_json(run.split_path, listing)
            log.info(f"run: {run.root}")
            if cfg.name and run.root.name != cfg.name:  # a script would look in out/name
                plain = Path(cfg.name).name == cfg.name and (Path(cfg.out) / cfg.name).exists()
                why = f"is taken in {cfg.out}" if plain else "is not a plain folder name"
                log.warn(f"--name {cfg.name!r} {why}: this run is {run.root}")
            announce_run(run.root)
            root = str(run.root)
        run = RunDir(distributed.broadcast(cluster, root))
    where.append(run.root)
    hub.emit(RunStarted(run.root))
    with lock_run(run, cluster), on_full_disk(run):
        if cluster.writes:  # trackers log from the writing process only
            train = splits.train
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
            samples = (train.images[order[:SAMPLES]].cpu(), train.labels[order[:SAMPLES]].cpu(),
                       splits.classes)
            hub.subscribe(Trackers(run, cfg, trackers, samples=samples))
        yield run


def describe_cluster(plan: Plan) -> None:
    """One line for a distributed run: its processes, backend, batch and rate."""
    cluster, cfg = plan.cluster, plan.config
    if not cluster.distributed:
        return
    where = f"{plan.device.type.upper()}s" if plan.device.type == "cuda" else "the CPU"
    log.info(f"distributed: {cluster.world} processes on {where} "
             f"({'NCCL' if plan.device.type == 'cuda' else 'gloo'}); global batch "
             f"{cfg.batch_size} = {cfg.batch_size // cluster.world} per process, lr {cfg.lr:g}; "
             f"sync-bn {'on' if plan.sync_bn else 'off'}")


def lock_run(run: RunDir, cluster: distributed.Cluster | None = None
             ) -> contextlib.AbstractContextManager[RunLock | None]:
    """The run folder's lock, taken by the one process that writes the run (rank 0 of a
    distributed run; the others take none) and held until the run ends. Another process
    that asks for it gets one line naming the holder."""
    cluster = cluster if cluster is not None else distributed.from_env()
    return locked(run.root) if cluster.writes else contextlib.nullcontext()
