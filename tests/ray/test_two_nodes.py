"""A two-node Ray cluster on this machine (``ray start --head`` and a second ``ray start
--address``), started and stopped by the test: ``cnnkit predict --ray ADDRESS`` and
``cnnkit train --ray ADDRESS --workers 2`` from the command line, one CPU per node."""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray", reason="Ray comes with the [ray] extra (in [dev])")

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, grace: bool = True) -> None:
    """The node's `ray start --block` and the daemons it started (its process group):
    SIGTERM, then SIGKILL after 5 s; without ``grace``, SIGKILL at once (as `ray stop
    --force`)."""
    steps = ((signal.SIGTERM, 5), (signal.SIGKILL, 10))
    for sig, wait in steps if grace else steps[1:]:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """``(address, env)``: a head and one worker node, one CPU each, token-authenticated."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0",
           "CNNKIT_CACHE": str(tmp_path_factory.getbasetemp() / "cnnkit-cache")}
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live here
    logs = tmp_path_factory.mktemp("ray-logs")
    nodes = []
    head = [RAY, "start", "--head", f"--port={port}", "--num-cpus=1",
            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
            "--block"]
    worker = [RAY, "start", f"--address={address}", "--num-cpus=1", "--block"]
    try:
        for name, cmd in (("head", head), ("worker", worker)):
            with open(logs / f"{name}.log", "w") as log:
                nodes.append(subprocess.Popen(cmd, env=env, start_new_session=True,
                                              stdout=log, stderr=subprocess.STDOUT))
        wait = (f"import ray, time; ray.init(address={address!r}, log_to_driver=False)\n"
                "while sum(n['Alive'] for n in ray.nodes()) < 2: time.sleep(0.5)")
        subprocess.run([sys.executable, "-c", wait], env=env, timeout=180, check=True,
                       capture_output=True)
        yield address, env
    finally:
        # The worker node leaves soon after SIGTERM; the head, left alone, outlives its
        # 5 s of grace every time (docs/benchmarks.md), so it is killed at once.
        for proc in reversed(nodes):
            _stop(proc, grace=proc is not nodes[0])
        shutil.rmtree(temp, ignore_errors=True)


def _cnnkit(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], env=env, text=True,
                          capture_output=True, timeout=300)


def test_predict_on_two_nodes_matches_one_process(cluster, trained, tmp_path: Path) -> None:
    address, env = cluster
    single = tmp_path / "single.csv"
    assert _cnnkit(["predict", str(trained[0]), str(trained[1]), "-k", "2", "--output",
                    str(single)], env).returncode == 0
    out = tmp_path / "preds"
    done = _cnnkit(["predict", str(trained[0]), str(trained[1]), "-k", "2", "--output",
                    str(out), "--format", "parquet", "--workers", "2", "--ray", address], env)
    assert done.returncode == 0, done.stderr
    assert "on 2 Ray workers" in done.stderr  # one CPU each: one on each node
    with open(single, newline="") as fh:
        want = {r["path"]: r for r in csv.DictReader(fh)}
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(want)
    for r in rows:
        assert (r["label"], f"{r['prob1']:.6f}", r["label2"], f"{r['prob2']:.6f}") == (
            want[r["path"]]["label"], want[r["path"]]["prob1"], want[r["path"]]["label2"],
            want[r["path"]]["prob2"])


def test_train_on_two_nodes(cluster, trained, tmp_path: Path) -> None:
    address, env = cluster
    done = _cnnkit(["train", str(trained[1]), "-m", "conv6k3same-pool2-conv8k3-gap",
                    "--img-size", "16", "-e", "2", "-b", "8", "--device", "cpu", "--no-plots",
                    "--val-fraction", "0.2", "--test-fraction", "0.2", "--out",
                    str(tmp_path / "runs"), "--name", "two", "--ray", address,
                    "--workers", "2"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "two"
    out = done.stdout + done.stderr
    assert "distributed: 2 processes" in out
    assert (run / "model.json").is_file() and (run / "test_metrics.json").is_file()
    with open(run / "metrics.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["two"]  # nothing else


def test_unreachable_address_is_one_line(trained, tmp_path: Path) -> None:
    done = _cnnkit(["predict", str(trained[0]), str(trained[1]), "--output",
                    str(tmp_path / "p"), "--ray", f"127.0.0.1:{_free_port()}"], os.environ)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "No Ray cluster answers at 127.0.0.1:" in done.stderr
