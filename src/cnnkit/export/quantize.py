"""``cnnkit export --quantize int8``: static int8 quantization with onnxruntime's tools,
calibrated on the run's own training images, measured against the float file.

Weights are quantized per output channel (a depthwise convolution's channels differ by
orders of magnitude, so one scale per tensor loses them), activations per tensor from
the calibration images; only convolutions, their activations, residual additions and the
global average pooling are quantized, the first convolution included (left in float, it
cost a float convolution and a layout conversion of its large output, more time than it
saved in accuracy); the classifier (logits out) stays in float. Before quantizing, the
arithmetic on static dimensions (TF-style "same" padding) is folded away, so no float
``Pad`` sits between a dequantize and a quantize (the choices and their measurements:
docs/design-notes.md, "int8"). After it, where the normalisation allows, the input's
quantization is made the pixel grid (:mod:`cnnkit.artifacts.pixel_input`), so cnnkit
runs the file fed the images' uint8 pixels.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cnnkit.artifacts.onnxfile import DISTANCE, INPUT, OUTPUT, OnnxMeta, read_meta, set_meta
from cnnkit.artifacts.pixel_input import align_pixel_input
from cnnkit.artifacts.static_shapes import fold_static_shapes
from cnnkit.base.atomic import atomic_path
from cnnkit.base.errors import CnnkitError
from cnnkit.data.imageset import ImageSet
from cnnkit.data.pipeline import Preprocess, eval_batch
from cnnkit.runtime.backends import OnnxBackend
from cnnkit.runtime.inference import view_outputs
from cnnkit.tasks.base import Task
from cnnkit.tasks.ood import MIN_HELD_OUT, energy, fit_rule

CALIBRATION_IMAGES = 300
# Validation images the int8 file's own unknown rule is fitted on (a seeded sample of more).
RULE_IMAGES = 5000
# Convolutions with their activations and residual additions, and the global average
# pooling after them (left float, its input was transposed back from onnxruntime's int8
# layout and dequantized whole); the rest stays float (quantizing every op type lost 4.2
# points on a fine-tuned Lite0, these 0: docs/benchmarks.md, "Prediction speed").
QUANTIZED_OPS = ["Conv", "Clip", "Relu", "Add", "GlobalAveragePool"]
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class Comparison:
    """Float and int8 side by side on the same test images."""

    images: int
    float_accuracy: float
    int8_accuracy: float
    float_speed: float  # images/s, batch 32
    int8_speed: float
    figure: str = "accuracy"  # what the two accuracies are (multi-label: exact match)
    # With an unknown rule: the share of the test images each file answers 'unknown'
    # (each file's rule drawn on its own outputs for the validation images).
    float_unknown: float | None = None
    int8_unknown: float | None = None

    @property
    def speedup(self) -> float:
        return self.int8_speed / self.float_speed


def model_inputs(data: ImageSet, pre: Preprocess, batch: int) -> Iterator[np.ndarray]:
    """``data`` preprocessed as the model sees it, in float32 NCHW batches (made as they
    are used: a large test split never sits in memory as floats)."""
    for start in range(0, len(data), batch):
        x = data.images[start:start + batch]
        yield eval_batch(x, pre, data.crop_fraction).numpy()


def _kept_float(path: Path) -> list[str]:
    """The nodes that stay float: the classifier's matrix product (the last one before
    the logits) and every node that only the feature distance reads (its whitening and
    sums would lose the distance's precision in 8 bits)."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: n for n in graph.node for out in n.output}

    def ancestors(name: str) -> list[onnx.NodeProto]:
        seen: dict[str, onnx.NodeProto] = {}
        todo = [name]
        while todo:
            node = producer.get(todo.pop())
            if node is not None and node.name not in seen:
                seen[node.name] = node
                todo.extend(node.input)
        return list(seen.values())

    logits = ancestors(OUTPUT)
    order = {n.name: i for i, n in enumerate(graph.node)}
    dense = sorted((n for n in logits if n.op_type in ("Gemm", "MatMul")),
                   key=lambda n: order[n.name])
    names = {n.name for n in logits}
    distance = [n.name for n in ancestors(DISTANCE) if n.name not in names]
    return [n.name for n in dense[-1:]] + distance


def quantize_int8(float_path: Path, out: Path, calibration: ImageSet, pre: Preprocess
                  ) -> Path:
    """Write ``out``: ``float_path`` statically quantized to int8 (QDQ), calibrated on
    ``calibration``; the float file's metadata is kept."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = list(model_inputs(calibration, pre, CALIBRATION_BATCH))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.left, None)
            return None if x is None else {INPUT: x}

    meta = read_meta(float_path)
    with atomic_path(out) as tmp, warnings.catch_warnings(), _quiet_logging():
        warnings.simplefilter("ignore")
        folded = tmp.with_name(tmp.name + ".folded.onnx")
        prepared = tmp.with_name(tmp.name + ".pre.onnx")
        try:
            fold_static_shapes(float_path, folded)
            quant_pre_process(str(folded), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=_kept_float(prepared),
                            op_types_to_quantize=QUANTIZED_OPS,
                            extra_options={"ActivationSymmetric": False})
        except Exception as exc:  # onnxruntime's tools raise many types
            raise CnnkitError(f"int8 quantization of {float_path} failed: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        finally:
            folded.unlink(missing_ok=True)
            prepared.unlink(missing_ok=True)
        proto = onnx.load(str(tmp))
        align_pixel_input(proto, pre)
        set_meta(proto, _with_precision(meta))
        onnx.save(proto, str(tmp))
    return out


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """onnxruntime's tools log notes on the root logger (per-channel axes of norm layers,
    pre-processing advice) that mean nothing to the user."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _with_precision(meta: OnnxMeta) -> OnnxMeta:
    return OnnxMeta(meta.classes, meta.preprocess,
                    {**meta.info, "precision": "int8", "calibration_images": "run train"},
                    meta.task)


