"""``cnnkit train --devices N``: the same command in N processes on this machine, started
by PyTorch's own launcher (``torch.distributed.run``, the code behind ``torchrun``).

Each process runs ``python -m cnnkit`` with the same arguments; torchrun's environment
(``RANK``, ``WORLD_SIZE``, ...) tells it that it is one of N, so it trains instead of
launching again. Runs over several machines use ``torchrun`` itself (README).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from pathlib import Path

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError

RUN_FILE_ENV = "CNNKIT_LAUNCH_RUN_FILE"  # where rank 0 tells the launcher its run folder
STARTED_ENV = "CNNKIT_LAUNCH_STARTED"  # when the command started (time.time()): --time's start


def under_torchrun() -> bool:
    """Whether this process is one of torchrun's workers."""
    return "LOCAL_WORLD_SIZE" in os.environ and "RANK" in os.environ


def check_devices(devices: int, device: str) -> bool:
    """Whether ``--devices`` asks for a launch here (False: one process, or already a
    worker of torchrun); a count that cannot be met is one clear line."""
    if devices < 1:
        raise CnnkitError(f"--devices takes how many processes to train with (1 or more). "
                          f"Received: {devices}")
    if under_torchrun():
        local = int(os.environ["LOCAL_WORLD_SIZE"])
        if devices not in (1, local):
            raise CnnkitError(f"--devices {devices} disagrees with torchrun's --nproc-per-node "
                              f"{local}: drop --devices when starting cnnkit with torchrun.")
        return False
    if devices == 1:
        return False
    import torch

    if device not in ("cpu",) and not device.startswith("mps") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if devices > gpus:
            raise CnnkitError(f"--devices {devices} asks for one process per GPU, and PyTorch "
                              f"sees {gpus} GPU(s): use --devices {gpus} or fewer (or --device "
                              "cpu for CPU processes).")
    elif device not in ("auto", "cpu"):
        raise CnnkitError(f"--devices runs one process per GPU or several on the CPU; "
                          f"--device {device} is neither. Use --device cpu or cuda.")
    return True


def launched(devices: int, device: str, mode: str | None, argv: list[str],
             started: float | None = None) -> int | None:
    """``--devices N``: run ``cnnkit <argv>`` in N processes and return their exit status;
    None when this process trains by itself (one device, or it is one of the N already).
    What cannot be distributed says so before any process starts."""
    if devices > 1 and mode == "features" and not under_torchrun():
        raise CnnkitError(f"--mode features fits its head in one solve on one process, so it "
                          f"cannot use {devices} processes: drop --devices (or use --mode "
                          "fine-tune).")
    if not check_devices(devices, device):
        return None
    import torch

    return launch(devices, argv, cpu=device == "cpu" or not torch.cuda.is_available(),
                  started=started)


def launch(devices: int, argv: list[str], *, cpu: bool, started: float | None = None) -> int:
    """Run ``cnnkit <argv>`` in ``devices`` processes; returns the exit status.

    On the CPU each process gets an equal share of the cores as its torch threads
    (``OMP_NUM_THREADS``, unless already set), so N processes use the machine as one did.
    ``started``: when the command started (``time.time()``), where --time counts from.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    env_before = dict(os.environ)
    if cpu and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // devices))
    for name in ("torch.distributed.elastic", "torch.distributed.run",
                 "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # our one line instead of its logs
    with tempfile.TemporaryDirectory(prefix="cnnkit-launch-") as tmp:
        run_file = Path(tmp) / "run"
        os.environ[RUN_FILE_ENV] = str(run_file)
        os.environ[STARTED_ENV] = str(started if started is not None else time.time())
        os.environ[log.RANK_ERRORS_ENV] = tmp
        args = parse_args(["--standalone", "--nnodes", "1", "--nproc-per-node", str(devices),
                           "--max-restarts", "0", "--module", "cnnkit", *argv])
        try:
            run(args)
            return 0
        except ChildFailedError as exc:
            return _explain(exc, devices, _read(run_file), Path(tmp))
        except (SignalException, KeyboardInterrupt):
            log.error(f"interrupted; the {devices} processes were stopped."
                      + _resume_hint(_read(run_file), devices))
            return 130
        finally:
            os.environ.clear()
            os.environ.update(env_before)


def budget_start() -> float:
    """When a torchrun worker's --time began on its monotonic clock: when the launching
    command started, else now."""
    now = time.monotonic()
    try:
        return now - max(0.0, time.time() - float(os.environ[STARTED_ENV]))
    except (KeyError, ValueError):
        return now


def announce_run(root: Path) -> None:
    """Rank 0: tell the launcher (if any) the run folder, for its resume hint."""
    target = os.environ.get(RUN_FILE_ENV)
    if target:
        Path(target).write_text(str(root))


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _resume_hint(run: str | None, devices: int) -> str:
    if run is None:
        return ""
    from cnnkit.artifacts.rundir import RunDir
    from cnnkit.training.stopped import what_to_do

    advice = what_to_do(RunDir(run), f"cnnkit train --resume {run} --devices {devices}")
    return f" {advice[0].upper()}{advice[1:]}."


def _explain(exc: Exception, devices: int, run: str | None, errors: Path) -> int:
    """One line for a failed worker. Rank 0 prints its own errors (a mistake in the
    options or the data fails every rank alike: said once, whichever rank stopped
    first); another rank's is shown from its file."""
    failures = getattr(exc, "failures", {})
    rank, first = min(failures.items(), key=lambda kv: kv[1].timestamp)
    code = first.exitcode
    if code == 2 and 0 in failures and failures[0].exitcode == 2:
        return 2
    said = _read(errors / f"rank{rank}.txt")
    if code == 2 and said is not None and said == _read(errors / "rank0.txt"):
        return 2  # rank 0 printed the same line already
    if code == 2 and said:
        log.error(f"(process {rank} of {devices}) {said}")
        return 2
    if code < 0:
        try:
            how = f"was stopped by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was stopped by signal {-code}"
    else:
        how = f"failed with exit status {code} (its error is above)"
    log.error(f"process {rank} of {devices} {how}, so the others were stopped."
              + _resume_hint(run, devices))
    return 2 if code == 2 else 1
