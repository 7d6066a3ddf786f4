"""ONNX files: metadata written at export reads back; bad files give one clear error."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cnnkit.artifacts.onnxfile import OnnxMeta, export_onnx, open_session, read_meta
from cnnkit.base.errors import CnnkitError
from cnnkit.data.pipeline import Preprocess
from cnnkit.models import create_model


def test_metadata_round_trips_and_batch_is_dynamic(tmp_path: Path) -> None:
    pre = Preprocess(24, 1, (0.3,), (0.25,), "bicubic", 0.875)
    meta = OnnxMeta(("cat", "dög", "a,b"), pre, {"architecture": "lenet5", "epochs": 3})
    model = create_model("lenet5", 3, 1, 24).eval()
    path = export_onnx(model, meta, tmp_path / "m.onnx")
    assert read_meta(path) == meta
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    props = {p.key: p.value for p in proto.metadata_props}
    plain = json.loads(props["preprocessing"])  # what a user without cnnkit reads
    assert plain["size"] == 24 and plain["resize_shorter_side_to"] == pre.decode_size == 27
    assert plain["mean"] == [0.3] and plain["interpolation"] == "bicubic"
    session = open_session(path, threads=1)
    for batch in (1, 5):
        x = torch.randn(batch, 1, 24, 24)
        out = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(out, model(x).numpy(), atol=1e-5)


def test_files_that_are_not_cnnkit_onnx_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    with pytest.raises(CnnkitError, match="not a readable ONNX model"):
        read_meta(junk)
    with pytest.raises(CnnkitError, match="not found"):
        read_meta(tmp_path / "missing.onnx")
    plain = tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(torch.nn.Conv2d(1, 2, 3), (torch.zeros(1, 1, 8, 8),), str(plain),
                          dynamo=False, opset_version=17)
    with pytest.raises(CnnkitError, match="without cnnkit's metadata"):
        read_meta(plain)


def test_same_padding_arithmetic_is_folded_out_of_a_float_export(tmp_path: Path) -> None:
    """TF-style "same" padding, computed from the input's height and width, leaves no
    shape arithmetic or separate Pad in the file; the batch stays dynamic."""
    from tests.artifacts.test_static_shapes import SamePad

    pre = Preprocess(15, 3, (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0)
    net = SamePad().eval()
    path = export_onnx(net, OnnxMeta(("a", "b", "c", "d"), pre, {}), tmp_path / "m.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"Shape", "Gather", "Pad", "Ceil", "Div"}, ops
    assert read_meta(path).classes == ("a", "b", "c", "d")  # metadata kept
    session = open_session(path, threads=1)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 15, 15)
        with torch.no_grad():
            np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0],
                                       net(x).numpy(), atol=1e-5)
