"""Training through Ray Train on a real in-process cluster: the same run folder as
``--devices 2``, and a run that goes on from its last epoch when a worker is killed."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import cnnkit.ray


def test_a_killed_worker_resumes_the_run(local_cluster, trained, tmp_path: Path,
                                         find_pids) -> None:
    out = tmp_path / "runs"
    result: dict = {}

    def run() -> None:
        try:
            result["run"] = cnnkit.ray.train(
                str(trained[1]), workers=2, model="conv6k3same-pool2-conv8k3-gap",
                img_size=16, epochs=4, batch_size=8, val_fraction=0.2, test_fraction=0.2,
                plots=False, device="cpu", out=str(out), name="r", keep_checkpoint=True)
        except BaseException as exc:  # reported below
            result["error"] = exc

    job = threading.Thread(target=run)
    job.start()
    checkpoint = out / "r" / "checkpoints" / "last.safetensors"
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and job.is_alive() and time.monotonic() < deadline:
        pids = find_pids("RayTrainWorker")
        if checkpoint.is_file() and len(pids) == 2:  # an epoch is done: kill rank 1
            killed = max(pids)
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    job.join(300)
    assert "error" not in result, result.get("error")
    assert result["run"] == out / "r"
    assert sorted(p.name for p in out.iterdir()) == ["r"]  # continued, not started again
    with open(out / "r" / "metrics.csv", newline="") as fh:
        epochs = [int(r["epoch"]) for r in csv.DictReader(fh)]
    assert epochs == [1, 2, 3, 4]
    assert (out / "r" / "test_metrics.json").is_file()
    assert killed is not None, "training ended before a worker could be killed"
