"""Prediction backends: what maps a preprocessed batch to logits.

The :class:`~cnnkit.runtime.predict.Classifier` decodes and preprocesses images in one place
(``eval_batch``) and hands the normalised float batch to a backend: a torch module
(:class:`TorchBackend`) or an onnxruntime session (:class:`OnnxBackend`). ``auto``
picks onnxruntime on a CPU, where it is faster (docs/benchmarks.md, "Prediction
backends"), and torch on a GPU; the ONNX file is exported once and cached, keyed by the
weights' hash and bound to them by a record checked at each use (cnnkit.artifacts.derived).
Grad-CAM and the report stay on torch: they need gradients.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cnnkit.artifacts import derived
from cnnkit.artifacts.modelcard import ModelCard
from cnnkit.artifacts.onnxfile import OPSET, OnnxMeta, export_onnx, open_session, read_meta
from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.base.paths import cache_dir

if TYPE_CHECKING:
    import torch
    from torch import nn

BACKENDS = ("auto", "torch", "onnx")
# onnxruntime runs a large batch faster than a few images at a time (unlike eager torch
# on a CPU, inference.chunk_size): up to this many pixels per call, 32 images at 224 px
# (docs/design-notes.md, "Export, backends and batch prediction").
ONNX_BATCH_PIXELS = 32 * 224 * 224
PARITY_TOLERANCE = 1e-4  # largest difference in probabilities between backends
# What a cached export's record binds besides the weights (cnnkit.artifacts.derived).
EXPORT_OPTIONS = {"precision": "float", "opset": OPSET}


class Backend(Protocol):
    """A preprocessed float batch ``(B, C, H, W)`` in, float32 logits ``(B, K)`` on the CPU
    or the backend's device out."""

    name: str
    device: torch.device  # where preprocessing should put the batch
    channels_last: bool  # whether the batch should arrive channels-last

    def batch_size(self, img_size: int, requested: int) -> int: ...

    def preprocessing(self) -> contextlib.AbstractContextManager: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class TorchBackend:
    """The torch module itself, channels-last on CPUs and GPUs (docs/design-notes.md,
    "Prediction")."""

    name = "torch"

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        import torch

        self.device = device
        self.channels_last = device.type in ("cpu", "cuda")
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()

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


class OnnxBackend:
    """An onnxruntime session on the CPU over an exported file; NumPy in and out
    (:meth:`run`), so a predictor on it needs no torch, or tensors (``__call__``)."""

    name = "onnx"
    channels_last = False  # onnxruntime takes plain NCHW arrays; no layout copy

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, threads)
        self.input = self.session.get_inputs()[0].name

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
        """Logits ``(B, K)`` of a float32 ``(B, C, H, W)`` batch."""
        return self.session.run(None, {self.input: np.ascontiguousarray(x, np.float32)})[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.run(x.detach().to("cpu", torch.float32).numpy()))


