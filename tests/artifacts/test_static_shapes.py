"""Folding the arithmetic on static dimensions: TF-style "same" padding, read from the
input's height and width at run time, becomes part of the convolution."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.artifacts.static_shapes import fold_static_shapes


class SamePad(nn.Module):
    """A stride-2 convolution padded as TensorFlow's "same" (timm's ``pad_same``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.size()[-2:]
        ph = max((math.ceil(ih / 2) - 1) * 2 + 3 - ih, 0)
        pw = max((math.ceil(iw / 2) - 1) * 2 + 3 - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], value=0.0)
        return self.conv(x).relu().mean((2, 3))


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]


def test_same_padding_folds_into_the_convolution_and_batch_stays_dynamic(tmp_path: Path
                                                                          ) -> None:
    src, dst = tmp_path / "m.onnx", tmp_path / "folded.onnx"
    torch.onnx.export(SamePad().eval(), torch.zeros(2, 3, 15, 15), str(src), dynamo=False,
                      input_names=["input"], output_names=["out"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "out": {0: "batch"}})
    before = {n.op_type for n in onnx.load(str(src)).graph.node}
    assert {"Shape", "Pad"} <= before
    fold_static_shapes(src, dst)
    after = {n.op_type for n in onnx.load(str(dst)).graph.node}
    assert not after & {"Shape", "Gather", "Pad", "Ceil"}, after
    rng = np.random.default_rng(0)
    for batch in (1, 5):
        x = rng.standard_normal((batch, 3, 15, 15)).astype(np.float32)
        np.testing.assert_allclose(_run(dst, x), _run(src, x), atol=1e-6)


def test_dynamic_dimensions_are_left_alone(tmp_path: Path) -> None:
    src, dst = tmp_path / "m.onnx", tmp_path / "folded.onnx"
    torch.onnx.export(SamePad().eval(), torch.zeros(2, 3, 15, 15), str(src), dynamo=False,
                      input_names=["input"], output_names=["out"], opset_version=17,
                      dynamic_axes={"input": {0: "batch", 2: "h", 3: "w"},
                                    "out": {0: "batch"}})
    fold_static_shapes(src, dst)
    assert "Pad" in {n.op_type for n in onnx.load(str(dst)).graph.node}
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 13)).astype(np.float32)
    np.testing.assert_allclose(_run(dst, x), _run(src, x), atol=1e-6)
