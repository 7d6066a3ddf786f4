"""Batch prediction to a file: streamed rows, error rows, resume after a kill, shards,
and the terminal table that never cuts a path."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

import cnnkit
from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.runtime.stream import parse_shard, predict_to_file, select


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_match_predict_and_a_bad_file_gets_an_error_row(trained, tmp_path: Path) -> None:
    clf = cnnkit.load(str(trained[0]), device="cpu")
    files = sorted(str(p) for p in trained[1].rglob("*.png"))[:7]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    inputs = [*files[:3], str(bad), *files[3:]]
    expected = {p.source: p for p in clf.predict(files, top_k=2)}
    for name in ("preds.csv", "preds.jsonl"):
        out = tmp_path / name
        done = predict_to_file(clf, inputs, out, top_k=2, chunk=3, workers=2, progress=False)
        assert (done.written, done.errors, done.skipped) == (8, 1, 0)
        rows = _rows(out)
        assert [r["path"] for r in rows] == inputs  # one row per input, in order
        for r in rows:
            if r["path"] == str(bad):
                assert "cannot decode" in r["error"]
                continue
            p = expected[r["path"]]
            assert r["label"] == p.label
            assert float(r["probability"]) == pytest.approx(p.probability, abs=1e-5)
        csv_row = rows[0] if name.endswith(".csv") else None
        if csv_row is not None:
            assert list(csv_row) == ["path", "label", "probability", "label1", "prob1",
                                     "label2", "prob2", "error"]
    with pytest.raises(CnnkitError, match=r"--top-k 2 \(this run: --top-k 3\)"):
        predict_to_file(clf, inputs, tmp_path / "preds.csv", top_k=3, progress=False)


def test_a_killed_run_resumed_yields_each_input_exactly_once(trained, tmp_path: Path) -> None:
    data = write_many(tmp_path / "many", 900)
    out = tmp_path / "preds.csv"
    cmd = [sys.executable, "-m", "cnnkit", "predict", str(trained[0]), str(data), "--output",
           str(out), "--chunk-size", "8", "--workers", "2", "--backend", "torch"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_file() and out.read_bytes().count(b"\n") > 40:
                break
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its decoding workers
        proc.wait()
    first = _rows(out)
    assert 40 <= len(first) < 900, "the run was not stopped half-way"
    with open(out, "a") as fh:  # as if it died inside a write, too
        fh.write(str(data / "half-a-row.png") + ",cir")
    assert main(["predict", str(trained[0]), str(data), "--output", str(out),
                 "--chunk-size", "64", "--backend", "torch"]) == 0
    paths = [r["path"] for r in _rows(out)]
    assert len(paths) == len(set(paths)) == 900
    assert set(paths) == {str(p) for p in data.rglob("*.png")}
    assert paths[:len(first)] == [r["path"] for r in first]  # kept, not redone


def write_many(root: Path, n: int) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    src = Image.new("RGB", (20, 20), (200, 30, 30))
    for i in range(n):
        src.save(root / f"{i:04d}.png")
    return root


def test_shards_cover_the_collection_exactly_once(trained, tmp_path: Path) -> None:
    files = sorted(str(p) for p in trained[1].rglob("*.png"))
    seen = []
    for i in range(2):
        out = tmp_path / f"part{i}.jsonl"
        assert main(["predict", str(trained[0]), str(trained[1]), "--shard", f"{i}/2",
                     "--output", str(out)]) == 0
        seen += [r["path"] for r in _rows(out)]
    assert sorted(seen) == files and len(seen) == len(set(seen))
    assert select(["b", "a", "c", "a"], (1, 2)) == ["b"]
    assert parse_shard("3/4") == (3, 4)
    for bad in ("2/2", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(CnnkitError, match="--shard is I/N"):
            parse_shard(bad)


def test_the_table_never_cuts_a_path(trained, tmp_path: Path, capsys, monkeypatch) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "nested" / "circle-photo-001.png"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(next(trained[1].rglob("*.png")).read_bytes())
    for width in (200, 60):
        screen = Console(file=io.StringIO(), force_terminal=True, width=width)
        monkeypatch.setattr(log, "_out", screen)
        assert main(["predict", str(trained[0]), str(deep), "-k", "2"]) == 0
        shown = screen.file.getvalue() + capsys.readouterr().out
        assert str(deep) in shown  # whole, on one line: a table, or plain rows when narrow
