"""The training loop: :class:`Trainer`, phases of epochs over resident, batch-augmented
data.

One loop serves every mode. A *phase* says which parameters train and at what
learning rate (scratch: one phase; fine-tune: head first, then the unfrozen base).
After every epoch the loop validates, saves the best model and an atomic checkpoint,
then rewrites metrics.csv, so a crash or Ctrl-C loses at most the epoch in progress.
Validation is :mod:`cnnkit.training.validation`'s, the phases' record (phases.json)
:mod:`cnnkit.training.phase_record`'s, and what a run from a trained start keeps
:mod:`cnnkit.training.trained_start`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.artifacts.modelfile import ModelCard, save_model
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.data.loader import BatchLoader, resident
from cnnkit.data.sources import Splits
from cnnkit.training import distributed
from cnnkit.training.checkpoint import save_checkpoint
from cnnkit.training.clock import PhaseClock
from cnnkit.training.divergence import diverged, finite_weights
from cnnkit.training.ema import WeightAverage
from cnnkit.training.events import (
    BestModel,
    EpochEnded,
    EpochStarted,
    Events,
    StepDone,
)
from cnnkit.training.hyperparams import keeps_best
from cnnkit.training.optim import lr_factor, warmup_fraction
from cnnkit.training.phase_record import record_phase
from cnnkit.training.recipe import Plan
from cnnkit.training.step import TrainStep
from cnnkit.training.trained_start import keep_start, settle
from cnnkit.training.transfer import Phase
from cnnkit.training.validation import validate, validate_shards


class Trainer:
    def __init__(self, plan: Plan, model: nn.Module, splits: Splits, card: ModelCard,
                 run: RunDir, phases: tuple[Phase, ...], class_weights: torch.Tensor | None = None,
                 sample_weights: torch.Tensor | None = None,
                 callbacks: Sequence[Callable[[Trainer, dict[str, Any]], None]] = (),
                 events: Events | None = None,
                 trained_start: str | None = None) -> None:
        self.plan = plan
        self.cfg = plan.config
        self.task = plan.task
        self.device = plan.device
        self.cluster = plan.cluster
        self.writes = plan.cluster.writes  # the one process that writes the run's files
        if plan.sync_bn and distributed.has_batchnorm(model):
            model = distributed.sync_batchnorm(model)
        self.model = model.to(self.device)
        if plan.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.card = card
        self.pre = card.preprocess
        self.run = run
        self.phases = phases
        self.splits = splits
        self.generator = torch.Generator().manual_seed(self.cfg.seed + 1)
        self.train_set = resident(splits.train, self.device)
        self.val_set = resident(splits.val, self.device) if splits.val is not None else None
        # Distributed: each rank validates its own slice; the sums are reduced.
        self.val_part = self.val_set
        if self.val_set is not None and self.cluster.distributed:
            slices = torch.arange(len(self.val_set)).tensor_split(self.cluster.world)
            self.val_part = self.val_set.subset(slices[self.cluster.rank])
        self.augment_generator: torch.Generator | None = None  # distributed: per rank
        self.class_weights = class_weights
        self.sample_weights = sample_weights
        self.callbacks = tuple(callbacks)
        self.events = events if events is not None else Events()
        self.asked_to_stop = False  # Events.request_stop(): the run ends after this epoch
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.stale_epochs = 0
        self.saved_epoch: int | None = None  # the epoch whose model the model file holds
        self.out_of_time = False  # --time: the phase in progress reached its deadline
        # A trained start (the linear probe's head, an --init-from run): what it scored on
        # validation before the first step, so the run can keep it if training does worse.
        self.trained_start = trained_start
        self.start: dict[str, Any] = {}
        val_images = len(self.val_set) if self.val_set is not None else 0
        self.keep_best = keeps_best(self.cfg.keep, val_images, self.cfg.patience)
        # --ema: the average is what is validated, saved as the model and tested
        self.average = WeightAverage(self.model, self.cfg.ema) if self.cfg.ema else None
        # fp16's loss scaling spans the phases' steps (the checkpoint keeps its state)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.cfg.precision == "fp16")
        self.forward: nn.Module = self.model
        if plan.compile and not self.cluster.distributed:
            self.forward = torch.compile(self.model)

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def loader(self) -> BatchLoader:
        return BatchLoader(self.train_set, self.pre, self.cfg.batch_size, self.device,
                           train=True, augment=self.plan.augment, generator=self.generator,
                           sample_weights=self.sample_weights,
                           channels_last=self.plan.channels_last,
                           shard=(self.cluster.rank, self.cluster.world),
                           augment_generator=self.augment_generator)

    def _seed_rank(self, global_epoch: int) -> None:
        """Distributed: every rank draws the same order (``self.generator``, saved in the
        checkpoint), but its own augmentation and dropout, seeded by epoch and rank so that
        a resumed run repeats them."""
        if not self.cluster.distributed:
            return
        seed = (self.cfg.seed * 1_000_003 + global_epoch) * 1_009 + self.cluster.rank
        self.augment_generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)

    def _wrap(self, step: TrainStep) -> None:
        """DistributedDataParallel over the parameters this phase trains (it copies rank 0's
        weights to the others first: after a probe fitted by rank 0 alone, its head)."""
        if not self.cluster.distributed:
            return
        step.ddp = distributed.wrap(self.model, self.cluster, self.device)
        step.forward = torch.compile(step.ddp) if self.plan.compile else step.ddp

    def fit(self, resume: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run every phase; ``resume`` is a loaded checkpoint to continue from."""
        start_phase, start_epoch, opt_state = 0, 0, None
        if resume is not None:
            meta = resume["meta"]
            self.history, self.best = meta["history"], meta["best"]
            self.stale_epochs = meta.get("stale_epochs", 0)
            if self.history:
                self.saved_epoch = (self.best or {}).get("epoch") if self.keep_best \
                    else self.history[-1]["epoch"]
            self.start = meta.get("start") or {}
            start_phase, start_epoch = meta["phase"], meta["epoch_in_phase"] + 1
            if start_epoch >= self.phases[start_phase].epochs or meta.get("phase_done"):
                start_phase, start_epoch = start_phase + 1, 0
            else:
                opt_state = resume["optimizer"]
            self.generator.set_state(resume["rng"]["data"])
            torch.set_rng_state(resume["rng"]["torch"])
            if meta.get("scaler"):
                self.scaler.load_state_dict(meta["scaler"])
            if self.average is not None and resume.get("average"):
                self.average.load_state_dict(resume["average"])
                self.average.steps = meta.get("ema_steps", 0)
        epoch_offset = sum(p.epochs for p in self.phases[:start_phase])
        for index in range(start_phase, len(self.phases)):
            phase = self.phases[index]
            step = TrainStep(self.plan, self.model, phase, class_weights=self.class_weights,
                             scaler=self.scaler, forward=self.forward)
            record_phase(self.run, index, phase, step.groups, self.model, self.cfg,
                         self._warmup(phase), self.events, len(self.phases), self.writes)
            self._wrap(step)  # distributed: every rank now holds rank 0's weights
            if resume is None and index == 0 and self.trained_start:
                self._measure_start()
            if opt_state is not None and index == start_phase:
                step.optimizer.load_state_dict(opt_state)
            first = start_epoch if index == start_phase else 0
            clock = self.plan.deadline.phase(index) if self.plan.deadline else None
            self.out_of_time = False
            for epoch in range(first, phase.epochs):
                stop = self._epoch(index, phase, epoch, epoch_offset + epoch + 1, step, clock)
                if stop and self.asked_to_stop:
                    log.info(f"stopped when asked, in epoch {epoch_offset + epoch + 1}; "
                             "keeping the best model so far")
                    return self.history
                if stop and not self.out_of_time:
                    log.info(f"early stopping: validation {self.task.figure_name} has not "
                             f"improved for {log.plural(self.cfg.patience, 'epoch')}")
                    self._settle()
                    return self.history
                if self.out_of_time:
                    log.info(f"--time: phase {phase.name} ended on the clock in epoch "
                             f"{epoch + 1} of {phase.epochs}, its learning rate annealed")
                    if stop:  # the run's end: compared with a trained start as any end is
                        self._settle()
                        return self.history
                    break
            epoch_offset += phase.epochs
        self._settle()
        return self.history

    def _measure_start(self) -> None:
        """Validate the trained start and keep its weights beside the checkpoint, so the end
        of the run can fall back on it."""
        if self.val_set is None:
            log.info(f"no validation split: the run cannot compare its end with its start "
                     f"({self.trained_start}), and keeps its end")
            return
        self.start = keep_start(self.model, self.card, self.run, self.trained_start,
                                self.task, self._validate(self.model), self.writes)

    def _settle(self) -> None:
        """A trained start: keep the better of the start and the end (:func:`settle`)."""
        settle(self.run, self.card, self.task, self.start, self.history, self.best,
               self.keep_best, self.writes)

    def _validate(self, kept: nn.Module) -> dict[str, float]:
        """Validation loss and the task's figure of ``kept`` (every rank's slice, when
        distributed)."""
        if self.cluster.distributed:
            return validate_shards(kept, self.val_part, self.pre, self.plan)
        return validate(kept, self.val_set, self.pre, self.plan)

    def _warmup(self, phase: Phase) -> float:
        return warmup_fraction(self.cfg.schedule, self.cfg.warmup_epochs, phase.epochs)

    def _epoch(self, phase_index: int, phase: Phase, epoch: int, global_epoch: int,
               step: TrainStep, clock: PhaseClock | None = None) -> bool:
        self._seed_rank(global_epoch)
        loader = self.loader()
        steps = len(loader)
        total_steps = steps * phase.epochs
        warmup = self._warmup(phase)
        step.train()
        phase_label = phase.name if len(self.phases) > 1 else ""
        task, figure = self.task, self.task.figure
        self.events.emit(EpochStarted(global_epoch, self.total_epochs, steps, phase_label,
                                      figure=figure))
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), device=self.device, dtype=torch.long)
        # the first step whose loss was not finite (0: none), kept on the device: read
        # only when the running loss, read at each sync, says there is one
        bad_step = torch.zeros((), device=self.device, dtype=torch.long)
        seen = units = synced = 0
        start = time.perf_counter()
        sync_every = 1 if self.device.type == "cpu" else 25
        lr = phase.lr
        for i, (x, y) in enumerate(loader):
            at = self._position(clock, epoch * steps + i, total_steps)
            if at >= total_steps and i > 0:  # --time: the phase's time is up
                self.out_of_time = True
                break
            if i > 0 and i % sync_every == 0 and self._stop_asked():
                self.asked_to_stop = True
                break
            lr = phase.lr * lr_factor(at, total_steps, self.cfg.schedule, warmup)
            logits, loss = step(x, y, lr)
            if self.average is not None:
                self.average.update(self.model)
            loss_sum += loss * len(y)
            hits += task.hits(logits, y)
            bad_step = torch.where((bad_step == 0) & ~loss.isfinite(), i + 1, bad_step)
            seen += len(y)
            units += task.units(y)
            if (i + 1) % sync_every == 0 or i + 1 == steps:
                synced = i + 1
                self._step(global_epoch, synced, steps, loss_sum, hits, seen, units, start)
                if not self.cluster.distributed:  # every process checks at the epoch's end
                    self._check_loss(loss_sum, global_epoch, bad_step, steps)
        if (self.out_of_time or self.asked_to_stop) and seen:
            self._step(global_epoch, synced, steps, loss_sum, hits, seen, units, start)
        if not self.asked_to_stop and self._stop_asked():  # asked in the epoch's last step
            self.asked_to_stop = True
        distributed.log_shard(self.cluster, global_epoch, loader.drawn)
        if self.cluster.distributed:  # the whole data's figures, not rank 0's share
            loss_sum, hits, total, counted = distributed.all_sum(
                self.cluster, loss_sum, hits, torch.tensor(seen), torch.tensor(units))
            seen, units = int(total.item()), int(counted.item())
        self._check_loss(loss_sum, global_epoch)
        kept = self.average.module if self.average is not None else self.model
        if not finite_weights(kept):  # the epoch's last step, after its loss was taken
            raise self._diverged("The weights became non-finite", f"in epoch {global_epoch}")
        train_time = time.perf_counter() - start
        row: dict[str, Any] = {
            # the rate of the epoch's last step: the one the schedule had reached
            "epoch": global_epoch, "phase": phase.name, "lr": float(f"{lr:.6g}"),
            "train_loss": loss_sum.item() / max(seen, 1),
            f"train_{figure}": hits.item() / max(units, 1),
        }
        t0 = time.perf_counter()
        if self.val_set is not None:
            row.update(self._validate(kept))
        eval_time = time.perf_counter() - t0
        elapsed = (self.history[-1]["elapsed_s"] if self.history else 0.0) + train_time
        row.update(train_time_s=train_time, eval_time_s=eval_time,
                   images_per_s=seen / train_time, elapsed_s=elapsed)
        self.history.append(row)
        improved = self._is_better(row)
        if improved:
            self.best = {"epoch": global_epoch, f"val_{figure}": row.get(f"val_{figure}"),
                         "val_loss": row.get("val_loss")}
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        stop = bool(self.cfg.patience and self.stale_epochs >= self.cfg.patience)
        if clock is not None and epoch + 1 < phase.epochs and \
                self._position(clock, 0, total_steps) >= total_steps:
            self.out_of_time = True  # validation used the phase's last seconds
        if self.out_of_time:
            stop = stop or phase_index == len(self.phases) - 1
        stop = stop or self.asked_to_stop
        if self.writes:
            if improved or not self.keep_best:
                save_model(kept, self.card, self.run.model_path)
                self.saved_epoch = global_epoch
                self.events.emit(BestModel(global_epoch, self.run.model_path,
                                           row.get(f"val_{figure}"), row.get("val_loss"),
                                           figure=figure))
            self._save(row, phase_index, epoch, step.optimizer, stop)
        why = ("asked" if self.asked_to_stop else "time" if self.out_of_time and stop
               else "early stopping" if stop else "")
        self.events.emit(EpochEnded(global_epoch, self.total_epochs, row, improved,
                                    stopping=why, figure=figure))
        return stop

    def _check_loss(self, loss_sum: torch.Tensor, epoch: int,
                    bad_step: torch.Tensor | None = None, steps: int = 0) -> None:
        """Stop the run when its training loss is no longer a finite number (``bad_step``:
        the first step whose loss was not, when this process knows it)."""
        value = loss_sum.item()
        if math.isfinite(value):
            return
        step = int(bad_step.item()) if bad_step is not None else 0
        where = f"at epoch {epoch}, step {step} of {steps}" if step else f"in epoch {epoch}"
        raise self._diverged(f"The training loss became {value}", where)

    def _diverged(self, what: str, where: str) -> Exception:
        return diverged(what, where, self.cfg, self.plan.asked, self.saved_epoch,
                        str(self.run.model_path))

    def _stop_asked(self) -> bool:
        """Whether :meth:`Events.request_stop` was called (in a distributed run, on any
        process: they all agree, so that none waits for the others)."""
        return distributed.any_rank(self.cluster, self.events.stop_requested, self.device)

    def _step(self, epoch: int, step: int, steps: int, loss_sum: torch.Tensor,
              hits: torch.Tensor, seen: int, units: int, start: float) -> None:
        """The running figures of the epoch so far (this process's loss and the task's
        figure, every process's images per second), to the subscribers (the progress bar)."""
        elapsed = time.perf_counter() - start
        self.events.emit(StepDone(epoch, step, steps, loss_sum.item() / seen,
                                  hits.item() / max(units, 1),
                                  seen * self.cluster.world / max(elapsed, 1e-9), elapsed))

    def _save(self, row: dict[str, Any], phase_index: int, epoch: int,
              optimizer: torch.optim.Optimizer, stop: bool) -> None:
        """Callbacks, the checkpoint, then metrics.csv: the writing process only (rank 0).

        The checkpoint is on disk (fsynced) before metrics.csv records the epoch, so a kill
        at any moment never leaves a record of an epoch that cannot be resumed from.
        """
        try:
            for callback in self.callbacks:
                callback(self, row)
        finally:  # a callback that stops the run (Ctrl-C, an exception) still leaves the
            # finished epoch saved, so --resume continues exactly from here
            save_checkpoint(self.run.checkpoint_path, self.model, optimizer,
                            {"phase": phase_index, "epoch_in_phase": epoch,
                             "history": self.history, "best": self.best,
                             "stale_epochs": self.stale_epochs, "stopped_early": stop,
                             "phase_done": self.out_of_time,
                             "out_of_time": self.out_of_time and stop,
                             "start": self.start,
                             "ema_steps": self.average.steps if self.average else 0,
                             "scaler": self.scaler.state_dict() if self.scaler.is_enabled()
                             else None},
                            {"data": self.generator},
                            average=self.average.module if self.average else None)
            self.run.write_metrics(self.history)

    def _position(self, clock: PhaseClock | None, step: int, total: int) -> float:
        """The schedule's step: ``step``, or with --time further on when the phase's clock
        is ahead (every process of a distributed run takes their mean, so all agree)."""
        if clock is None:
            return float(step)
        return distributed.rank_mean(self.cluster, clock.position(step, total), self.device)

    def _is_better(self, row: dict[str, Any]) -> bool:
        """A higher validation figure, or the same with a lower validation loss."""
        key = f"val_{self.task.figure}"
        if key not in row or not self.best:
            return True
        best, best_loss = self.best[key], self.best["val_loss"]
        return row[key] > best or (row[key] == best and row["val_loss"] < best_loss)
