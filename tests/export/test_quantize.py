"""``cnnkit export --quantize int8``: a quantized file calibrated on the run's training
images, compared with the float file on the run's test split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

import cnnkit
from cnnkit.artifacts import derived
from cnnkit.artifacts.onnxfile import read_meta
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.export.onnx import export_model


def test_int8_export_is_quantized_keeps_metadata_and_is_compared(trained, tmp_path: Path,
                                                                 capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained[0]), "--out", str(out), "--quantize", "int8"]) == 0
    text = capsys.readouterr().out
    int8 = tmp_path / "m.int8.onnx"
    assert f"wrote {int8}" in text
    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    assert not first_conv.input[1].endswith("_DequantizeLinear_Output")  # first layer: float
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
