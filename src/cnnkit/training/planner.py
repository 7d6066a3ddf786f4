"""The one place a run's plan is decided: :func:`decide`.

Every way into training calls it once, with the config it was given, and passes down
what it returns, frozen: ``cnnkit train`` and ``cnnkit.train`` (and so the studio's
worker, each ``--devices N`` process and each Ray worker), ``--resume``, ``cnnkit
lr-find`` and the studio's estimate. Nothing below re-derives a part of the plan.

In order: ``--init-from``'s options, what the options decide
(:func:`~cnnkit.training.recipe.resolve_config`), the data loaded, what needs the data
(:func:`~cnnkit.training.recipe.finalize`, the task the labels pose), a new model (or a
resumed run's weights), then the cost: the estimate, ``--time``'s epochs and input side
(at another side the data is loaded again) and its deadline, ``--imbalance``'s weights
and ``--lr find``'s rate.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from cnnkit.artifacts.modelfile import ModelCard, find_sidecar, load_model, load_state, read_card
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.sources import Splits, load_run_splits
from cnnkit.models.build import create_model
from cnnkit.tasks.registry import get_task
from cnnkit.training import distributed
from cnnkit.training.estimate import (
    Costs,
    announce,
    deadline,
    fit_time,
    resume_budget,
    with_epochs,
)
from cnnkit.training.events import Events, Planned
from cnnkit.training.lrfind import LRFinding, run_rate
from cnnkit.training.precheck import check_data, check_memory, check_model_size
from cnnkit.training.recipe import Plan, finalize, resolve_config
from cnnkit.training.split_checks import check_held_out, check_same_split
from cnnkit.training.transfer import check_unfreeze


@dataclass(frozen=True)
class Restart:
    """A stopped run's saved state, for ``--resume``: its folder, its model card, and the
    weights and progress of its last checkpoint."""

    run: RunDir
    card: ModelCard
    model_state: dict[str, Any]
    meta: dict[str, Any]


@dataclass(frozen=True)
class Decided:
    """The plan and what it was decided with: the loaded data, the model to train (new,
    an ``--init-from`` run's, or a resumed run's), its model card, ``--imbalance``'s loss
    and sampling weights (None: not weighed that way), and ``--lr find``'s range test
    (None without it)."""

    plan: Plan
    splits: Splits
    model: torch.nn.Module
    card: ModelCard
    class_weights: torch.Tensor | None = None
    sample_weights: torch.Tensor | None = None
    finding: LRFinding | None = None


def decide(config: TrainConfig, cluster: distributed.Cluster = distributed.SINGLE, *,
           started: float | None = None, events: Events | None = None,
           restart: Restart | None = None, cost: bool = True, find: bool = True,
           planned: Planned | None = None) -> Decided:
    """The run's plan, decided once.

    ``started``: where ``--time`` counts from on the ``time.monotonic()`` clock (None:
    from when the cost is taken, once the data is loaded). ``events``: the hub that
    hears the estimate. ``restart``: a resumed run's saved state (its plan is its saved
    config and card's, its weights the checkpoint's; the estimate and the budget are for
    the epochs left). ``cost``: time the run, fit ``--time`` and say the estimate
    (``cnnkit lr-find`` does not). ``find``: run ``--lr find``'s range test (the studio's
    estimate does not). ``planned``: an estimate already measured (:func:`announced`).
    """
    hub = events if events is not None else Events()
    config, card = _init_from(config) if restart is None else (config, restart.card)
    plan, splits, model = _prepared(config, card, cluster, restart)
    if cost and not (restart is None and announced(planned, plan, splits, hub)):
        plan, splits, model = _costed(config, card, plan, splits, model, started, hub, restart)
    class_weights, sample_weights = imbalance(plan, splits)
    if plan.config.imbalance == "auto":  # config.json records what trains, as for --keep
        ran = "weighted-loss" if class_weights is not None else "none"
        plan = replace(plan, config=plan.config.replace(imbalance=ran))
    finding = None
    if cost and find and plan.find_lr:
        plan, finding = run_rate(plan, model, splits, class_weights)
    cfg = plan.config
    saved = restart.card if restart is not None else ModelCard(
        plan.arch, splits.classes, plan.pre,
        {"mode": cfg.mode, "data": cfg.data, "model": cfg.model,
         **({"init_from": cfg.init_from} if cfg.init_from else {})}, task=plan.task)
    return Decided(plan, splits, model, saved, class_weights, sample_weights, finding)


def _prepared(config: TrainConfig, card: ModelCard | None, cluster: distributed.Cluster,
              restart: Restart | None, budget_size: int | None = None
              ) -> tuple[Plan, Splits, torch.nn.Module]:
    """The plan, the loaded data and the model. ``card``: the --init-from or resumed
    run's. ``budget_size``: the input side --time chose (the data was checked at the
    first). A resumed run's plan was checked and finalized when it started."""
    plan = resolve_config(config, card, cluster=cluster, budget_size=budget_size)
    for line in plan.notes:
        log.info(line)
    if restart is None:
        check_model_size(plan)
        if cluster.writes and budget_size is None:  # the audit keeps an index in the cache
            check_data(plan)
    torch.manual_seed(plan.config.seed)
    # The run's splits; in a distributed run rank 0 decodes (and fills the cache) first,
    # then the others read what it left, so no two processes decode the same files.
    with distributed.rank_zero_first(cluster):
        splits = load_run_splits(plan.config, plan.pre, plan.source)
    if restart is None:
        plan = finalize(_task_of(plan, splits, card), splits)
        check_memory(plan)
    model = _model(plan, splits, card, restart)
    if restart is None:  # before any run folder: one line, not a run that ignores it
        check_unfreeze(model, plan.config, plan.arch.name)
    _drop_path(model, plan.config)
    if restart is not None:
        log.info(f"resuming {restart.run.root} after epoch {len(restart.meta['history'])}")
    return plan, splits, model


