"""Training on a Ray cluster: the same run as ``cnnkit train --devices N``, its processes
placed by Ray Train's ``TorchTrainer`` (docs/design-notes.md, "Ray").

Ray Train starts the workers, sets the environment torchrun would set (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``...) and joins them in a process group; each worker then
runs :func:`cnnkit.training.session.train` unchanged: the same loop, the same sharding of
every global batch, rank 0 alone writing the run folder where the user asked. When a
worker dies, Ray Train starts the group again and the workers continue the run from its
last finished epoch (:func:`cnnkit.training.session.resume`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.ray.cluster import connect, resources

MAX_FAILURES = 2  # restarts of the worker group after a worker dies
VISIBLE = ("the run folder and the data must be on a filesystem that every node sees "
           "(NFS, a mounted bucket): pass --out and DATA there")


def train(config: TrainConfig | str, *, workers: int | None = None,
          address: str | None = None, cpus_per_worker: float | None = None,
          gpus: bool | None = None, max_failures: int = MAX_FAILURES,
          **options: Any) -> Path:
    """Train ``config`` (or a data name with ``options``) on ``workers`` Ray workers
    (default: one per GPU of the cluster, else one per node); returns the run folder."""
    config = _absolute(TrainConfig.of(config, options))
    return _run(config.to_dict(), None, workers, address, cpus_per_worker, gpus, max_failures)


def resume(run_dir: str | os.PathLike, *, workers: int | None = None,
           address: str | None = None, cpus_per_worker: float | None = None,
           gpus: bool | None = None, max_failures: int = MAX_FAILURES) -> Path:
    """Continue a stopped run (from any launcher) on the cluster."""
    from cnnkit.artifacts.rundir import RunDir

    run = RunDir.open(run_dir)
    saved = TrainConfig.from_dict(run.read_config())
    return _run(saved.to_dict(), str(run.root.absolute()), workers, address, cpus_per_worker,
                gpus, max_failures)


def _absolute(config: TrainConfig) -> TrainConfig:
    """Paths as every worker reads them, whatever its working folder."""
    changes: dict[str, Any] = {"out": os.path.abspath(os.path.expanduser(config.out))}
    for field in ("data", "weights", "init_from"):
        value = getattr(config, field)
        if isinstance(value, str) and os.path.exists(os.path.expanduser(value)):
            changes[field] = os.path.abspath(os.path.expanduser(value))
    return config.replace(**changes)


def _placement(ray: Any, workers: int | None, cpus_per_worker: float | None,
               gpus: bool | None) -> tuple[int, float, bool]:
    cpus, gpu_count = resources(ray)
    if gpus is None:
        gpus = gpu_count >= 1
    if gpus and gpu_count < 1:
        raise CnnkitError("--device cuda asks for GPU workers, and the Ray cluster has no "
                          "GPU; use --device cpu (or auto).")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = min((n["Resources"].get("CPU", 0.0) for n in nodes), default=cpus) or 1.0
    if workers is None:
        workers = int(gpu_count) if gpus else max(1, len(nodes))
    if workers < 1:
        raise CnnkitError(f"--workers takes how many training processes to start (1 or "
                          f"more). Received: {workers}")
    if cpus_per_worker is None:
        cpus_per_worker = 1.0 if gpus else max(1.0, float(int(min(node_cpus,
                                                                   cpus / workers))))
    return workers, cpus_per_worker, bool(gpus)


def _run(config: dict[str, Any], run: str | None, workers: int | None, address: str | None,
         cpus_per_worker: float | None, gpus: bool | None, max_failures: int) -> Path:
    ray = connect(address, log_to_driver=True)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if gpus is None and config.get("device", "auto") != "auto":
        gpus = config["device"] != "cpu"
    n, cpus, use_gpu = _placement(ray, workers, cpus_per_worker, gpus)
    if n > 1 and config.get("mode") == "features":
        raise CnnkitError(f"--mode features fits its head in one solve on one process, so it "
                          f"cannot use {n} workers: use --workers 1 (or --mode fine-tune).")
    out = Path(run).parent if run else Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    board = out / f".cnnkit-ray-{uuid.uuid4().hex[:12]}"  # where rank 0 names its run
    board.write_text(run or "")
    job = {"config": config, "board": str(board), "device": "cuda" if use_gpu else "cpu",
           "given": run}
    trainer = TorchTrainer(
        _worker, train_loop_config=job,
        scaling_config=ScalingConfig(num_workers=n, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=f"cnnkit-{board.name[12:]}",
                             storage_path=str(out / ".ray"),
                             failure_config=FailureConfig(max_failures=max_failures)))
    each = "1 GPU" if use_gpu else f"{cpus:g} CPU"
    log.info(f"training on Ray: {log.plural(n, 'worker')} ({each} each)")
    try:
        trainer.fit()
    except Exception as exc:
        if not type(exc).__module__.startswith("ray"):
            raise
        raise CnnkitError(_failed(exc, board, n, address)) from None
    finally:
        said = _read(board)
        board.unlink(missing_ok=True)
        Path(f"{board}.error").unlink(missing_ok=True)
        shutil.rmtree(out / ".ray", ignore_errors=True)
    if not said:
        raise CnnkitError(f"The Ray workers finished without naming a run folder in {out}: "
                          f"{VISIBLE}.")
    return Path(said)


def _read(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else ""


def _failed(exc: BaseException, board: Path, workers: int, address: str | None) -> str:
    said = _read(Path(f"{board}.error"))
    reason = said or " ".join(str(exc).split())[:300]
    run = _read(board)
    where = f" {address}" if address else ""
    hint = (f" The last finished epoch is saved; continue with: cnnkit train --resume {run} "
            f"--ray{where} --workers {workers}" if run else "")
    return f"Training on Ray failed: {reason}.{hint}"


def _worker(job: dict[str, Any]) -> None:
    """One Ray Train worker: train, or continue the run that an earlier attempt of this
    job started (after a worker died), as every rank agrees from rank 0's reading."""
    import torch.distributed as dist

    from cnnkit.training import session
    from cnnkit.training.launch import RUN_FILE_ENV

    board = Path(job["board"])
    rank = int(os.environ.get("RANK", "0"))
    try:
        if not board.is_file():
            raise CnnkitError(f"worker {rank} on {os.uname().nodename} cannot see "
                              f"{board.parent}: {VISIBLE}.")
        os.environ[RUN_FILE_ENV] = str(board)  # rank 0 writes its run folder there
        decision = [_decide(board, job["given"]) if rank == 0 else None]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast_object_list(decision, src=0)
        run = decision[0]
        if run is not None:
            session.resume(run)
        else:
            config = TrainConfig.from_dict({**job["config"], "device": job["device"]})
            session.train(config)
    except CnnkitError as exc:
        error = Path(f"{board}.error")
        if not error.is_file():
            with contextlib.suppress(OSError):
                error.write_text(str(exc))
        raise


def _decide(board: Path, given: str | None) -> str | None:
    """Rank 0: the run folder to continue, or None to start one. A folder that an earlier
    attempt of this job made but that has no finished epoch is removed (it holds nothing
    to keep); a run the user asked to resume is always resumed."""
    from cnnkit.artifacts.rundir import RunDir

    run = _read(board)
    if not run:
        return None
    if run == given:
        return run
    root = RunDir(run)
    if root.checkpoint_path.is_file() or root.model_path.is_file():
        return run
    log.warn(f"{run} has no finished epoch to continue from; starting it again")
    shutil.rmtree(run, ignore_errors=True)
    board.write_text("")
    return None
