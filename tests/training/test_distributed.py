"""Data-parallel training in 2 real processes (torchrun, gloo on the CPU).

One distributed run is killed after its first epoch (its rank 1 is SIGKILLed, as a
crashed machine would be) and resumed in 2 processes; the finished run is then checked
against the same training in 1 process. Augmentation and dropout are off and the model
has no batch norm, so 2 processes must reproduce 1 process's training up to the order
of floating-point sums: that checks the sharding, the gradient averaging and the
learning rate, not only that something trained.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cnnkit
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.data.imageset import ImageSet
from cnnkit.data.loader import BatchLoader
from cnnkit.data.pipeline import Preprocess
from cnnkit.training.distributed import Cluster
from cnnkit.training.recipe import resolve_config

DATA = "shapes:size=12,count=720"  # 648 training images: 18 global batches of 36
BATCH = 36
EPOCHS = 3
OPTIONS = ["--model", "conv8k3same-pool2-conv16k3same-pool2-gap", "--epochs", str(EPOCHS),
           "--batch-size", str(BATCH), "--augment", "none", "--device", "cpu", "--no-plots",
           "--seed", "3", "--lr", "0.02"]


def _cnnkit(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnkit", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _rows(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("ddp")
    shards = base / "shards"
    env = {**os.environ, "CNNKIT_SHARD_LOG": str(shards), "OMP_NUM_THREADS": "1",
           "CNNKIT_CACHE": str(base / "cache")}
    out = base / "runs"
    first = _cnnkit("train", DATA, *OPTIONS, "--out", str(out), "--name", "ddp",
                    "--devices", "2", env=env)
    run = out / "ddp"
    deadline = time.monotonic() + 240
    try:  # kill rank 1 as soon as epoch 1 is saved
        while not (_rows(run / "metrics.csv") >= 1 and (shards / "rank1.jsonl").is_file()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.05)
        pid = json.loads((shards / "rank1.jsonl").read_text().splitlines()[0])["pid"]
        os.kill(pid, signal.SIGKILL)
        _, killed_err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    rows_when_killed = _rows(run / "metrics.csv")
    one_process_copy = base / "resumed-in-1"
    shutil.copytree(run, one_process_copy)
    second = _cnnkit("train", "--resume", str(run), "--devices", "2", env=env)
    resumed_out, resumed_err = second.communicate(timeout=300)
    return {"run": run, "out": out, "shards": shards, "killed_code": first.returncode,
            "killed_err": killed_err, "rows_when_killed": rows_when_killed,
            "resumed_code": second.returncode, "resumed_out": resumed_out,
            "resumed_err": resumed_err, "copy": one_process_copy}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> cnnkit.TrainResult:
    base = tmp_path_factory.mktemp("single")
    options = dict(zip(OPTIONS[0::2], OPTIONS[1::2]))
    return cnnkit.train(DATA, model=options["--model"], epochs=EPOCHS, batch_size=BATCH,
                        augment="none", device="cpu", plots=False, seed=3, lr=0.02,
                        out=str(base / "runs"), name="single")


def test_a_killed_rank_stops_the_run_with_one_line_and_it_resumes(distributed_run) -> None:
    r = distributed_run
    assert r["killed_code"] != 0
    assert "process 1 of 2 was stopped by SIGKILL" in r["killed_err"]
    assert f"cnnkit train --resume {r['run']} --devices 2" in r["killed_err"]
    assert "Traceback" not in r["killed_err"]
    assert 1 <= r["rows_when_killed"] < EPOCHS
    assert r["resumed_code"] == 0, r["resumed_err"]
    assert f"resuming {r['run']} after epoch {r['rows_when_killed']}" in r["resumed_out"]
    assert _rows(r["run"] / "metrics.csv") == EPOCHS
    assert (r["run"] / "test_metrics.json").is_file()


def test_only_rank_0_writes_one_run_folder(distributed_run) -> None:
    r = distributed_run
    assert [p.name for p in r["out"].iterdir()] == ["ddp"]
    assert "distributed: 2 processes on the CPU (gloo); global batch 36 = 18 per process" \
        in r["resumed_out"]
    # printed once, by rank 0: the resumed run's last epoch line and the test line
    assert r["resumed_out"].count(f"epoch {EPOCHS}/{EPOCHS}") == 1
    assert r["resumed_out"].count("test: accuracy") == 1
    assert r["resumed_err"].strip() == ""


def test_every_training_image_is_seen_once_per_epoch(distributed_run) -> None:
    by_epoch: dict[int, dict[int, list[int]]] = {}
    for rank in (0, 1):
        for line in (distributed_run["shards"] / f"rank{rank}.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert record["world"] == 2
            # a resumed epoch replaces the killed attempt's
            by_epoch.setdefault(record["epoch"], {})[rank] = record["indices"]
    assert sorted(by_epoch) == list(range(1, EPOCHS + 1))
    for shards in by_epoch.values():
        assert len(shards[0]) == len(shards[1])
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(648))
    assert by_epoch[1][0] != by_epoch[2][0]  # reshuffled every epoch


def test_two_processes_train_as_one(distributed_run, one_process) -> None:
    run = distributed_run["run"]
    test = json.loads((run / "test_metrics.json").read_text())
    assert abs(test["accuracy"] - one_process.test_accuracy) <= 0.01
    rows = RunDir(run).read_metrics()
    for mine, theirs in zip(rows, one_process.history):
        # losses and accuracies reduced over both ranks: the whole data's figures
        assert float(mine["train_loss"]) == pytest.approx(theirs["train_loss"], rel=1e-3)
        assert float(mine["val_acc"]) == pytest.approx(theirs["val_acc"], abs=0.02)


def test_a_distributed_run_resumes_in_one_process(distributed_run) -> None:
    copy = distributed_run["copy"]
    result = cnnkit.resume(copy)
    assert len(result.history) == EPOCHS
    assert result.test is not None


# Decided before any process starts, or in each process from torchrun's environment:
TWO = Cluster(rank=1, world=2, local_rank=1)


def test_the_global_batch_splits_evenly() -> None:
    plan = resolve_config(TrainConfig("shapes", model="lenet5", device="cpu"), cluster=TWO)
    assert plan.config.batch_size % 2 == 0 and plan.cluster is TWO
    with pytest.raises(CnnkitError, match="must be a multiple of 2: use 36 or 38"):
        resolve_config(TrainConfig("shapes", batch_size=37, device="cpu"), cluster=TWO)
    three = Cluster(0, 3, 0)
    assert resolve_config(TrainConfig("shapes", device="cpu"), cluster=three
                          ).config.batch_size == 126  # the default 128, rounded to 3s


def test_what_cannot_be_distributed_says_so() -> None:
    with pytest.raises(CnnkitError, match="--mode features fits its head in one solve"):
        resolve_config(TrainConfig("shapes", model="efficientnet_lite0", mode="features",
                                   device="cpu"), cluster=TWO)
    with pytest.raises(CnnkitError, match="SyncBatchNorm runs on GPUs only"):
        resolve_config(TrainConfig("shapes", sync_bn=True, device="cpu"), cluster=TWO)
    assert not resolve_config(TrainConfig("shapes", device="cpu"), cluster=TWO).sync_bn


def test_the_command_refuses_before_starting_processes(capsys) -> None:
    assert main(["train", "shapes", "--mode", "features", "--devices", "2"]) == 2
    assert "--mode features fits its head in one solve" in capsys.readouterr().err
    assert main(["train", "shapes", "--devices", "0"]) == 2
    assert "--devices takes how many processes" in capsys.readouterr().err


def test_each_rank_takes_its_share_of_the_same_global_batches() -> None:
    data = ImageSet(torch.zeros(50, 1, 4, 4, dtype=torch.uint8), torch.arange(50) % 2, ("a", "b"))
    pre = Preprocess(4, 1, (0.5,), (0.5,))

    def drawn(shard: tuple[int, int]) -> list[torch.Tensor]:
        loader = BatchLoader(data, pre, 10, torch.device("cpu"), train=True, shard=shard,
                             generator=torch.Generator().manual_seed(5))
        assert len(loader) == 5  # steps count global batches on every rank
        list(loader)
        return loader.drawn

    whole, first, second = drawn((0, 1)), drawn((0, 2)), drawn((1, 2))
    for batch, a, b in zip(whole, first, second, strict=True):
        assert len(a) == len(b) == 5
        assert torch.equal(torch.cat([a, b]), batch)
    assert sorted(torch.cat(first + second).tolist()) == list(range(50))


def test_a_lost_peer_is_told_from_other_errors() -> None:
    from cnnkit.training.distributed import peer_lost

    assert peer_lost(RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer"))
    assert peer_lost(RuntimeError("[unbound_buffer.cc:78] Timed out waiting 15000ms for recv"))
    assert not peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not peer_lost(ValueError("Timed out"))


def test_a_mistake_every_process_finds_is_said_once(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNNKIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "cnnkit", "train",
                           str(tmp_path / "no-such-folder"), "--devices", "2", "--device",
                           "cpu", "--model", "seed-cnn", "--out", str(tmp_path / "runs"),
                           "--no-plots"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr  # each rank found it (rank 1 often first): once
    assert "Data not found" in errors[0]
