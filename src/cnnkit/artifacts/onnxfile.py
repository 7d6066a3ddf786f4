"""ONNX model files: write one from a torch model, read its metadata, open a session.

An exported file is self-describing like a cnnkit sidecar: its ``metadata_props``
carry the class names and the preprocessing (input size, channels, mean/std,
interpolation, crop), so plain onnxruntime can use it without cnnkit. The graph takes
``input``: float32 ``(batch, channels, size, size)``, values ``(pixel / 255 - mean) /
std``, and returns ``logits`` ``(batch, classes)`` and, for a model whose unknown rule
reads a feature distance, ``distance`` ``(batch,)`` (:mod:`cnnkit.tasks.ood`); the batch
dimension is dynamic, the others are fixed and the arithmetic a trace records on them is
folded away (:mod:`cnnkit.artifacts.static_shapes`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit._version import __version__
from cnnkit.artifacts.static_shapes import fold_static_shapes
from cnnkit.base.atomic import atomic_path
from cnnkit.base.device import usable_cores
from cnnkit.base.errors import CnnkitError
from cnnkit.data.preprocess import Preprocess
from cnnkit.tasks.base import Task
from cnnkit.tasks.ood import FeatureStats
from cnnkit.tasks.registry import task_from_card
from cnnkit.tasks.single_label import SingleLabel

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "cnnkit-onnx"
OPSET = 17
INPUT, OUTPUT, DISTANCE = "input", "logits", "distance"
# How the graph was made, besides the weights: what a derived-file record binds
# (cnnkit.artifacts.derived), so a file made another way is exported again.
GRAPH = "static-shapes-folded"


def float_options(opset: int = OPSET) -> dict[str, Any]:
    """The options a float export's record holds: precision, opset and graph."""
    return {"precision": "float", "opset": opset, "graph": GRAPH}


@dataclass(frozen=True)
class OnnxMeta:
    """What an exported file says about itself."""

    classes: tuple[str, ...]
    preprocess: Preprocess
    info: dict[str, Any]
    task: Task = field(default_factory=SingleLabel)  # how its logits become answers

    def to_props(self) -> dict[str, str]:
        pre = self.preprocess
        return {
            "format": FORMAT,
            "cnnkit_version": __version__,
            "task": json.dumps(self.task.card_fields()),
            "classes": json.dumps(list(self.classes)),
            # The recipe in words a reader without cnnkit can follow (README: "Use the
            # ONNX file without cnnkit").
            "preprocessing": json.dumps({
                "input": INPUT, "layout": "NCHW", "dtype": "float32",
                "size": pre.img_size, "channels": pre.channels,
                "resize_shorter_side_to": pre.decode_size,
                "center_crop": pre.img_size, "interpolation": pre.interpolation,
                "scale": "pixel / 255", "mean": list(pre.mean), "std": list(pre.std),
                # read as grey, repeated to the channels (absent, as before, otherwise)
                **({"grey": True} if pre.grey else {}),
            }),
            "cnnkit_input": json.dumps(pre.to_dict()),
            "info": json.dumps(self.info),
        }


