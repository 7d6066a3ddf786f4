"""Training a decided plan in its run folder (:func:`fit_run`): the features mode's
solve, or the linear probe and the loop's epochs (what a resumed run has left of them),
then, on the process that writes, the test, the tidy end and the report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnkit.artifacts.modelfile import ModelCard
from cnnkit.artifacts.rundir import RunDir, human_size
from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.sources import Splits
from cnnkit.tasks.base import Result
from cnnkit.training import distributed, features, transfer
from cnnkit.training.chance import chance_line, near_chance
from cnnkit.training.events import Events, Tested
from cnnkit.training.finish import evaluate_test
from cnnkit.training.hyperparams import keeps_best
from cnnkit.training.loop import Trainer
from cnnkit.training.planner import Decided
from cnnkit.training.recipe import Plan
from cnnkit.training.stopped import on_full_disk, what_to_do

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


def fit_run(decided: Decided, run: RunDir, resume: dict[str, Any] | None,
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
    hub.emit(Tested(run.root, test, at_chance=_at_chance(plan, run, splits, history)))
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


def _at_chance(plan: Plan, run: RunDir, splits: Splits, history: list[dict[str, Any]]
               ) -> str:
    """The line that says the kept model scores at chance on validation, or ""."""
    task, val = plan.task, splits.val
    chance = task.chance(val.labels) if val is not None and len(val) else None
    value = _kept_figure(plan, run, history, len(val) if val is not None else 0)
    if chance is None or value is None or not near_chance(value, chance, len(val)):
        return ""
    return chance_line(task.figure_name, value, chance, len(splits.classes), plan.config,
                       history)


def _kept_figure(plan: Plan, run: RunDir, history: list[dict[str, Any]], val_images: int
                 ) -> float | None:
    """The kept model's validation figure: a trained start's when the run kept it
    (kept.json), else the best or the last epoch's, as the run keeps."""
    key = f"val_{plan.task.figure}"
    rows = [row for row in history if row.get(key) is not None]
    if not rows:
        return None
    kept = run.root / "kept.json"
    if kept.is_file():
        import json

        record = json.loads(kept.read_text())
        if record.get("kept") == "start":
            return record.get(key)
    cfg = plan.config
    if cfg.mode != "features" and keeps_best(cfg.keep, val_images, cfg.patience):
        # the loop's rule: the higher figure, then the lower loss; the first of equals
        return max(rows, key=lambda r: (r[key], -r.get("val_loss", 0.0)))[key]
    return rows[-1][key]


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
