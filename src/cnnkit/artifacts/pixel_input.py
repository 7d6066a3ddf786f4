"""An int8 file that can be fed the image's own uint8 pixels.

A statically quantized graph starts ``input -> QuantizeLinear -> DequantizeLinear ->
Conv``. When the model's normalisation is the same for every channel (``x = pixel *
a + b``), the input's quantization grid can be made the pixel grid itself: scale ``a``
and the zero point nearest ``-b / a``. Where ``-b / a`` is not a whole number (127.5
for mean 0.5 and std 0.5), a constant ``c`` added before the ``QuantizeLinear`` puts
each pixel's float value exactly on its grid point, and the first convolution's bias
absorbs ``c`` (``conv(x + c) = conv(x) + c * sum(W)``), so the file computes the float
model's first layer from exact inputs (only outputs whose window reaches into the
padding keep a difference of ``c * sum(W)`` over the padded taps).

:func:`align_pixel_input` makes a quantized graph so (``cnnkit export --quantize
int8``). :func:`pixel_variant` checks, for all 256 pixel values, that the file's own
``Add`` and ``QuantizeLinear`` give back the pixel, and then returns the same graph fed
uint8 pixels directly: the same function without the float normalisation in NumPy and
the quantization in onnxruntime (docs/design-notes.md, "Shipping").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.data.preprocess import Preprocess

ADDED = "/pixel_grid/Add"  # the name of the node align_pixel_input adds


@dataclass(frozen=True)
class PixelGrid:
    """How a float input ``x`` becomes the uint8 pixel the graph quantizes it to:
    ``clip(rint((x + offset) / scale) + zero_point, 0, 255)`` in float32, as the file's
    ``Add`` and ``QuantizeLinear`` do."""

    offset: float
    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        y = np.add(x, np.float32(self.offset), dtype=np.float32)
        y /= np.float32(self.scale)
        np.rint(y, out=y)
        y += np.float32(self.zero_point)
        np.clip(y, 0, 255, out=y)
        return y.astype(np.uint8)


def uniform(pre: Preprocess) -> tuple[float, float] | None:
    """``(a, b)`` of ``x = pixel * a + b`` when every channel is normalised alike."""
    scale, shift = pre.scale_shift()
    if len(set(scale)) != 1 or len(set(shift)) != 1:
        return None
    return scale[0], shift[0]


def _exact(grid: PixelGrid, pre: Preprocess) -> bool:
    """Whether every pixel value, normalised as :func:`model_input` does it (two float32
    roundings), quantizes back to itself."""
    ab = uniform(pre)
    if ab is None:
        return False
    p = np.arange(256, dtype=np.uint8)
    x = np.multiply(p, np.float32(ab[0]), dtype=np.float32)
    x += np.float32(ab[1])
    return bool(np.array_equal(grid.quantize(x), p))


def _graph_parts(graph: Any) -> tuple[dict, dict]:
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return inits, consumers


def _only(consumers: dict, name: str, op: str) -> Any:
    found = consumers.get(name, [])
    return found[0] if len(found) == 1 and found[0].op_type == op else None


def align_pixel_input(model: Any, pre: Preprocess) -> bool:
    """Make a QDQ ``model``'s input quantization the pixel grid (see the module's text),
    in place; False (nothing changed) when the normalisation differs by channel or the
    graph does not start with ``QuantizeLinear -> DequantizeLinear -> Conv`` with a
    bias."""
    from onnx import TensorProto, helper, numpy_helper

    ab = uniform(pre)
    graph = model.graph
    inits, consumers = _graph_parts(graph)
    arr = lambda name: numpy_helper.to_array(inits[name])  # noqa: E731
    inp = graph.input[0].name
    q = _only(consumers, inp, "QuantizeLinear")
    dq = q and _only(consumers, q.output[0], "DequantizeLinear")
    conv = dq and _only(consumers, dq.output[0], "Conv")
    if ab is None or conv is None or len(conv.input) < 3 or len(q.input) < 3:
        return False
    if inits.get(q.input[2]) is None or inits[q.input[2]].data_type != TensorProto.UINT8:
        return False
    made = {o: n for n in graph.node for o in n.output}
    wdq, bdq = made.get(conv.input[1]), made.get(conv.input[2])
    if wdq is None or bdq is None or {wdq.op_type, bdq.op_type} != {"DequantizeLinear"}:
        return False
    a, b = ab
    zero_point = int(np.clip(round(-b / a), 0, 255))
    grid = PixelGrid(-(zero_point * a + b), a, zero_point)
    if not _exact(grid, pre):
        return False
    w_scale = arr(wdq.input[1]).astype(np.float64).reshape(-1)
    w_zero = arr(wdq.input[2]).astype(np.float64).reshape(-1) if len(wdq.input) > 2 else 0.0
    w = (arr(wdq.input[0]).astype(np.float64) - np.reshape(w_zero, (-1, 1, 1, 1))) \
        * np.reshape(w_scale, (-1, 1, 1, 1))
    bias = arr(bdq.input[0]).astype(np.float64) * arr(bdq.input[1]).astype(np.float64)
    # conv(x + c) = conv(x) + c * sum(W): take it back out of the bias.
    bias -= grid.offset * w.reshape(len(w), -1).sum(1)
    b_scale = (np.float32(a) * w_scale.astype(np.float32)).astype(np.float32)
    b_int = np.round(bias / b_scale.astype(np.float64))
    if np.abs(b_int).max() >= 2 ** 31:
        return False
    names = {k: f"/pixel_grid/{k}" for k in ("x_scale", "x_zero_point", "offset", "bias",
                                             "bias_scale", "added")}
    graph.initializer.extend([
        numpy_helper.from_array(np.float32(a), names["x_scale"]),
        numpy_helper.from_array(np.uint8(zero_point), names["x_zero_point"]),
        numpy_helper.from_array(np.float32(grid.offset), names["offset"]),
        numpy_helper.from_array(b_int.astype(np.int32), names["bias"]),
        numpy_helper.from_array(b_scale, names["bias_scale"])])
    for node in (q, dq):
        node.input[1], node.input[2] = names["x_scale"], names["x_zero_point"]
    bdq.input[0], bdq.input[1] = names["bias"], names["bias_scale"]
    q.input[0] = names["added"]
    at = list(graph.node).index(q)
    graph.node.insert(at, helper.make_node("Add", [inp, names["offset"]], [names["added"]],
                                           name=ADDED))
    _prune(graph)
    return True


def _prune(graph: Any) -> None:
    """Drop the initializers no node reads any more."""
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def pixel_variant(model: Any, pre: Preprocess) -> tuple[bytes, PixelGrid] | None:
    """``model`` fed uint8 pixels ``(B, C, H, W)`` instead of floats, and the grid that
    turns a float input into them; None unless the graph starts ``input -> Add(constant)
    -> QuantizeLinear -> DequantizeLinear`` and every pixel value, normalised as
    ``pre`` says, quantizes back to itself (then both compute the same function on
    images)."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    if len(graph.input) != 1 or graph.input[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        return None
    inits, consumers = _graph_parts(graph)
    inp = graph.input[0].name
    add = _only(consumers, inp, "Add")
    q = add and _only(consumers, add.output[0], "QuantizeLinear")
    dq = q and _only(consumers, q.output[0], "DequantizeLinear")
    if dq is None or len(q.input) < 3 or any(i not in inits for i in (*q.input[1:],
                                                                         add.input[1])):
        return None
    zp = numpy_helper.to_array(inits[q.input[2]])
    if inits[q.input[2]].data_type != TensorProto.UINT8 or zp.size != 1:
        return None
    scale = numpy_helper.to_array(inits[q.input[1]])
    offset = numpy_helper.to_array(inits[add.input[1]])
    if scale.size != 1 or offset.size != 1:
        return None
    grid = PixelGrid(float(offset), float(scale), int(zp))
    if not _exact(grid, pre):
        return None
    nodes = list(graph.node)
    drop = {nodes.index(add), nodes.index(q)}
    at = nodes.index(dq)
    out = type(model)()
    out.CopyFrom(model)
    g = out.graph
    g.node[at].input[0] = inp
    kept = [n for i, n in enumerate(g.node) if i not in drop]
    del g.node[:]
    g.node.extend(kept)
    _prune(g)
    g.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    return out.SerializeToString(), grid
