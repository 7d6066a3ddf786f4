"""A predictions file is bound to what made it: another model or another option that
changes answers stops with one line naming it (--overwrite starts afresh), never mixed
rows; a resume after a cut inside a quoted row is exact; a full disk says how to go on."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnkit
from cnnkit.artifacts.modelfile import load_model, save_model
from cnnkit.cli import main
from cnnkit.runtime.predfile import MadeBy, record_path
from cnnkit.runtime.stream import predict_to_file


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            return list(csv.DictReader(fh))
    return [json.loads(line) for line in path.read_text(
        encoding="utf-8", errors="surrogateescape").split("\n") if line]


@pytest.fixture(scope="module")
def two_models(trained, tmp_path_factory) -> tuple[Path, Path]:
    """The shared run, and a copy whose last layer was changed: another model that
    answers otherwise on the same images."""
    other = tmp_path_factory.mktemp("other") / "run-b"
    shutil.copytree(trained[0], other, ignore=shutil.ignore_patterns("*.onnx"))
    model, card = load_model(other)
    with torch.no_grad():
        last = [p for p in model.parameters() if p.ndim == 1][-1]
        last += torch.arange(len(last), dtype=last.dtype) * 3  # the last class wins more
    save_model(model, card, other / "model.safetensors")
    assert load_file(str(other / "model.safetensors")).keys()
    return trained[0], other


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name", ["s.csv", "s.jsonl"])
def test_another_model_or_option_is_refused_and_overwrite_starts_afresh(
        two_models, trained, tmp_path: Path, capsys, name: str) -> None:
    run_a, run_b = two_models
    data = trained[1]
    out = tmp_path / name
    assert main(["predict", str(run_a), str(data), "--output", str(out)]) == 0
    first = out.read_bytes()
    n = len(_rows(out))
    assert n == len(list(data.rglob("*.png")))
    record = json.loads(record_path(out).read_text())
    assert record["weights_sha256"] == json.loads((run_a / "model.json").read_text())["sha256"]

    # the same command again: nothing to add, nothing changed
    assert main(["predict", str(run_a), str(data), "--output", str(out)]) == 0
    assert out.read_bytes() == first
    capsys.readouterr()

    # another model: refused, one line naming both, the file as it was
    assert main(["predict", str(run_b), str(data), "--output", str(out)]) == 2
    line = _error(capsys)
    assert "another model" in line and str(run_a) in line and str(run_b) in line
    assert "--overwrite" in line
    assert out.read_bytes() == first

    # each option that changes answers, alone
    for extra, named in ((["--threshold", "0.9"], "--threshold 0.9"),
                         (["--tta"], "--tta"), (["-k", "1"], "--top-k 1"),
                         (["--backend", "torch"], "--backend torch"),
                         (["--shard", "0/2"], "--shard 0/2")):
        assert main(["predict", str(run_a), str(data), "--output", str(out), *extra]) == 2
        line = _error(capsys)
        assert f"(this run: {named})" in line, line
        assert out.read_bytes() == first

    # --overwrite: B's answers only, computed afresh
    assert main(["predict", str(run_b), str(data), "--output", str(out), "--overwrite"]) == 0
    assert "already there" not in capsys.readouterr().err
    clf_b = cnnkit.load(str(run_b), device="cpu")
    want = {p.source: p for p in clf_b.predict(sorted(str(p) for p in data.rglob("*.png")))}
    rows = _rows(out)
    assert len(rows) == n and {r["path"] for r in rows} == set(want)
    for r in rows:
        assert r["label"] == want[r["path"]].label
        assert float(r["probability"]) == pytest.approx(want[r["path"]].probability, abs=1e-4)
    assert out.read_bytes() != first


def test_rows_without_a_record_are_not_resumed(trained, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.csv"
    assert main(["predict", str(trained[0]), str(trained[1]), "--output", str(out)]) == 0
    record_path(out).unlink()  # an older cnnkit's file, or copied without its record
    before = out.read_bytes()
    assert main(["predict", str(trained[0]), str(trained[1]), "--output", str(out)]) == 2
    assert "no record of the model" in _error(capsys)
    assert out.read_bytes() == before
    # a header alone holds no answers: anyone may fill it
    out.write_text(before.decode().split("\n")[0] + "\n")
    assert main(["predict", str(trained[0]), str(trained[1]), "--output", str(out)]) == 0
    assert len(_rows(out)) == len(list(trained[1].rglob("*.png")))
    # someone else's CSV is never overwritten without --overwrite
    mine = tmp_path / "mine.csv"
    mine.write_text("name,score\n")
    assert main(["predict", str(trained[0]), str(trained[1]), "--output", str(mine)]) == 2
    assert "not an output of cnnkit predict" in _error(capsys)
    assert mine.read_text() == "name,score\n"
    record = record_path(out)
    record.write_text('{"format": "cnnkit-predictions", "top_k": "x"}')
    assert main(["predict", str(trained[0]), str(trained[1]), "--output", str(out)]) == 2
    assert "is damaged" in _error(capsys)


def _awkward_images(trained, root: Path) -> list[str]:
    """Real images whose names hold a line break, quotes, a comma and line separators."""
    source = sorted(trained[1].rglob("*.png"))
    root.mkdir()
    names = ["plain.png", "cr\rthere.png", 'say "cheese", please.png', "two\nlines.png",
             "line\u2028sep\x85.png", 'last\n"\n.png']
    paths = []
    for src, name in zip(source, names):
        shutil.copyfile(src, root / name)
        paths.append(str(root / name))
    return paths


def _same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["path"] for r in got] == [r["path"] for r in want]  # each once, in order
    for g, w in zip(got, want):
        assert g["label"] == w["label"]
        assert float(g["probability"]) == pytest.approx(float(w["probability"]), abs=1e-5)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_cut_anywhere_in_awkward_rows_resumes_exactly(trained, tmp_path: Path,
                                                         suffix: str) -> None:
    clf = cnnkit.load(str(trained[0]), device="cpu")
    files = _awkward_images(trained, tmp_path / "imgs")
    full = tmp_path / f"full{suffix}"
    predict_to_file(clf, files, full, chunk=2, workers=1, progress=False)
    whole = full.read_bytes()
    want = _rows(full)
    assert [r["path"] for r in want] == files
    # a run stopped at a byte next to each quote, comma, line break or escape, and at
    # every 11th: the re-run keeps the whole rows before the cut and adds the rest
    cut = tmp_path / f"cut{suffix}"
    shutil.copyfile(record_path(full), record_path(cut))
    special = set(b'\n\r",\\')
    tricky = [at for at in range(len(whole))
              if at % 11 == 0 or special & set(whole[max(at - 1, 0):at + 1])]
    assert len(tricky) > 40
    for at in tricky:
        cut.write_bytes(whole[:at])
        done = predict_to_file(clf, files, cut, chunk=2, workers=1, progress=False)
        _same_rows(_rows(cut), want)
        assert done.written + done.skipped == len(files)
        kept = cut.read_bytes()[:at]
        assert whole.startswith(kept[:len(kept) - len(kept.split(b"\n")[-1])] or b"")


LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
from cnnkit.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_full_disk_says_how_to_continue_predict(trained, tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "many"
    data.mkdir()
    for i in range(120):
        Image.new("RGB", (20, 20), (200, 30, i)).save(data / f"{i:04d}.png")
    out = tmp_path / "preds.csv"
    args = ["predict", str(trained[0]), str(data), "--output", str(out), "--chunk-size", "16",
            "--workers", "1"]
    env = {**os.environ, "CNNKIT_CACHE": os.environ["CNNKIT_CACHE"]}
    done = subprocess.run([sys.executable, "-c", LIMITED, "6000", *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    line = errors[0]
    assert "disk is full" in line and "preds.csv" in line and "predict" in line
    assert "epoch" not in line and "train" not in line and "--resume" not in line
    assert 0 < out.stat().st_size <= 6000
    assert main(args) == 0  # space again: the same command finishes the file
    paths = [r["path"] for r in _rows(out)]
    assert sorted(paths) == sorted(str(p) for p in data.glob("*.png"))
    assert len(set(paths)) == len(paths)


def test_two_runs_never_write_one_file_at_once(two_models, tmp_path: Path, capsys) -> None:
    import signal
    import time

    from PIL import Image

    data = tmp_path / "many"
    data.mkdir()
    for i in range(600):
        Image.new("RGB", (20, 20), (i % 250, 30, 90)).save(data / f"{i:04d}.png")
    out = tmp_path / "s.csv"
    first = subprocess.Popen([sys.executable, "-m", "cnnkit", "predict", str(two_models[0]),
                              str(data), "--output", str(out), "--chunk-size", "4",
                              "--workers", "1", "--backend", "torch"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_file() and out.read_bytes().count(b"\n") > 3):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        # another model (or the same) into the file the first is writing: refused
        assert main(["predict", str(two_models[1]), str(data), "--output", str(out)]) == 2
        assert "s.csv is in use by another cnnkit process" in _error(capsys)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert main(["predict", str(two_models[0]), str(data), "--output", str(out),
                 "--backend", "torch"]) == 0  # the lock died with its process
    paths = [r["path"] for r in _rows(out)]
    assert len(paths) == len(set(paths)) == 600


def test_int8_rows_are_not_added_to_float_rows(trained, tmp_path: Path, capsys,
                                               brief_int8_timing) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained[0], run, ignore=shutil.ignore_patterns("*.onnx*"))
    assert main(["export", str(run), "--quantize", "int8", "--max-accuracy-drop", "100"]) == 0
    out = tmp_path / "s.csv"
    assert main(["predict", str(run), str(trained[1]), "--output", str(out),
                 "--backend", "onnx"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(trained[1]), "--output", str(out),
                 "--backend", "onnx-int8"]) == 2
    assert "--backend onnx (this run: --backend onnx-int8)" in _error(capsys)
    # the int8 file named as the model is the same computation as --backend onnx-int8
    assert main(["predict", str(run / "model.int8.onnx"), str(trained[1]), "--output",
                 str(out)]) == 2
    assert "(this run: --backend onnx-int8)" in _error(capsys)


def test_the_same_weights_with_another_card_are_not_said_to_differ_in_classes() -> None:
    # an int8 file's card differs from its run's by its own unknown rule only, and the
    # line said "a model with other classes or input"
    float_rows = MadeBy("run", "w" * 64, "a" * 64, 5, None, False, "onnx", None)
    int8_rows = replace(float_rows, model="run/model.int8.onnx", card_sha256="b" * 64,
                        runtime="onnx-int8")
    said = "; ".join(float_rows.differences(int8_rows))
    assert "by a model with other classes, input, calibration or unknown rule (the same " \
           "weights, another model card: run)" in said, said