def own_rule(int8_path: Path, val: ImageSet | None, pre: Preprocess, task: Task) -> Task:
    """``task`` with its unknown rule fitted again on the int8 file's own outputs for the
    held-out known images ``val``, as training fitted the float model's (same share kept,
    single images, same statistics file): int8's energies and distances differ from float's
    by a few percent, so the float rule's line would keep another share of known images.
    The task as it is without a rule, or with fewer than
    :data:`~cnnkit.tasks.ood.MIN_HELD_OUT` images."""
    rule = getattr(task, "unknown", None)
    if rule is None or val is None or len(val) < MIN_HELD_OUT:
        return task
    backend = OnnxBackend(int8_path)
    net = backend.paired if rule.uses_distance and backend.has_distance else backend
    (logits,), distances = view_outputs(net, val, pre, backend.device, split=False)
    distance = distances[0] if distances is not None else None
    return replace(task, unknown=fit_rule(energy(logits), rule.kept, distance,
                                          rule.features if distance is not None else None))


def accuracy(backend: OnnxBackend, data: ImageSet, pre: Preprocess, task: Task,
             batch: int = 64) -> float:
    """The task's headline figure (accuracy for single-label) of ``backend`` on ``data``."""
    return _figures(backend, data, pre, task, batch)[0]


def _figures(backend: OnnxBackend, data: ImageSet, pre: Preprocess, task: Task,
             batch: int = 64) -> tuple[float, float | None]:
    """:func:`accuracy`, and with an unknown rule the share answered 'unknown'."""
    pairs = [backend.run_pair(x) for x in model_inputs(data, pre, batch)]
    logits = torch.from_numpy(np.concatenate([p[0] for p in pairs]))
    figure = task.hits(logits, data.labels).item() / max(task.units(data.labels), 1)
    rule = getattr(task, "unknown", None)
    if rule is None:
        return figure, None
    distances = (np.concatenate([p[1] for p in pairs])
                 if all(p[1] is not None for p in pairs) else None)
    return figure, float(rule.unknown(energy(logits.numpy()), distances).mean())


def median_rates(calls: Sequence[Callable[[], object]], images: int, seconds: float,
                 pause: float = 0.2) -> list[float]:
    """Images/s of each call (each handles ``images`` images): the median of rounds that
    visit the calls in a new random order each time, for ``seconds`` and 5 rounds at
    least (so a shared machine's load falls on each alike). Each waits ``pause`` seconds,
    runs once untimed, then once timed: every onnxruntime session (and torch) has its
    own thread pool, whose threads keep spinning for a while after a call and would slow
    whichever comes next."""
    rng = random.Random(0)
    rates: list[list[float]] = [[] for _ in calls]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(rates[0]) < 5:
        order = list(range(len(calls)))
        rng.shuffle(order)
        for i in order:
            time.sleep(pause)
            calls[i]()
            t = time.perf_counter()
            calls[i]()
            rates[i].append(images / (time.perf_counter() - t))
    return [float(np.median(r)) for r in rates]


def speed(backends: list[OnnxBackend], x: np.ndarray, seconds: float = 3.0) -> list[float]:
    """Images/s of each backend on batch ``x`` (:func:`median_rates`, ``seconds`` each),
    fed as a predictor feeds it: a pixel-fed int8 graph its pixels."""
    inputs = [b.grid.quantize(x) if b.grid is not None else x for b in backends]
    return median_rates([lambda b=b, x=x: b.run(x) for b, x in zip(backends, inputs)],
                        len(x), seconds * len(backends))


def compare(float_path: Path, int8_path: Path, test: ImageSet, pre: Preprocess, task: Task,
            batch: int = 32, int8_task: Task | None = None) -> Comparison:
    """Accuracy (the task's figure) of both files on ``test`` and their speed on a batch
    of its images; ``int8_task``: the int8 file's own task (:func:`own_rule`), if it has
    one."""
    plain, int8 = OnnxBackend(float_path), OnnxBackend(int8_path)
    float_speed, int8_speed = speed([plain, int8], next(model_inputs(test, pre, batch)))
    figure = "accuracy" if task.figure == "acc" else f"{task.figure_name} (at 0.5)"
    float_figure, float_unknown = _figures(plain, test, pre, task)
    int8_figure, int8_unknown = _figures(int8, test, pre, int8_task or task)
    return Comparison(len(test), float_figure, int8_figure, float_speed, int8_speed, figure,
                      float_unknown, int8_unknown)