def export_onnx(model: nn.Module, meta: OnnxMeta, path: str | os.PathLike,
                opset: int = OPSET, stats: FeatureStats | None = None) -> Path:
    """Write ``model`` (fp32, CPU copy) as an ONNX file with a dynamic batch and ``meta``,
    its arithmetic on static dimensions folded (:func:`fold_static_shapes`); with
    ``stats``, the feature distance of the unknown rule as a second output.

    The caller's model is left as it was (device, dtype, memory format, mode).
    """
    import onnx
    import torch

    path = Path(path)
    pre = meta.preprocess
    net = copy.deepcopy(getattr(model, "_orig_mod", model)).float().cpu().eval()
    net = net.to(memory_format=torch.contiguous_format)
    if stats is not None:
        from cnnkit.models.feature_distance import WithDistance

        net = WithDistance(net, stats.means, stats.whiten, stats.iso).eval()
    outputs = [OUTPUT, DISTANCE] if stats is not None else [OUTPUT]
    example = torch.zeros(2, pre.channels, pre.img_size, pre.img_size)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (example,), str(tmp), input_names=[INPUT],
                              output_names=outputs, opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT: {0: "batch"},
                                            **{o: {0: "batch"} for o in outputs}})
        except Exception as exc:  # the exporter raises many types; one line for the user
            first = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            _export_dynamo(net, example, tmp, opset, meta, first, outputs)
        try:
            fold_static_shapes(tmp, tmp)
        except Exception as exc:  # onnx and onnxruntime raise many types
            raise CnnkitError(f"Folding the static shapes of the ONNX export of "
                              f"{meta.info.get('architecture', 'the model')} failed: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        proto = onnx.load(str(tmp))
        set_meta(proto, meta)
        proto.producer_name = "cnnkit"
        proto.doc_string = f"cnnkit {__version__} image classifier: {len(meta.classes)} classes"
        onnx.save(proto, str(tmp))
    return path


def set_meta(proto: Any, meta: OnnxMeta) -> None:
    """Replace an ONNX ``ModelProto``'s metadata with ``meta``'s."""
    del proto.metadata_props[:]
    for key, value in meta.to_props().items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


def rewrite_meta(path: str | os.PathLike, meta: OnnxMeta) -> None:
    """Give the file at ``path`` the metadata ``meta`` (written whole, then moved in)."""
    import onnx

    proto = onnx.load(str(path))
    set_meta(proto, meta)
    with atomic_path(Path(path)) as tmp:
        onnx.save(proto, str(tmp))


def _export_dynamo(net: nn.Module, example: torch.Tensor, path: Path, opset: int,
                   meta: OnnxMeta, first: str, outputs: list[str]) -> None:
    """The torch.export-based exporter, for the graphs the TorchScript one cannot trace
    (an adaptive pooling whose output does not divide its input, for one). Slower, so
    second."""

    import torch

    try:
        batch = torch.export.Dim("batch", min=1, max=65536)
        with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
            torch.onnx.export(net, (example,), str(path), input_names=[INPUT],
                              output_names=outputs, opset_version=max(opset, 18),
                              dynamo=True, dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:
        raise CnnkitError(f"ONNX export of {meta.info.get('architecture', 'the model')} "
                          f"failed: {first}; the torch.export-based exporter also failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def read_meta(path: str | os.PathLike) -> OnnxMeta:
    """The classes and preprocessing stored in an exported file (checked)."""
    props = _props(path)
    if props.get("format") != FORMAT:
        raise CnnkitError(f"{path} is an ONNX file without cnnkit's metadata (no format "
                          f"{FORMAT!r}); export it with `cnnkit export`.")
    try:
        classes = tuple(str(c) for c in json.loads(props["classes"]))
        pre = Preprocess.from_dict(json.loads(props["cnnkit_input"]))
        info = json.loads(props.get("info", "{}"))
        task_fields = json.loads(props["task"]) if "task" in props else None
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnkitError(f"{path} has damaged cnnkit metadata ({exc}); export it again.") \
            from None
    return OnnxMeta(classes, pre, info, task_from_card(task_fields, classes, str(path)))


def _props(path: str | os.PathLike) -> dict[str, str]:
    import onnx

    if not Path(path).is_file():
        raise CnnkitError(f"ONNX file not found: {path}.")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CnnkitError(f"{path} is not a readable ONNX model ({str(exc).splitlines()[0]})."
                          ) from None
    return {p.key: p.value for p in proto.metadata_props}


def default_threads() -> int:
    """Threads for one inference session: as many as torch uses when it is loaded (its
    ``set_num_threads``), else ``OMP_NUM_THREADS``, else the cores this process may run
    on."""
    if "torch" in sys.modules:
        return max(1, sys.modules["torch"].get_num_threads())
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return usable_cores()


def open_session(path: str | os.PathLike, threads: int | None = None,
                 providers: list[str] | None = None, model: bytes | None = None) -> Any:
    """An onnxruntime session tuned for batch inference on a CPU.

    All graph optimisations (operator fusion, constant folding, layout transforms),
    ``threads`` intra-op threads and no inter-op pool: a CNN's graph is a chain, so
    parallel branches gain nothing and a second pool only competes for the cores. The
    pool's threads sleep between calls instead of spinning, so they leave the cores to
    the decoders and NumPy preprocessing that run beside them (docs/design-notes.md,
    "Export, backends and batch prediction"). ``model``: a graph derived from the file
    at ``path`` to run instead (its serialized bytes).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path) if model is None else model, opts,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:
        raise CnnkitError(f"{path} is not a readable ONNX model ({str(exc).splitlines()[0]})."
                          ) from None