def weights_key(model: nn.Module, card: ModelCard) -> str:
    """16 hex digits naming these weights: the sidecar's sha256, or a hash of the tensors."""
    if card.sha256:
        return card.sha256[:16]
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_places(architecture: str, key: str, folder: Path | None = None) -> list[Path]:
    """Where the export of weights ``key`` lives: the run folder first, then the cache."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", architecture)[:60] or "model"
    return ([folder / f"model.{key}.onnx"] if folder is not None else []) + [
        cache_dir("onnx") / f"{stem}.{key}.onnx"]


def _find(card: ModelCard, key: str, folder: Path | None, source: str | None,
          say: bool = False) -> Path | None:
    """An earlier export of these weights with the card's classes and input whose record
    binds it to ``source`` (:mod:`cnnkit.artifacts.derived`); ``say``: warn of one that fails."""
    for path in export_places(card.architecture.name, key, folder):
        if path.is_file():
            try:
                meta = read_meta(path)
            except CnnkitError:
                continue  # damaged or foreign: exported again over it
            if (meta.classes, meta.preprocess, meta.info.get("architecture")) != (
                    card.classes, card.preprocess, card.architecture.name):
                continue
            why = derived.check(path, source, EXPORT_OPTIONS)
            if why is None:
                return path
            if say:
                log.warn(f"not using {path}: {why}; exporting the model again")
    return None


def find_cached_onnx(card: ModelCard, folder: Path | None = None) -> Path | None:
    """An earlier export of the weights ``card.sha256`` names, with the card's classes and
    input and a record that binds it to them, if there is one; found without torch (None
    when the card has no sha256)."""
    return _find(card, card.sha256[:16], folder, card.sha256) if card.sha256 else None


def cached_onnx(model: nn.Module, card: ModelCard, folder: Path | None = None) -> Path:
    """The ONNX export of ``model``, made once: ``model.<weights hash>.onnx`` in the run
    ``folder`` (or cnnkit's cache when there is none or it is read-only). A new file is
    checked against torch before it is used, then bound to the weights (its record); an
    old one is used only while its record holds."""
    key = weights_key(model, card)
    source = card.sha256 or key
    found = _find(card, key, folder, source, say=True)
    if found is not None:
        return found
    places = export_places(card.architecture.name, key, folder)
    info = {"architecture": card.architecture.name, "weights_sha256": source,
            **{k: v for k, v in card.info.items() if isinstance(v, (str, int, float))}}
    meta = OnnxMeta(card.classes, card.preprocess, info)
    for i, path in enumerate(places):
        try:
            export_onnx(model, meta, path)
            break
        except PermissionError:  # a read-only run folder: the cache instead
            if i == len(places) - 1:
                raise
    try:
        check_parity(model, OnnxBackend(path, threads=1), card)
    except CnnkitError:
        path.unlink(missing_ok=True)
        raise
    derived.bind(path, source, EXPORT_OPTIONS)
    return path


def check_parity(model: nn.Module, backend: OnnxBackend, card: ModelCard,
                 x: torch.Tensor | None = None) -> float:
    """Largest difference in probabilities between torch and ``backend`` on ``x`` (default:
    two seeded random inputs); an error above :data:`PARITY_TOLERANCE`."""
    import torch

    pre = card.preprocess
    if x is None:
        x = torch.randn(2, pre.channels, pre.img_size, pre.img_size,
                        generator=torch.Generator().manual_seed(0))
    net = getattr(model, "_orig_mod", model)
    device = next(net.parameters()).device
    with torch.inference_mode():
        ref = net.eval()(x.to(device)).float().softmax(1).cpu()
    diff = float((backend(x).softmax(1) - ref).abs().max())
    if not diff <= PARITY_TOLERANCE:
        raise CnnkitError(f"The ONNX export of {card.architecture.name} disagrees with torch: "
                          f"probabilities differ by up to {diff:.2e} (more than "
                          f"{PARITY_TOLERANCE:g}). Use --backend torch.")
    return diff


def check_backend(kind: str) -> None:
    if kind not in BACKENDS:
        raise CnnkitError(f"--backend must be one of {', '.join(BACKENDS)}. Received: {kind!r}")


def make_backend(kind: str, model: nn.Module, card: ModelCard, device: torch.device,
                 folder: Path | None = None) -> Backend:
    """The backend ``kind`` (auto, torch or onnx) for ``model`` on ``device``."""
    check_backend(kind)
    if kind == "torch" or (kind == "auto" and device.type != "cpu"):
        return TorchBackend(model, device)
    if kind == "onnx" and device.type != "cpu":
        raise CnnkitError(f"The onnx backend runs on the CPU; received device {device}. Use "
                          "--device cpu, or --backend torch for the GPU.")
    try:
        return OnnxBackend(cached_onnx(model, card, folder))
    except CnnkitError as exc:
        if kind == "onnx":
            raise
        log.warn(f"using torch: {exc}")
        return TorchBackend(model, device)
