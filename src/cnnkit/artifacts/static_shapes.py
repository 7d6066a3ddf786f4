"""Fold the arithmetic an exported graph does on its own static dimensions.

A tracing export records shape reads (``Shape``, then ``Gather`` of one dimension) as
graph nodes even where the dimension is fixed: TF-style "same" padding
(timm's EfficientNet-Lite) computes each ``Pad`` amount from the input's height and
width at run time. Such a ``Pad`` cannot be fused into its convolution, and once the
graph is quantized it runs in float between a dequantize and a quantize. Replacing the
reads of static dimensions with constants, then letting onnxruntime's basic
optimisations fold the rest (constant folding, ``Pad`` into ``Conv``), leaves the same
function with none of that; the batch dimension stays dynamic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_ROUNDS = 20


def _static_reads(model: Any) -> Any:
    """``model`` with every ``Shape`` of a fully static tensor and every ``Gather`` of
    static dimensions out of a ``Shape`` replaced by a ``Constant``, and dead nodes
    removed."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    graph = shape_inference.infer_shapes(model).graph
    dims: dict[str, list[int | None]] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        t = info.type.tensor_type
        if t.HasField("shape"):
            dims[info.name] = [d.dim_value if d.HasField("dim_value") else None
                               for d in t.shape.dim]
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    shapes: dict[str, list[int | None]] = {}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "Shape" and n.input[0] in dims:
            a = {x.name: x.i for x in n.attribute}
            d = dims[n.input[0]]
            shapes[n.output[0]] = d[a.get("start", 0):a.get("end", len(d))]

    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for n in out.graph.node:
        value = None
        if n.op_type == "Shape" and None not in shapes.get(n.output[0], [None]):
            value = np.array(shapes[n.output[0]], dtype=np.int64)
        elif n.op_type == "Gather" and n.input[0] in shapes and n.input[1] in consts:
            axis = {x.name: x.i for x in n.attribute}.get("axis", 0)
            picked = np.take(np.array(shapes[n.input[0]], dtype=object), consts[n.input[1]])
            if axis == 0 and None not in np.atleast_1d(picked).tolist():
                value = np.array(picked, dtype=np.int64)
        if value is None:
            nodes.append(n)
        else:
            nodes.append(helper.make_node(
                "Constant", [], [n.output[0]], name=n.name + "/static",
                value=numpy_helper.from_array(value, n.output[0] + "/value")))
    while True:  # drop nodes nothing reads any more (the Shape nodes above)
        used = {i for n in nodes for i in n.input} | {o.name for o in out.graph.output}
        live = [n for n in nodes if any(o in used for o in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _basic_optimisations(src: Path, dst: Path) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def fold_static_shapes(src: Path, dst: Path) -> Path:
    """Write ``dst``: ``src`` with the computations on its static dimensions folded
    away (rounds of constant reads and onnxruntime's basic optimisations, until the graph
    stops shrinking)."""
    import onnx

    model = onnx.load(str(src))
    for _ in range(MAX_ROUNDS):
        before = len(model.graph.node)
        onnx.save(_static_reads(model), str(dst))
        _basic_optimisations(dst, dst)
        model = onnx.load(str(dst))
        if len(model.graph.node) == before:
            break
    return dst
