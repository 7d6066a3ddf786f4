"""Data-parallel training on PyTorch's own engine: torchrun's processes, one per device.

A run is started by ``torchrun`` (or ``cnnkit train --devices N``, which runs it for
you): each process reads its rank from the environment torchrun sets, joins the
process group (NCCL on GPUs, gloo on CPUs) and trains a replica of the model wrapped
in ``DistributedDataParallel`` on its own shard of every batch. :class:`Cluster` is
decided once, at start, and says who this process is; rank 0 is the only one that
writes files or prints (the others only compute).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError

TIMEOUT_ENV = "CNNKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800  # gloo's own default; a lost peer is usually seen at once anyway


@dataclass(frozen=True)
class Cluster:
    """Who this process is in a run: ``rank`` of ``world`` processes (1: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Whether this process creates the run folder, writes its files and prints:
        rank 0 of a distributed run, or the only process."""
        return self.rank == 0


SINGLE = Cluster()


def from_env() -> Cluster:
    """The rank, world size and local rank that torchrun set (one process without them)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise CnnkitError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (torchrun "
                          "sets them); unset them to train in one process.") from None
    return Cluster(rank, world, local) if world > 1 else SINGLE


def timeout() -> timedelta:
    """How long a collective waits for the other processes before failing the run."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise CnnkitError(f"{TIMEOUT_ENV} takes the seconds a process waits for the others "
                          f"(e.g. 600). Received: {raw!r}")
    return timedelta(seconds=seconds)


def start(device: str) -> Cluster:
    """Join the process group torchrun prepared; ``device`` is the run's ``--device``.

    Idempotent within a process. GPUs: NCCL, one device per local rank; else gloo.
    Only rank 0 prints from here on.
    """
    cluster = from_env()
    log.set_rank(cluster.rank)
    if not cluster.distributed:
        return cluster
    gpu = device != "cpu" and not device.startswith("mps") and torch.cuda.is_available()
    if gpu:
        if cluster.local_rank >= torch.cuda.device_count():
            raise CnnkitError(f"process {cluster.rank} has local rank {cluster.local_rank}, "
                              f"and PyTorch sees {torch.cuda.device_count()} GPU(s) here: start "
                              "at most one process per GPU (--nproc-per-node).")
        torch.cuda.set_device(cluster.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo", timeout=timeout())
    return cluster


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(cluster: Cluster, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a small picklable object made by cnnkit itself)."""
    if not cluster.distributed:
        return value
    box = [value]
    try:
        dist.broadcast_object_list(box, src=0)
    except RuntimeError as exc:
        if not peer_lost(exc):
            raise
        raise CnnkitError(f"process {cluster.rank} of {cluster.world} lost the others before "
                          f"training began ({str(exc).strip()[:200]}); start the run again."
                          ) from None
    return box[0]


@contextlib.contextmanager
def rank_zero_first(cluster: Cluster) -> Iterator[None]:
    """Rank 0 runs the block first and the others after it (to read what it left, a
    filled cache, instead of making it again); in one process, just the block."""
    if cluster.distributed and not cluster.writes:
        broadcast(cluster, None)  # wait for rank 0's block
    yield
    if cluster.distributed and cluster.writes:
        broadcast(cluster, None)


def all_sum(cluster: Cluster, *values: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor summed over the ranks (one collective for all of them)."""
    if not cluster.distributed:
        return list(values)
    flat = torch.stack([v.detach().double().reshape(()) for v in values])
    if dist.get_backend() == "nccl":
        flat = flat.to(torch.device("cuda", torch.cuda.current_device()))
    else:
        flat = flat.cpu()
    dist.all_reduce(flat)
    return list(flat.cpu().unbind())


def any_rank(cluster: Cluster, flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (they all agree, so that none waits for the
    others)."""
    if not cluster.distributed:
        return flag
    (count,) = all_sum(cluster, torch.tensor(int(flag), device=device))
    return bool(count.item())


def rank_mean(cluster: Cluster, value: float, device: torch.device) -> float:
    """The mean of every process's ``value`` (so that all agree)."""
    if not cluster.distributed:
        return value
    (mean,) = all_sum(cluster, torch.tensor(value, device=device))
    return mean.item() / cluster.world


def log_shard(cluster: Cluster, global_epoch: int, drawn: list[torch.Tensor]) -> None:
    """With CNNKIT_SHARD_LOG=DIR (a debugging aid): which training images this rank drew
    in this epoch (``drawn``: the loader's index batches), one JSON line per epoch in
    DIR/rank<N>.jsonl."""
    folder = os.environ.get("CNNKIT_SHARD_LOG")
    if not folder:
        return
    line = {"epoch": global_epoch, "rank": cluster.rank, "world": cluster.world,
            "pid": os.getpid(),
            "indices": torch.cat(drawn).tolist() if drawn else []}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank{cluster.rank}.jsonl"), "a") as fh:
        fh.write(json.dumps(line) + "\n")


def wrap(model: nn.Module, cluster: Cluster, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (which first copies rank 0's weights and
    buffers to every rank), for the parameters that train in this phase."""
    if not cluster.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Batch norm layers that compute their statistics over the whole global batch."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another process stopped or
    timed out (gloo and NCCL raise RuntimeErrors naming themselves)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        k in text for k in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset",
                            "Timed out", "timed out", "ProcessGroup"))
