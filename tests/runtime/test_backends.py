"""Prediction backends: torch and onnxruntime agree; auto exports once, keyed by the weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import cnnkit
from cnnkit.artifacts import derived
from cnnkit.artifacts.onnxfile import read_meta
from cnnkit.base.errors import CnnkitError
from cnnkit.runtime.backends import OnnxBackend, TorchBackend
from cnnkit.runtime.predict import Classifier


def _pngs(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.png"))


def test_backends_agree_and_auto_caches_one_export(trained, tmp_path: Path) -> None:
    run = shutil.copytree(trained[0], tmp_path / "run")
    files = _pngs(trained[1])[:12]
    torch_clf = cnnkit.load(str(run), device="cpu", backend="torch")
    assert isinstance(torch_clf.backend, TorchBackend)
    auto = cnnkit.load(str(run), device="cpu")  # auto on a CPU: onnxruntime
    assert isinstance(auto.backend, OnnxBackend)
    sha = auto.card.sha256
    assert auto.backend.path == run / f"model.{sha[:16]}.onnx"
    np.testing.assert_allclose(auto.predict_proba(files), torch_clf.predict_proba(files),
                               atol=1e-4)
    np.testing.assert_allclose(auto.predict_proba(files, tta=True),
                               torch_clf.predict_proba(files, tta=True), atol=1e-4)
    made = auto.backend.path.stat().st_mtime_ns
    again = cnnkit.load(str(run), device="cpu", backend="onnx")
    assert again.backend.path.stat().st_mtime_ns == made  # reused, not exported again
    assert [p.label for p in again.predict(files)] == [p.label for p in torch_clf.predict(files)]
    torch_eval = torch_clf.evaluate(str(trained[1]))
    onnx_eval = again.evaluate(str(trained[1]))
    assert onnx_eval.accuracy == torch_eval.accuracy
    assert onnx_eval.loss == pytest.approx(torch_eval.loss, abs=1e-4)


def test_unknown_backend_is_one_clear_error(trained) -> None:
    with pytest.raises(CnnkitError, match="--backend must be one of auto, torch, onnx"):
        cnnkit.load(str(trained[0]), backend="tensorrt")


def test_cli_predict_and_evaluate_take_backend(trained, tmp_path: Path, capsys) -> None:
    import json

    from cnnkit.cli import main

    run = shutil.copytree(trained[0], tmp_path / "run")
    files = _pngs(trained[1])[:3]
    rows = {}
    for backend in ("torch", "onnx"):
        assert main(["predict", str(run), *files, "--format", "json", "--backend", backend,
                     "--device", "cpu"]) == 0
        rows[backend] = json.loads(capsys.readouterr().out)
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert a["label"] == b["label"] and abs(a["probability"] - b["probability"]) <= 1e-4
    assert main(["evaluate", str(run), "--backend", "onnx"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["predict", str(run), files[0], "--backend", "tvm"]) == 2
    assert "--backend must be one of" in capsys.readouterr().err


_TORCH_FREE = """
import json, sys
import cnnkit
clf = cnnkit.load(sys.argv[1], device=sys.argv[2])
probs = clf.predict_proba(sys.argv[3:], tta=True)
print(json.dumps([type(clf.backend).__name__, probs.tolist(),
                  sorted({m.split(".")[0] for m in sys.modules})]))
