"""``cnnkit export --quantize int8``: a quantized file calibrated on the run's training
images, compared with the float file on the run's test split."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import cnnkit
from cnnkit.artifacts import derived
from cnnkit.artifacts.onnxfile import read_meta
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.export.onnx import check_drop, export_model
from cnnkit.export.quantize import Comparison


def test_int8_export_is_quantized_keeps_metadata_and_is_compared(trained, tmp_path: Path,
                                                                 capsys, brief_int8_timing
                                                                 ) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained[0]), "--out", str(out), "--quantize", "int8"]) == 0
    said = capsys.readouterr()
    text = said.out
    speedup = float(re.search(r"points, ([\d.]+)x the speed", text).group(1))
    assert ("int8 file is slower than the float one" in said.err) == (speedup < 1)
    int8 = tmp_path / "m.int8.onnx"
    assert f"wrote {int8}" in text
    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    assert first_conv.input[1].endswith("_DequantizeLinear_Output")  # first layer: int8 too
    classifier = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    assert not classifier.input[1].endswith("_DequantizeLinear_Output")  # logits: float
    meta, float_meta = read_meta(int8), read_meta(out)
    assert meta.classes == float_meta.classes and meta.preprocess == float_meta.preprocess
    assert meta.info["precision"] == "int8"
    record = json.loads(derived.record_path(int8).read_text())
    assert record["source_sha256"] == json.loads((trained[0] / "model.json").read_text()
                                                 )["sha256"]
    assert record["options"]["from_sha256"] == derived.sha256_of(out)
    assert derived.check(int8, record["source_sha256"]) is None
    split = json.loads((trained[0] / "split.json").read_text())
    n_test = len(split["test"])
    line = re.search(r"int8\s+accuracy ([\d.]+)%\s+([\d.,]+) images/s", text)
    assert f"({n_test:,} images)" in text and line is not None
    assert 0 <= float(line.group(1)) <= 100 and float(line.group(2).replace(",", "")) > 0
    card = json.loads((tmp_path / "m.card.json").read_text())
    assert [f["file"] for f in card["files"]] == ["m.onnx", "m.int8.onnx"]
    assert [p["runtime"] for p in card["parity"]] == ["onnx", "onnx-int8"]
    assert card["int8"]["int8_accuracy"] == pytest.approx(float(line.group(1)) / 100, abs=5e-5)
    assert card["int8"]["test_images"] == n_test == card["metrics"]["test_images"]
    assert card["int8"]["float_accuracy"] == pytest.approx(card["metrics"]["accuracy"])
    # int8 approximates the float model on the run's images
    files = [p for p, _ in split["test"]]
    float_clf = cnnkit.load(str(trained[0]), device="cpu", backend="torch")
    from cnnkit.runtime.backends import OnnxBackend
    from cnnkit.runtime.predict import Classifier

    q = Classifier(float_clf.model, float_clf.card, float_clf.device, OnnxBackend(int8))
    assert np.abs(q.predict_proba(files) - float_clf.predict_proba(files)).max() < 0.1


def test_int8_needs_a_run(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="not a run folder"):
        export_model("efficientnet_lite0", quantize="int8")
    with pytest.raises(CnnkitError, match="--quantize must be one of int8"):
        export_model("efficientnet_lite0", quantize="int4")
    with pytest.raises(CnnkitError, match="--max-accuracy-drop is in points"):
        export_model("efficientnet_lite0", quantize="int8", max_accuracy_drop=-1)


def test_a_run_without_a_test_split_is_refused_before_anything_is_written(
        trained, tmp_path: Path, capsys) -> None:
    run = shutil.copytree(trained[0], tmp_path / "run")
    split = json.loads((run / "split.json").read_text())
    split["test"] = []
    (run / "split.json").write_text(json.dumps(split))
    # Earlier tests may have left the float export's cache in the shared run; only new files count.
    before = sorted(p.name for p in run.iterdir())
    assert main(["export", str(run), "--quantize", "int8"]) == 2
    err = capsys.readouterr().err
    assert "without a held-out test split" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == before


def test_int8_that_loses_too_much_is_refused_with_the_figures() -> None:
    c = Comparison(images=2_000, float_accuracy=0.9125, int8_accuracy=0.8990,
                   float_speed=100.0, int8_speed=300.0)
    check_drop(c, 1.5, "the test split")  # 1.35 points: within 1.5
    with pytest.raises(CnnkitError) as info:
        check_drop(c, 1.0, "the test split")
    message = str(info.value)
    assert "loses 1.35 points" in message and "2,000 images" in message
    assert "float 91.25%, int8 89.90%" in message and "--max-accuracy-drop 1.35" in message
    check_drop(Comparison(10, 0.5, 0.6, 1.0, 1.0), 0.0, "x")  # a gain is never refused


def test_int8_runs_everywhere_once_exported(trained, tmp_path: Path, capsys,
                                            brief_int8_timing) -> None:
    """predict (run + --backend, or the file itself), evaluate, the Python API and the
    record all run the measured int8 file; without it, one line says how to make it."""
    run = shutil.copytree(trained[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx*"))
    files = sorted(str(p) for p in trained[1].rglob("*.png"))[:4]
    assert main(["predict", str(run), files[0], "--backend", "onnx-int8"]) == 2
    err = capsys.readouterr().err
    assert "has no int8 file" in err and f"cnnkit export {run} --quantize int8" in err
    assert main(["export", str(run), "--quantize", "int8"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"onnx-int8 parity with torch on \d+ images of the run's test split: "
                     r"largest difference in probabilities \S+, top-1 agreement", text)
    int8 = run / "model.int8.onnx"
    meta = read_meta(int8).info
    test_n = len(json.loads((run / "split.json").read_text())["test"])
    assert meta["test_images"] == test_n and 0 <= meta["int8_accuracy"] <= 1

    api = cnnkit.load(str(run), backend="onnx-int8")
    assert api.backend.name == "onnx-int8" and api.backend.path == int8
    direct = cnnkit.load(str(int8))
    assert direct.backend.path == int8 and direct.classes == api.classes
    np.testing.assert_array_equal(api.predict_proba(files), direct.predict_proba(files))
    float_probs = cnnkit.load(str(run), backend="onnx").predict_proba(files)
    assert not np.array_equal(api.predict_proba(files), float_probs)  # another runtime

    for target, extra in ((str(run), ["--backend", "onnx-int8"]), (str(int8), [])):
        assert main(["predict", target, *files, "--format", "json", *extra]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [r["path"] for r in rows] == files
        probs = api.predict_proba(files)
        assert [r["label"] for r in rows] == [api.classes[i] for i in probs.argmax(1)]
    assert main(["evaluate", str(run), "--backend", "onnx-int8", "--json",
                 str(tmp_path / "m.json")]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(meta["int8_accuracy"])
    assert main(["evaluate", str(int8), "--json", str(tmp_path / "m2.json")]) == 0
    assert json.loads((tmp_path / "m2.json").read_text())["accuracy"] == evaluated["accuracy"]
    capsys.readouterr()

    assert main(["predict", str(int8), files[0], "--backend", "onnx"]) == 2
    assert "runs on --backend onnx-int8" in capsys.readouterr().err
    assert main(["predict", str(int8), files[0], "--backend", "torch"]) == 2
    assert "pass the run folder for torch" in capsys.readouterr().err
    data = bytearray(int8.read_bytes())
    data[-20] ^= 0xFF
    int8.write_bytes(bytes(data))
    assert main(["predict", str(int8), files[0]]) == 2
    assert "was changed after it was made" in capsys.readouterr().err
    assert main(["predict", str(run), files[0], "--backend", "onnx-int8"]) == 2
    assert "was changed after it was made" in capsys.readouterr().err


def test_a_float_export_predicts_as_the_file_itself(trained, tmp_path: Path, capsys) -> None:
    """`cnnkit predict RUN/model.onnx x.png` (it answered "is not a cnnkit model"), also
    when the file and its record were moved away from the run."""
    run = shutil.copytree(trained[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx*"))
    files = sorted(str(p) for p in trained[1].rglob("*.png"))[:3]
    assert main(["export", str(run)]) == 0
    reference = cnnkit.load(str(run), backend="torch").predict_proba(files)
    clf = cnnkit.load(str(run / "model.onnx"))
    np.testing.assert_allclose(clf.predict_proba(files), reference, atol=1e-4)
    assert clf.model is not None  # the run beside it builds the torch module on demand
    away = tmp_path / "elsewhere"
    away.mkdir()
    for name in ("model.onnx", "model.onnx.source.json"):
        shutil.move(run / name, away / name)
    alone = cnnkit.load(str(away / "model.onnx"))
    np.testing.assert_allclose(alone.predict_proba(files), reference, atol=1e-4)
    with pytest.raises(CnnkitError, match="without its run beside it"):
        alone.model  # noqa: B018
    capsys.readouterr()
    assert main(["predict", str(away / "model.onnx"), *files, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    derived.record_path(away / "model.onnx").unlink()
    assert main(["predict", str(away / "model.onnx"), files[0]]) == 2
    assert "has no record" in capsys.readouterr().err


def test_a_pretrained_name_has_no_int8(trained, capsys) -> None:
    photo = str(sorted(trained[1].rglob("*.png"))[0])
    assert main(["predict", "efficientnet_lite0", photo, "--backend", "onnx-int8"]) == 2
    assert "pretrained model with no run" in capsys.readouterr().err


def test_multilabel_exports_carry_the_thresholds_and_answer_label_sets(
        trained_multilabel, tmp_path: Path, brief_int8_timing) -> None:
    from cnnkit.artifacts.modelcard import read_card
    from cnnkit.export.quantize import accuracy
    from cnnkit.runtime.backends import OnnxBackend

    source, labels = trained_multilabel
    run = tmp_path / "run"
    shutil.copytree(source, run)
    card, _ = read_card(run)
    result = export_model(str(run), quantize="int8", max_accuracy_drop=100)
    for path in (result.path, result.int8):
        assert read_meta(path).task == card.task  # per-label thresholds included
    c = result.comparison
    assert c.figure == "exact match (at 0.5)"
    # the model card tells a consumer of the file alone how to read it: sigmoids, the
    # thresholds, and the metrics measured through the file
    doc = json.loads(result.card.json.read_text())
    assert "sigmoid" in doc["output"] and "softmax" not in doc["output"]
    assert list(doc["thresholds"].values()) == pytest.approx(card.task.thresholds)
    saved = json.loads((run / "test_metrics.json").read_text())
    assert doc["metrics"]["mAP"] == pytest.approx(saved["mAP"]["macro"], abs=1e-6)
    assert doc["int8"]["figure"] == c.figure
    assert "## Thresholds" in result.card.markdown.read_text()
    # the figure is the share of test images with every label right at 0.5
    from cnnkit.evaluation import held_out_test
    from cnnkit.runtime.predict import Classifier

    clf = Classifier.load(run, "cpu")
    test = held_out_test(*cnnkit_rundir(run), clf)
    probs = clf.log_probs(test).exp().numpy()
    exact = float(((probs >= 0.5) == (test.labels.numpy() > 0.5)).all(1).mean())
    assert c.float_accuracy == pytest.approx(exact, abs=1e-9)
    assert accuracy(OnnxBackend(result.path), test, card.preprocess,
                    task=card.task) == pytest.approx(exact, abs=1e-9)
    files = [str(labels.parent / f"m{i:03d}.png") for i in range(3)]
    torch_sets = cnnkit.load(run, device="cpu", backend="torch").predict(files)
    for backend in ("onnx", "onnx-int8"):
        sets = cnnkit.load(run, device="cpu", backend=backend).predict(files)
        assert all(s.thresholds == t.thresholds for s, t in zip(sets, torch_sets))
        if backend == "onnx":
            assert [s.label for s in sets] == [t.label for t in torch_sets]



def test_a_runs_int8_file_answers_at_the_thresholds_in_its_model_json(
        trained_multilabel, tmp_path: Path, brief_int8_timing) -> None:
    # thresholds set in model.json after the export: torch and the float export answered
    # at them, the int8 file at the copy it took at export, so one run folder gave two
    # label sets for one image depending on --backend
    source, labels = trained_multilabel
    run = tmp_path / "run"
    shutil.copytree(source, run)
    export_model(str(run), quantize="int8", max_accuracy_drop=100)
    doc = json.loads((run / "model.json").read_text())
    doc["task"]["thresholds"] = [0.999] * len(doc["classes"])
    (run / "model.json").write_text(json.dumps(doc))
    files = [str(labels.parent / f"m{i:03d}.png") for i in range(3)]
    for backend in ("torch", "onnx", "onnx-int8"):
        sets = cnnkit.load(run, device="cpu", backend=backend).predict(files)
        assert all(set(s.thresholds.values()) == {0.999} for s in sets), backend

def cnnkit_rundir(run: Path):
    from cnnkit.artifacts.rundir import RunDir

    rundir = RunDir.open(run)
    return rundir, rundir.train_config()
