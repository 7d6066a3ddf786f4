"""The features mode's frozen backbone on onnxruntime, on a CPU.

A backbone's codes (images in, pre-logits features out) come several times faster from
onnxruntime than from eager torch on a CPU (EfficientNet-Lite0 at 224 px, 81 images:
docs/benchmarks.md, "The studio"). The codes graph is exported once per backbone, input
and weights, into cnnkit's cache under a name made from the weights' own bytes, checked
against torch when it is made (a graph that disagrees is deleted and torch codes the
images), and opened again by the next run. The studio's worker prepares it before the
click on "Train (quick)" (:func:`prepare`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.base import log
from cnnkit.base.atomic import atomic_path
from cnnkit.base.paths import cache_dir
from cnnkit.data.pipeline import Preprocess
from cnnkit.models.interface import classifier_params
from cnnkit.runtime.backends import OnnxBackend

VERSION = 1  # of the graph's making: a new one makes new files
TOLERANCE = 1e-4  # largest difference between torch's and the graph's codes, relative


class _Codes(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def graph_path(model: nn.Module, pre: Preprocess, architecture: dict[str, Any]) -> Path:
    """Where the codes graph of ``model`` (its weights but the classifier's) at the side
    and channels of ``pre`` lives in the cache (the graph takes normalised pixels: the
    mean, std and crop are the loader's, so runs that differ only there share it)."""
    skip = {name for name, _ in classifier_params(model)}
    digest = hashlib.sha256(json.dumps(
        {"architecture": architecture, "side": pre.img_size, "channels": pre.channels,
         "torch": torch.__version__, "v": VERSION}, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        if name not in skip:
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return cache_dir("onnx") / f"codes-{architecture.get('name', 'model')}-" \
                               f"{digest.hexdigest()[:24]}.onnx"


def runner(model: nn.Module, pre: Preprocess, device: torch.device,
           architecture: dict[str, Any]) -> OnnxBackend | None:
    """An onnxruntime session on the codes graph of ``model`` (exported now if it is not
    in the cache), with as many threads as torch has; None off the CPU, without
    onnxruntime, or when the graph cannot be made or disagrees with torch (then one
    line says so, and torch codes the images)."""
    if device.type != "cpu":
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    path = graph_path(model, pre, architecture)
    if not path.is_file():
        try:
            _export(model, pre, path)
        except Exception as exc:  # the exporter and onnxruntime raise many types
            path.unlink(missing_ok=True)
            log.info(f"features: coding with torch (the onnxruntime graph of "
                     f"{architecture.get('name', 'the model')} could not be made: "
                     f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            return None
    return OnnxBackend(path, threads=torch.get_num_threads(), name="onnx-codes")


def prepare(model: nn.Module, pre: Preprocess, architecture: dict[str, Any]) -> bool:
    """Make the codes graph ahead of a run (the studio's waiting worker); whether it is
    there now."""
    return runner(model, pre, torch.device("cpu"), architecture) is not None


def _export(model: nn.Module, pre: Preprocess, path: Path) -> None:
    from cnnkit.artifacts.static_shapes import fold_static_shapes

    net = _Codes(copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format)
                 ).eval()
    example = torch.zeros(2, pre.channels, pre.img_size, pre.img_size)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(tmp), input_names=["input"],
                          output_names=["codes"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "codes": {0: "batch"}})
        fold_static_shapes(tmp, tmp)
        x = torch.randn(2, pre.channels, pre.img_size, pre.img_size,
                        generator=torch.Generator().manual_seed(0))
        ref = net(x)
        got = OnnxBackend(tmp, threads=1)(x)
        diff = float((got - ref).abs().max()) / (1.0 + float(ref.abs().max()))
        if got.shape != ref.shape or not diff <= TOLERANCE:
            raise ValueError(f"its codes differ from torch's by {diff:.1e} (relative)")