def _model(plan: Plan, splits: Splits, card: ModelCard | None, restart: Restart | None
           ) -> torch.nn.Module:
    """A resumed run's model with its checkpoint's weights, an --init-from run's model,
    or a new one."""
    pre = plan.pre
    if restart is not None and splits.classes != restart.card.classes:
        raise CnnkitError(f"The data's classes have changed since {restart.run.root} "
                          "started; start a new run instead of --resume.")
    if restart is not None:
        check_same_split(restart.run, splits)
    if card is not None and restart is None:
        model = _initial_model(plan, card, splits)
    else:
        # Build the model first: one that cannot be built must not leave an empty run folder.
        # A resumed run's starts from its checkpoint, not from pretrained weights.
        fresh = restart is None
        model = create_model(plan.arch, plan.task.outputs(splits.classes), pre.channels,
                             pre.img_size, pretrained=fresh and plan.config.mode != "scratch",
                             weights=plan.config.weights if fresh else None)
        if restart is not None:
            load_state(model, restart.model_state, str(restart.run.checkpoint_path))
            return model
    log.info(f"model: {plan.arch.name}, {sum(p.numel() for p in model.parameters()):,} "
             "parameters for " + (log.plural(len(splits.classes), "label")
                                  if splits.train.multilabel
                                  else log.plural(len(splits.classes), "class", "classes")))
    return model


def _costed(config: TrainConfig, card: ModelCard | None, plan: Plan, splits: Splits,
            model: torch.nn.Module, started: float | None, hub: Events,
            restart: Restart | None) -> tuple[Plan, Splits, torch.nn.Module]:
    """Time a few real steps, fit --time (at another input side: the data again), say
    the estimate, and give the loop its deadline. A resumed run's estimate is for the
    epochs left, and its budget what is left of --time."""
    done = () if restart is None else epochs_done(plan, restart.meta)
    if restart is not None and _nothing_left(plan, restart.meta, done):
        return plan, splits, model  # the session says why
    started = time.monotonic() if started is None else started
    costs = Costs(plan, model, splits)
    if plan.config.time is not None and restart is None:
        line = size = epochs = None
        if plan.cluster.writes:  # rank 0 decides for all
            fitted, line = fit_time(plan, costs, started)
            size, epochs = fitted.pre.img_size, fitted.config.epochs
        size, epochs, line = distributed.broadcast(plan.cluster, (size, epochs, line))
        log.info(line)
        if size != plan.pre.img_size:
            plan, splits, model = _prepared(config, card, plan.cluster, None, budget_size=size)
            costs = Costs(plan, model, splits)
        plan = with_epochs(plan, epochs)
    est = costs.estimate(plan, done, probe=restart is None)
    if plan.cluster.writes:
        hub.emit(announce(plan, costs, est, done))
    if restart is not None:
        return resume_budget(plan, restart.meta["history"], started, est), splits, model
    if plan.config.time is not None:
        plan = replace(plan, deadline=deadline(plan, est, started))
    return plan, splits, model


def announced(planned: Planned | None, plan: Plan, splits: Splits, hub: Events) -> bool:
    """Announce ``planned`` (an estimate :func:`~cnnkit.training.session.plan` measured
    moments ago, the studio's Train tab) instead of timing steps again, if it describes
    ``plan`` on ``splits``: the same mode, model, device, input side, epochs, classes
    and image counts. Whether it did; never for --time (its budget needs the rates) nor
    a distributed run."""
    if planned is None or plan.config.time is not None or plan.cluster.distributed:
        return False
    cfg = plan.config
    epochs = cfg.epochs if cfg.mode == "features" else sum(p.epochs for p in plan.phases)
    sizes = {"train": len(splits.train), "val": len(splits.val) if splits.val else 0,
             "test": len(splits.test) if splits.test else 0}
    same = (planned.mode, planned.model, planned.device, planned.img_size, planned.epochs,
            dict(planned.images), tuple(planned.classes)) == (
        cfg.mode, str(cfg.model), str(plan.device), plan.pre.img_size, epochs, sizes,
        tuple(splits.classes))
    if same and plan.cluster.writes:
        hub.emit(planned)
    return same


def _nothing_left(plan: Plan, meta: dict[str, Any], done: tuple[int, ...]) -> bool:
    """Whether a checkpoint's run has no epoch left to train (or stopped early)."""
    left = [p.epochs - d for p, d in zip(plan.phases, done)]
    return bool(meta.get("stopped_early")) or not any(e > 0 for e in left)


def epochs_done(plan: Plan, meta: dict[str, Any]) -> tuple[int, ...]:
    """Epochs a checkpoint has trained in each phase."""
    phases = plan.phases
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
    check_held_out(first, splits, plan.config)
    model, _ = load_model(first, plan.device)
    log.info(f"init: the weights of {first} ({init.info.get('mode', 'a run')} of "
             f"{plan.config.model}); input {plan.pre.img_size}x{plan.pre.img_size}x"
             f"{plan.pre.channels} as there")
    return model



def _drop_path(model: torch.nn.Module, cfg: TrainConfig) -> None:
    if cfg.drop_path:
        from cnnkit.models.droppath import set_drop_path

        blocks = set_drop_path(model, cfg.drop_path)
        log.info(f"drop-path: {blocks} residual blocks skipped at random while training, "
                 f"at rates rising to {cfg.drop_path:g}")



def imbalance(plan: Plan, splits: Splits
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
