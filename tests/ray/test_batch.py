"""Batch prediction on a real in-process Ray cluster: the same rows as ``cnnkit
predict --output``, one file per block, resumed, and complete after a worker is killed."""

from __future__ import annotations

import csv
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.ray.batch import predict, predict_to_folder
from cnnkit.runtime.stream import predict_to_file


def _inputs(trained, tmp_path: Path) -> list[str]:
    """The photos and one file that is not an image, as a user's folder would have."""
    data = tmp_path / "photos"
    shutil.copytree(trained[1], data)
    (data / "circle" / "broken.png").write_bytes(b"not an image")
    return [str(data)]


def _csv_rows(paths: list[Path]) -> tuple[list[str], list[list[str]]]:
    header, rows = None, []
    for path in paths:
        with open(path, newline="") as fh:
            part = list(csv.reader(fh))
        assert header in (None, part[0])  # every file has the --output header
        header, rows = part[0], rows + part[1:]
    return header, rows


def test_same_rows_as_cnnkit_predict_one_file_per_block(local_cluster, trained,
                                                        tmp_path: Path) -> None:
    inputs = _inputs(trained, tmp_path)
    clf = cnnkit.load(str(trained[0]), device="cpu")
    from cnnkit.runtime.inputs import expand_inputs

    files = expand_inputs(inputs)
    single = tmp_path / "single.csv"
    predict_to_file(clf, files, single, top_k=2, threshold=0.4, progress=False)
    done = predict_to_folder(trained[0], inputs, tmp_path / "out", top_k=2, threshold=0.4,
                             block_size=7, progress=False)
    parts = sorted((tmp_path / "out").glob("part-*.csv"))
    assert len(parts) == len(done.files) == math.ceil(len(files) / 7)
    assert (done.written, done.errors, done.skipped) == (len(files), 1, 0)
    header, rows = _csv_rows(parts)
    want_header, want = _csv_rows([single])
    assert header == want_header
    assert sorted(rows) == sorted(want)  # the same answers, to the last printed digit
    assert any(r[-1] and "broken.png" in r[0] for r in rows)  # the error row is there
    assert any(r[1] == "unknown" for r in rows) or all(float(r[2]) >= 0.4 for r in rows if r[2])

    pq_done = predict_to_folder(trained[0], inputs, tmp_path / "pq", fmt="parquet", top_k=2,
                                threshold=0.4, block_size=10, progress=False)
    table = pq.read_table(tmp_path / "pq")
    assert table.num_rows == pq_done.written == len(files)
    by_path = {r[0]: r for r in want}
    for row in table.to_pylist():
        expect = by_path[row["path"]]
        assert row["label"] == (expect[1] or None)
        if row["error"] is None:
            assert f"{row['probability']:.6f}" == expect[2]
            assert f"{row['prob2']:.6f}" == expect[6]
        else:
            assert row["error"] == expect[-1]


def test_dataset_api_and_urls(local_cluster, trained, tmp_path: Path) -> None:
    clf = cnnkit.load(str(trained[0]), device="cpu")
    files = sorted(str(p) for p in trained[1].rglob("*.png"))[:9]
    want = {p.source: p for p in clf.predict(files, top_k=3)}
    ds = predict(trained[0], [f"file://{f}" for f in files], top_k=3, workers=1, block_size=4)
    rows = ds.take_all()
    assert sorted(r["path"] for r in rows) == sorted(f"file://{f}" for f in files)
    for r in rows:
        p = want[r["path"].removeprefix("file://")]
        assert (r["label"], r["label3"]) == (p.label, p.top[2][0])
        assert r["probability"] == pytest.approx(p.probability, abs=1e-6)
        assert r["error"] is None
    ds2 = local_cluster.data.from_items([{"path": f} for f in files[:3]])
    assert [r["label"] for r in predict(trained[0], ds2, workers=1).take_all()] == [
        want[f].label for f in files[:3]]


