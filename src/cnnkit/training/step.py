"""One training step, as the loop takes it, the estimate times it and the learning-rate
finder drives it: :class:`TrainStep`.

A step of a phase is: the phase's optimizer over its parameter groups, the train mode it
trains in (frozen batch norm kept in eval), a batch cut into chunks on a CPU (not while
batch norm computes batch statistics, where chunks would change them), autocast, the
task's loss summed over the batch's own denominator with its gradients accumulated chunk
by chunk (the same gradients as one pass), loss scaling for fp16, and the optimizer's
step. The loop adds what only a run has around it (the schedule's rate, the weight
average, the processes of a distributed run).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from cnnkit.base.errors import CnnkitError
from cnnkit.runtime.inference import autocast, chunk_size
from cnnkit.training import distributed
from cnnkit.training.optim import set_lr
from cnnkit.training.recipe import Plan
from cnnkit.training.transfer import Phase


class TrainStep:
    """A phase's step on ``model``: built once per phase, called once per batch.

    ``class_weights``: the loss's (``--imbalance``); ``lr``: the optimizer's first rate
    (the phase's peak when None); ``scaler``: the run's loss scaler (a new one when None:
    enabled for fp16 only); ``forward``: what the batch goes through (``model``, or the
    loop's compiled or distributed wrapper of it; :attr:`ddp` is that wrapper, whose
    gradients cross the processes once per step).
    """

    def __init__(self, plan: Plan, model: nn.Module, phase: Phase, *,
                 class_weights: torch.Tensor | None = None, lr: float | None = None,
                 scaler: torch.amp.GradScaler | None = None,
                 forward: nn.Module | None = None) -> None:
        cfg = plan.config
        self.plan = plan
        self.model = model
        self.phase = phase
        self.device = plan.device
        self.groups = phase.prepare(model)
        self.optimizer = build_optimizer(self.groups, cfg.optimizer,
                                         phase.lr if lr is None else lr, self.device)
        self.weight = None if class_weights is None else class_weights.to(self.device)
        # fp16 gradients underflow without loss scaling (bf16 and fp32 need none)
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler(
            self.device.type, enabled=cfg.precision == "fp16")
        self.forward: nn.Module = forward if forward is not None else model
        self.ddp: nn.Module | None = None
        self.chunk = cfg.batch_size

    def train(self) -> None:
        """The phase's train mode (again each epoch: validation leaves the model in eval),
        and the chunks it allows: a batch at a time while batch norm computes batch
        statistics, else cache-sized pieces on a CPU."""
        set_train_mode(self.model, self.phase.bn_eval)
        batch = self.plan.config.batch_size
        batch_stats = any(m.training for m in self.model.modules()
                          if isinstance(m, nn.modules.batchnorm._BatchNorm))
        self.chunk = batch if batch_stats else chunk_size(
            self.device, self.plan.pre.img_size, batch, training=True)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on the batch ``(x, y)`` at rate ``lr`` (None: as it is): its logits
        and mean loss, detached."""
        if lr is not None:
            set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        logits, loss = self.forward_backward(x, y)
        self.scaler.step(self.optimizer)  # optimizer.step(), skipped on fp16 overflow
        self.scaler.update()
        return logits, loss

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and mean loss of a batch, with its gradients accumulated chunk by chunk:
        the same gradients as one pass (sums over the batch's own denominator), faster
        on a CPU where a few large images' activations fit in cache."""
        cfg, task, weight, cluster = self.plan.config, self.plan.task, self.weight, \
            self.plan.cluster
        denom = task.loss_denominator(y, weight)
        if self.ddp is not None and isinstance(denom, torch.Tensor):
            # DistributedDataParallel averages the ranks' gradients: divide by the global
            # batch's weight per rank, so their average is the global weighted mean's
            denom = (distributed.all_sum(cluster, denom)[0] / cluster.world).to(
                device=x.device, dtype=torch.float32)
        outs, total = [], torch.zeros((), device=x.device)
        pieces = list(zip(x.split(self.chunk), y.split(self.chunk)))
        for k, (xs, ys) in enumerate(pieces):
            # Gradients cross the processes once per step: with the last chunk's backward
            quiet = self.ddp is not None and k < len(pieces) - 1
            with self.ddp.no_sync() if quiet else contextlib.nullcontext():  # type: ignore[union-attr]
                with autocast(self.device, cfg.precision):
                    logits = self.forward(xs)
                    loss = task.loss(logits, ys, weight=weight, reduction="sum",
                                     smoothing=cfg.label_smoothing) / denom
                self.scaler.scale(loss).backward()
            outs.append(logits.detach())
            total += loss.detach()
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), total


def build_optimizer(groups: list[dict], name: str, lr: float, device: torch.device
                    ) -> torch.optim.Optimizer:
    if not groups:
        raise CnnkitError("Nothing to train: every parameter of the model is frozen.")
    fused = device.type == "cuda"
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    raise CnnkitError(f"Unknown optimizer {name!r}; use adamw or sgd.")


def set_train_mode(model: nn.Module, bn_eval: bool = False) -> None:
    """Train mode, except batch norm layers whose parameters are frozen stay in eval
    (all of them with ``bn_eval``: their affine parameters still train)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            own = list(m.parameters(recurse=False))
            if bn_eval or (own and not any(p.requires_grad for p in own)):
                m.eval()
