"""A full disk while saving: one clear line, no half-written file left; stale temporary
files from a killed run are removed when it resumes or finishes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnnkit
from cnnkit.base.atomic import atomic_path

# A file-size limit makes every write past 64 KB fail as a full disk does, in a child
# process only (SIGXFSZ ignored so the write returns an error instead of killing it).
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
from cnnkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


# The same limit, set only once the first checkpoint is saved: the disk fills in epoch 2.
LIMITED_AFTER_FIRST_CHECKPOINT = """
import resource, signal, sys
from cnnkit.training import checkpoint, loop
save = checkpoint.save_checkpoint
def save_then_fill(*args, **kwargs):
    save(*args, **kwargs)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
loop.save_checkpoint = save_then_fill
from cnnkit.cli import main
sys.exit(main(sys.argv[1:]))
"""
TRAIN = ["train", "shapes:size=16,count=60", "--model", "conv16k3-pool2-dense64",
         "--no-plots", "--device", "cpu", "--name", "full"]


def _run(script: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                          text=True, env={**os.environ, "CNNKIT_CACHE": str(tmp_path / "c")},
                          timeout=300)


def _one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "SafetensorError" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the disk is full while writing" in errors[0], done.stderr
    return errors[0]


def test_a_full_disk_before_the_first_checkpoint_says_to_run_again(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    error = _one_error(_run(LIMITED, tmp_path, *TRAIN, "--epochs", "1", "--out", str(runs)))
    assert "safetensors" in error and "nothing is saved to resume" in error
    assert "run the same command again" in error and "--resume" not in error
    assert not list(runs.rglob("*.tmp")), "the temporary file must be removed"


def test_a_full_disk_after_a_checkpoint_says_to_resume_and_resume_finishes(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    error = _one_error(_run(LIMITED_AFTER_FIRST_CHECKPOINT, tmp_path, *TRAIN, "--epochs", "3",
                            "--out", str(runs)))
    assert "epoch 1 (the last finished) is saved" in error
    assert f"continue with: cnnkit train --resume {runs / 'full'}" in error
    assert not list(runs.rglob("*.tmp"))
    resumed = cnnkit.resume(runs / "full")
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]


def test_atomic_writes_raise_an_io_failure_inside_a_writer_as_os_error(tmp_path: Path) -> None:
    class WriterError(Exception):
        pass

    target = tmp_path / "x.bin"
    try:
        with atomic_path(target):
            raise WriterError("Error while serializing: I/O error: No space (os error 28)")
    except OSError as exc:
        assert exc.errno == 28 and exc.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_files_are_removed_on_resume(tmp_path: Path) -> None:
    def stop(trainer, row) -> None:
        raise KeyboardInterrupt

    options = {"model": "conv4k3-pool2-dense8", "epochs": 2, "batch_size": 16,
               "plots": False, "device": "cpu", "out": str(tmp_path / "runs"), "name": "r"}
    with pytest.raises(KeyboardInterrupt):
        cnnkit.train("shapes:size=12,count=60", callbacks=[stop], **options)
    run = tmp_path / "runs" / "r"
    stale = [run / ".metrics.csv.abc123.tmp", run / "checkpoints" / ".last.safetensors.x.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    cnnkit.resume(run)
    assert not any(p.exists() for p in stale)
    assert not list(run.rglob("*.tmp"))


def test_a_full_disk_before_training_starts_says_to_run_again(tmp_path: Path) -> None:
    from tests.conftest import write_shapes_tree

    data = write_shapes_tree(tmp_path / "data", per_class=12, size=32)  # decoded: 110 KB
    error = _one_error(_run(LIMITED, tmp_path, "train", str(data), "--img-size", "32",
                            "--model", "conv4k3-pool2-dense8", "--out", str(tmp_path / "runs")))
    assert ".npy" in error and "training had not started" in error and "--resume" not in error