def test_resume_predicts_only_what_is_missing(local_cluster, trained, tmp_path: Path) -> None:
    from cnnkit.runtime.inputs import expand_inputs

    files = expand_inputs([str(trained[1])])
    out = tmp_path / "out"
    first = predict_to_folder(trained[0], files[:11], out, block_size=5, progress=False)
    assert first.written == 11
    again = predict_to_folder(trained[0], files, out, block_size=5, progress=False)
    assert (again.skipped, again.written) == (11, len(files) - 11)
    _, rows = _csv_rows(sorted(out.glob("part-*.csv")))
    assert sorted(r[0] for r in rows) == sorted(files)  # every file once, none twice
    with pytest.raises(CnnkitError, match="another --format"):
        predict_to_folder(trained[0], files, out, fmt="parquet", progress=False)
    with pytest.raises(CnnkitError, match="other columns"):
        predict_to_folder(trained[0], files, out, top_k=1, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(CnnkitError, match="holds other files"):
        predict_to_folder(trained[0], files, tmp_path / "mine", progress=False)
    with pytest.raises(CnnkitError, match="is a folder"):
        predict_to_folder(trained[0], files, tmp_path / "preds.csv", progress=False)


def test_a_folder_is_bound_to_the_model_and_options_that_made_it(
        local_cluster, trained, tmp_path: Path) -> None:
    import torch

    from cnnkit.artifacts.modelfile import load_model, save_model
    from cnnkit.runtime.inputs import expand_inputs

    other = tmp_path / "run-b"  # the same run with another last bias: another model
    shutil.copytree(trained[0], other, ignore=shutil.ignore_patterns("*.onnx*"))
    model, card = load_model(other)
    with torch.no_grad():
        [p for p in model.parameters() if p.ndim == 1][-1].add_(3.0)
    save_model(model, card, other / "model.safetensors")
    files = expand_inputs([str(trained[1])])
    out = tmp_path / "out"
    predict_to_folder(trained[0], files[:9], out, block_size=5, progress=False)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(CnnkitError, match="another model") as refused:
        predict_to_folder(other, files, out, block_size=5, progress=False)
    assert str(other) in str(refused.value) and "--overwrite" in str(refused.value)
    with pytest.raises(CnnkitError, match=r"no --threshold \(this run: --threshold 0.9\)"):
        predict_to_folder(trained[0], files, out, threshold=0.9, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before  # nothing added, nothing lost
    done = predict_to_folder(other, files, out, block_size=5, progress=False, overwrite=True)
    assert (done.written, done.skipped) == (len(files), 0)
    _, rows = _csv_rows(sorted(out.glob("part-*.csv")))
    want = {p.source: p.label for p in cnnkit.load(str(other), device="cpu").predict(files)}
    assert sorted(r[0] for r in rows) == sorted(files)
    assert all(r[1] == want[r[0]] for r in rows)  # B's answers only


def test_a_killed_worker_loses_no_row(local_cluster, trained, tmp_path: Path,
                                      find_pids) -> None:
    from cnnkit.runtime.inputs import expand_inputs

    files = expand_inputs([str(trained[1])]) * 1  # 30 images, one block each
    result: dict = {}

    def run() -> None:
        try:
            result["done"] = predict_to_folder(trained[0], files, tmp_path / "out",
                                               block_size=1, workers=2, progress=False)
        except BaseException as exc:  # reported below
            result["error"] = exc

    job = threading.Thread(target=run)
    job.start()
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and job.is_alive() and time.monotonic() < deadline:
        pids = find_pids("MapBatches(FileWriter)")
        if pids and list((tmp_path / "out").glob("part-*.csv")):
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    job.join(180)
    assert killed is not None, "the job ended before a worker could be killed"
    assert "error" not in result, result.get("error")
    done = result["done"]
    assert done.written == len(files)
    _, rows = _csv_rows(sorted((tmp_path / "out").glob("part-*.csv")))
    assert sorted(r[0] for r in rows) == sorted(files)


def test_without_ray_one_line_says_how_to_install(monkeypatch) -> None:
    from cnnkit.ray.cluster import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(CnnkitError, match=r"pip install 'cnnkit\[ray\]'"):
        require_ray()


def test_import_cnnkit_does_not_import_ray() -> None:
    import subprocess

    code = ("import sys, cnnkit, cnnkit.ray; cnnkit.TrainConfig; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_multilabel_model_is_refused_before_its_label_sets_lose_their_columns(
        trained_multilabel) -> None:
    from cnnkit.ray.batch import ship

    run, _ = trained_multilabel
    for device in ("cpu", "cuda"):
        with pytest.raises(CnnkitError, match="multi-label model, and --ray writes single"):
            ship(run, device)


def test_a_gpu_worker_gets_the_unknown_rule_s_feature_statistics(calibrated) -> None:
    """GPU actors rebuild the model from the run's files: the statistics file the rule
    reads travels with the weights and the sidecar (the CPU actors' ONNX file has the
    distance in its graph)."""
    from cnnkit.ray.batch import ship

    shipped = ship(calibrated, "cuda")
    assert set(shipped.files) == {"model.json", "model.safetensors",
                                  "model.unknown.safetensors"}


def test_an_onnx_export_given_as_the_model_is_shipped_to_cpu_workers(trained,
                                                                      tmp_path: Path) -> None:
    """`cnnkit predict runs/x/model.onnx --ray` was refused as 'not a cnnkit model',
    though `cnnkit predict` reads that file; CPU workers now run it as given."""
    from cnnkit.export.onnx import export_model
    from cnnkit.ray.batch import ship

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    onnx = export_model(str(run), out=run / "model.onnx", check=[str(trained[1])]).path
    shipped = ship(onnx, "cpu")
    assert shipped.main == "model.onnx"
    assert shipped.files == {"model.onnx": onnx.read_bytes()}
    assert shipped.card.classes == cnnkit.load(str(run)).classes
    with pytest.raises(CnnkitError, match="ONNX export, which --ray runs on CPU workers"):
        ship(onnx, "cuda")


def test_a_run_folder_named_like_an_onnx_file_is_shipped_as_a_run(trained,
                                                                  tmp_path: Path) -> None:
    """'exp.onnx/' is a run folder: GPU workers get its weights and sidecar, not an
    'ONNX file not found'."""
    from cnnkit.ray.batch import ship

    folder = tmp_path / "exp.onnx"
    shutil.copytree(trained[0], folder)
    shipped = ship(folder, "cuda")
    assert {"model.json", "model.safetensors"} <= set(shipped.files)