"""


def _predict_elsewhere(run: Path, device: str, files: list[str]) -> tuple[str, np.ndarray, set]:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _TORCH_FREE, str(run), device, *files],
                         capture_output=True, text=True, check=True)
    backend, probs, modules = json.loads(out.stdout.splitlines()[-1])
    return backend, np.array(probs), set(modules)


def test_an_exported_run_predicts_without_torch(trained, tmp_path: Path) -> None:
    run = shutil.copytree(trained[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx"))
    files = _pngs(trained[1])[:6]
    reference = cnnkit.load(str(run), device="cpu", backend="torch").predict_proba(
        files, tta=True)
    backend, probs, modules = _predict_elsewhere(run, "cpu", files)  # exports once
    assert backend == "OnnxBackend" and "torch" in modules
    backend, again, modules = _predict_elsewhere(run, "auto", files)
    assert backend == "OnnxBackend" and "onnxruntime" in modules
    assert not modules & {"torch", "torchvision", "timm"}
    np.testing.assert_allclose(again, reference, atol=1e-4)
    np.testing.assert_array_equal(again, probs)
    clf = cnnkit.load(str(run), device="cpu")
    assert clf._model is None  # the torch module is built only when asked for
    assert sum(p.numel() for p in clf.model.parameters()) > 0


def test_changed_weights_are_refused_though_an_export_exists(trained, tmp_path: Path) -> None:
    run = shutil.copytree(trained[0], tmp_path / "run")
    cnnkit.load(str(run), device="cpu")  # the export, made from the weights as saved
    weights = run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(CnnkitError, match="has changed since its sidecar"):
        cnnkit.load(str(run), device="cpu")


def _tamper(path: Path) -> None:
    """Add 5 to one class's bias in an ONNX file, keeping its metadata (as an attacker or
    a stray edit would)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    last = [n for n in proto.graph.node if n.op_type in ("Gemm", "Add")][-1]
    inits = {i.name: i for i in proto.graph.initializer}
    bias = inits[next(name for name in reversed(last.input) if name in inits)]
    values = numpy_helper.to_array(bias).copy()
    values.flat[0] += 5.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(proto, str(path))


def test_a_changed_cached_export_is_not_trusted(trained, tmp_path: Path, capsys) -> None:
    run = shutil.copytree(trained[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx*"))
    files = _pngs(trained[1])[:8]
    reference = cnnkit.load(str(run), device="cpu", backend="torch").predict_proba(files)
    export = cnnkit.load(str(run), device="cpu").backend.path  # exported and bound
    assert (run / f"{export.name}.source.json").is_file()
    _tamper(export)
    assert read_meta(export).classes  # its metadata is intact: only the answers changed
    plain = cnnkit.load(str(run), device="cpu", backend="torch")
    fooled = Classifier(plain.model, plain.card, plain.device, OnnxBackend(export)
                        ).predict_proba(files)
    assert np.abs(fooled - reference).max() > 0.05  # what using it would answer
    capsys.readouterr()
    for backend in ("auto", "onnx"):  # the torch-free path and the full load
        clf = cnnkit.load(str(run), device="cpu", backend=backend)
        np.testing.assert_allclose(clf.predict_proba(files), reference, atol=1e-4)
    assert "was changed after it was made" in capsys.readouterr().err
    assert derived.check(export) is None  # exported again, bound again


def test_a_cached_export_without_a_record_is_made_again(trained, tmp_path: Path) -> None:
    run = shutil.copytree(trained[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx*"))
    export = cnnkit.load(str(run), device="cpu").backend.path
    derived.record_path(export).unlink()  # as an older cnnkit left it, or an attacker
    _tamper(export)
    files = _pngs(trained[1])[:4]
    reference = cnnkit.load(str(run), device="cpu", backend="torch").predict_proba(files)
    np.testing.assert_allclose(cnnkit.load(str(run), device="cpu").predict_proba(files),
                               reference, atol=1e-4)


def test_a_cached_export_made_without_folding_is_made_again(trained, tmp_path: Path,
                                                            capsys) -> None:
    """An export an older cnnkit cached (graph not folded: its record has other options)
    is exported again rather than used, by the torch-free path and the full load alike."""
    from cnnkit.runtime.exports import EXPORT_OPTIONS, find_cached_onnx

    run = shutil.copytree(trained[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx*"))
    export = cnnkit.load(str(run), device="cpu").backend.path
    card = cnnkit.load(str(run), device="cpu").card
    assert EXPORT_OPTIONS["graph"] == "static-shapes-folded"
    old = {k: v for k, v in EXPORT_OPTIONS.items() if k != "graph"}
    derived.bind(export, card.sha256, old)  # the record an older cnnkit wrote
    assert find_cached_onnx(card, run) is None
    capsys.readouterr()
    clf = cnnkit.load(str(run), device="cpu")
    assert clf.backend.path == export and "made with other options" in capsys.readouterr().err
    assert derived.check(export, card.sha256, EXPORT_OPTIONS) is None
