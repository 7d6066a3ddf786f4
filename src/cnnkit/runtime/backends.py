"""Prediction backends: what maps a preprocessed batch to logits.

The :class:`~cnnkit.runtime.predict.Classifier` decodes and preprocesses images in one place
(``eval_batch``) and hands the normalised float batch to a backend: a torch module
(:class:`TorchBackend`) or an onnxruntime session (:class:`OnnxBackend`), on the float
export or on the int8 one. Which file a backend runs, and which backend ``auto`` picks,
is :mod:`cnnkit.runtime.exports`'. Grad-CAM and the report stay on torch: they need
gradients.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cnnkit.artifacts.onnxfile import (
    DISTANCE,
    OUTPUT,
    float_options,
    open_session,
)
from cnnkit.artifacts.pixel_input import PixelGrid, pixel_variant
from cnnkit.base.errors import CnnkitError
from cnnkit.data.preprocess import Preprocess

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cnnkit.tasks.ood import FeatureStats

INT8_NAME = "model.int8.onnx"  # where `cnnkit export RUN --quantize int8` puts it
# onnxruntime runs a large batch faster than a few images at a time (unlike eager torch
# on a CPU, inference.chunk_size): up to this many pixels per call, 32 images at 224 px
# (docs/design-notes.md, "Export, backends and batch prediction").
ONNX_BATCH_PIXELS = 32 * 224 * 224
PARITY_TOLERANCE = 1e-4  # largest difference in probabilities between backends
# What a cached export's record binds besides the weights (cnnkit.artifacts.derived).
EXPORT_OPTIONS = float_options()


class Backend(Protocol):
    """A preprocessed float batch ``(B, C, H, W)`` in, float32 logits ``(B, K)`` on the CPU
    or the backend's device out."""

    name: str
    device: torch.device  # where preprocessing should put the batch
    channels_last: bool  # whether the batch should arrive channels-last

    def batch_size(self, img_size: int, requested: int) -> int: ...

    def preprocessing(self) -> contextlib.AbstractContextManager: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    @property
    def paired(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
        """A batch in, ``(logits, feature distance)`` out, when this backend gives the
        unknown rule's distance (:mod:`cnnkit.tasks.ood`); None when it does not."""


class TorchBackend:
    """The torch module itself, channels-last on CPUs and GPUs (docs/design-notes.md,
    "Prediction")."""

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device,
                 stats: FeatureStats | None = None) -> None:
        """``stats``: the unknown rule's feature statistics, for :attr:`paired`."""
        import torch

        self.device = device
        self.channels_last = device.type in ("cpu", "cuda")
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.stats = stats
        self._paired: nn.Module | None = None
        if stats is not None:
            from cnnkit.models.feature_distance import WithDistance

            self._paired = WithDistance(self.model, stats.means, stats.whiten, stats.iso).to(device)

    def batch_size(self, img_size: int, requested: int) -> int:
        from cnnkit.runtime.inference import chunk_size

        return chunk_size(self.device, img_size, requested)

    def preprocessing(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            x = x.to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.model(x).float()

    @property
    def paired(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
        net = self._paired
        if net is None:
            return None

        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            import torch

            with torch.inference_mode():
                x = x.to(self.device)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits, distance = net(x)
                return logits.float(), distance.float()

        return run


class OnnxBackend:
    """An onnxruntime session on the CPU over an exported file; NumPy in and out
    (:meth:`run`), so a predictor on it needs no torch, or tensors (``__call__``).

    An int8 file whose input quantization is the pixel grid
    (:mod:`cnnkit.artifacts.pixel_input`) runs as the same graph fed uint8 pixels
    (``pixel_input``): :meth:`run` takes the centre crop's pixels as they are, and turns
    a float batch into them as the file's own ``QuantizeLinear`` would."""

    channels_last = False  # onnxruntime takes plain NCHW arrays; no layout copy

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 name: str = "onnx") -> None:
        """``name``: onnx for a float file, onnx-int8 for a quantized one (the runtime a
        prediction record names)."""
        self.name = name
        self.path = Path(path)
        self.session = open_session(self.path, threads)
        self.grid: PixelGrid | None = None
        variant = _pixel_variant(self.path, self.session)
        if variant is not None:
            model, self.grid = variant
            self.session = open_session(self.path, threads, model=model)
        self.input = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = outputs[0]  # the logits (or a codes graph's codes)
        self.has_distance = DISTANCE in outputs

    @property
    def pixel_input(self) -> bool:
        """Whether :meth:`run` is best fed the uint8 pixels of the crop (no
        normalisation): an int8 file whose input quantization is the pixel grid."""
        return self.grid is not None

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device("cpu")

    def batch_size(self, img_size: int, requested: int) -> int:
        return max(1, min(requested, ONNX_BATCH_PIXELS // (img_size * img_size)))

    @contextlib.contextmanager
    def preprocessing(self) -> Iterator[None]:
        """Torch prepares the batches on one thread: its OpenMP threads otherwise keep
        spinning after each small op and take cores from onnxruntime's own pool (0.95x
        against 1.05x of the session's speed, docs/design-notes.md)."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(B, K)`` of a float32 ``(B, C, H, W)`` batch (the first output only),
        or with :attr:`pixel_input` of its uint8 pixels
        (:func:`~cnnkit.data.preprocess.model_pixels`)."""
        return self.session.run([self.output], {self.input: self._feed(x)})[0]

    def run_pair(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits ``(B, K)`` and, in a file that has it, the feature distance ``(B,)``."""
        if not self.has_distance:
            return self.run(x), None
        logits, distance = self.session.run([OUTPUT, DISTANCE], {self.input: self._feed(x)})
        return logits, distance

    def _feed(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the session takes it: float32, or a pixel-fed graph's uint8 pixels (a
        float batch quantized as the file's own nodes would)."""
        if x.dtype == np.uint8:
            if self.grid is None:
                raise CnnkitError(f"{self.path} takes normalised float32 input, not uint8 "
                                  "pixels.")
        elif self.grid is not None:
            x = self.grid.quantize(np.asarray(x, np.float32))
        else:
            x = np.asarray(x, np.float32)
        return np.ascontiguousarray(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.run(x.detach().to("cpu", torch.float32).numpy()))

    @property
    def paired(self) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
        if not self.has_distance:
            return None

        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            import torch

            logits, distance = self.run_pair(x.detach().to("cpu", torch.float32).numpy())
            assert distance is not None
            return torch.from_numpy(logits), torch.from_numpy(distance)

        return run


def _pixel_variant(path: Path, session: Any) -> tuple[bytes, PixelGrid] | None:
    """The pixel-fed graph of an int8 file made so (cnnkit.artifacts.pixel_input), read
    only for files whose metadata says int8 and whose input is float."""
    props = session.get_modelmeta().custom_metadata_map
    try:
        int8 = json.loads(props.get("info", "{}")).get("precision") == "int8"
        pre = Preprocess.from_dict(json.loads(props["cnnkit_input"])) if int8 else None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if pre is None or session.get_inputs()[0].type != "tensor(float)":
        return None
    import onnx

    return pixel_variant(onnx.load(str(path)), pre)
