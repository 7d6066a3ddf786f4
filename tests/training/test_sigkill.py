"""SIGKILL at random moments, several times: every checkpoint left behind loads, and the
run resumed to the end is bit-identical to one that was never interrupted."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.training.checkpoint import load_checkpoint

DATA = "shapes:size=12,count=60"
OPTIONS = {"model": "conv4k3-pool2-drop0.2-dense8", "epochs": 8, "batch_size": 16,
           "augment": "flip+crop", "plots": False, "device": "cpu", "keep_checkpoint": True}
METRICS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
CTX = multiprocessing.get_context("fork")  # torch is already imported: a child starts at once


def _train(out: str) -> None:
    cnnkit.train(DATA, out=out, name="killed", **OPTIONS)


def _resume(run: str) -> None:
    cnnkit.resume(run)


def _kill_after_a_checkpoint(target, arg: str, checkpoint: Path, delay: float) -> int | None:
    """Start ``target(arg)``, SIGKILL it ``delay`` s after it saves its next checkpoint."""
    before = checkpoint.stat().st_mtime_ns
    child = CTX.Process(target=target, args=(arg,))
    child.start()
    while child.exitcode is None and checkpoint.stat().st_mtime_ns == before:
        time.sleep(0.002)
    child.join(delay)
    if child.exitcode is None:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        return None
    return child.exitcode


def test_random_sigkills_never_break_a_run(tmp_path: Path) -> None:
    rng = random.Random(21)
    whole = cnnkit.train(DATA, out=str(tmp_path / "whole"), name="whole", **OPTIONS)
    # Each kill lands a random part of an epoch after a checkpoint was saved, so every
    # resume makes progress and the kills land while the run trains, on any machine.
    epoch = float(_metrics(whole.run_dir)[-1]["elapsed_s"]) / OPTIONS["epochs"]
    run = tmp_path / "runs" / "killed"
    checkpoint = run / "checkpoints" / "last.safetensors"
    child = CTX.Process(target=_train, args=(str(tmp_path / "runs"),))
    child.start()
    while not checkpoint.exists() and child.exitcode is None:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.9) * epoch)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    kills, finished = 1, False
    while kills < 5 and not finished:
        load_checkpoint(checkpoint)  # whole after every kill, whatever it was writing
        code = _kill_after_a_checkpoint(_resume, str(run), checkpoint,
                                        rng.uniform(0, 0.9) * epoch)
        finished = code == 0
        kills += 0 if finished else 1
    assert kills >= 2, "the kills must land while the run is still training"
    if not finished:
        load_checkpoint(checkpoint)
        cnnkit.resume(run)
    assert not list(run.rglob("*.tmp")) and not (run / ".lock").exists()
    ours, theirs = load_file(run / "model.safetensors"), load_file(whole.run_dir /
                                                                   "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert [{k: r[k] for k in METRICS} for r in _metrics(run)] == \
        [{k: r[k] for k in METRICS} for r in _metrics(whole.run_dir)]


def _metrics(run: Path) -> list[dict[str, str]]:
    from cnnkit.artifacts.rundir import RunDir

    return RunDir(run).read_metrics()


def _train_killed_once_written(out: str, what: str, epoch: int) -> None:
    """Train, SIGKILLing this process the moment epoch ``epoch``'s ``what`` is written."""
    from cnnkit.training import loop

    original = {"model": loop.save_model, "checkpoint": loop.save_checkpoint,
                "metrics": loop.RunDir.write_metrics}[what]
    calls = []

    def write_then_die(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    if what == "metrics":
        loop.RunDir.write_metrics = write_then_die
    else:
        setattr(loop, f"save_{what}", write_then_die)
    cnnkit.train(DATA, out=out, name="killed", **{**OPTIONS, "epochs": 2, "keep": "last"})


@pytest.mark.parametrize("what, epoch", [("model", 1), ("model", 2), ("checkpoint", 1),
                                         ("checkpoint", 2), ("metrics", 1), ("metrics", 2)])
def test_a_kill_the_moment_an_epoch_s_file_lands_resumes(tmp_path: Path, what: str,
                                                         epoch: int) -> None:
    """Whatever the epoch wrote last, what the run folder claims is there to resume from:
    metrics.csv never records an epoch whose checkpoint is not on disk."""
    child = CTX.Process(target=_train_killed_once_written,
                        args=(str(tmp_path / "runs"), what, epoch))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    run = tmp_path / "runs" / "killed"
    recorded = len(_metrics(run))
    if (what, epoch) == ("model", 1):  # no epoch ended: nothing claims one did
        assert recorded == 0
        with pytest.raises(CnnkitError, match="stopped before its first epoch ended"):
            cnnkit.resume(run)
        return
    saved = load_checkpoint(run / "checkpoints" / "last.safetensors")[2]["history"]
    assert len(saved) >= recorded  # an epoch in metrics.csv is an epoch in the checkpoint
    resumed = cnnkit.resume(run)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    whole = cnnkit.train(DATA, out=str(tmp_path / "whole"), name="whole",
                         **{**OPTIONS, "epochs": 2, "keep": "last"})
    ours, theirs = load_file(run / "model.safetensors"), load_file(whole.run_dir /
                                                                   "model.safetensors")
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert [{k: r[k] for k in METRICS} for r in _metrics(run)] == \
        [{k: r[k] for k in METRICS} for r in _metrics(whole.run_dir)]
