"""The runtime: a model loaded into a backend, and images run through it in batches.

A :class:`ModelRunner` loads a run folder, a model file or a pretrained model's name;
picks its backend (torch, or onnxruntime from a cached export, without importing torch);
decodes images as the model reads them; and turns batches of decoded images into the
task's per-class scores (:meth:`ModelRunner.log_probs`) or probabilities
(:meth:`ModelRunner.proba_decoded`). What those scores mean as answers is the task's
(:mod:`cnnkit.tasks`): :class:`cnnkit.runtime.predict.Classifier` asks it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union

import numpy as np
from PIL import Image

from cnnkit.artifacts.modelcard import ModelCard, file_sha256, find_sidecar, read_card
from cnnkit.base import log
from cnnkit.base.device import cpu_only, pick_device
from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import CorruptImageError, decode
from cnnkit.data.preprocess import model_input, model_pixels, prepares
from cnnkit.models.registry import get_model_info, is_registered
from cnnkit.runtime.backend_names import ONNX_KINDS, check_backend
from cnnkit.runtime.backends import Backend, OnnxBackend
from cnnkit.runtime.exports import (
    find_cached_onnx,
    make_backend,
    names_onnx_file,
    onnx_file,
    own_task,
    require_int8,
)
from cnnkit.tasks.base import Task

if TYPE_CHECKING:
    import torch

    from cnnkit.data.imageset import ImageSet

_NOTED: set[str] = set()  # models whose task's note was said (ModelRunner.say_note)
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, bytes]
R = TypeVar("R", bound="ModelRunner")


class ModelRunner:
    """A model ready to run: its card, its backend, and the torch module on demand."""

    def __init__(self, model: torch.nn.Module | None, card: ModelCard,
                 device: torch.device | None, backend: str | Backend = "torch",
                 folder: Path | None = None, *,
                 loader: Callable[[], torch.nn.Module] | None = None) -> None:
        """``backend``: a name of :data:`~cnnkit.runtime.backend_names.BACKENDS`, or a ready
        :class:`~cnnkit.runtime.backends.Backend`;
        ``folder``: where an ONNX export may be cached (the run folder). ``model`` may be
        None with a ready onnxruntime backend: ``loader`` then builds the torch module
        the first time it is asked for (Grad-CAM, export), and torch is never imported
        by prediction alone."""
        if model is None and (isinstance(backend, str) or loader is None):
            raise ValueError("a model without its torch module needs a ready backend and a "
                             "loader")
        self.backend: Backend = (backend if not isinstance(backend, str)
                                 else make_backend(backend, model, card, device, folder))
        self._model = model.eval() if model is not None else None
        self._loader = loader
        self.card = own_task(card, self.backend)
        self._device = device

    # --- loading --------------------------------------------------------------------

    @classmethod
    def open(cls: type[R], model: str, device: str = "auto", backend: str = "auto") -> R:
        """A run folder or model file; or a pretrained model's name for its ImageNet
        classes."""
        check_backend(backend)
        if os.path.exists(model):
            return cls.load(model, device, backend)

        if is_registered(model) and get_model_info(model).is_pretrained:
            return cls._pretrained(model, device, backend)
        raise CnnkitError(f"{model!r} is neither a run folder nor a pretrained model name. "
                          "Pass a folder made by `cnnkit train` (e.g. "
                          "runs/fashion-mnist-fast-cnn) or a pretrained model from "
                          "`cnnkit models`.")

    @classmethod
    def load(cls: type[R], path: str | os.PathLike, device: str = "auto",
             backend: str = "auto") -> R:
        """A run folder, model.json, model.safetensors, or an ONNX file `cnnkit export`
        wrote (float or int8); ``backend``: one of
        :data:`~cnnkit.runtime.backend_names.BACKENDS`."""
        runner = cls._load(path, device, backend)
        runner.source = str(path)
        return runner

    source: str | None = None  # the path it was loaded from (None: built in memory)

    def say_note(self) -> None:
        """Say the task's note about this model (e.g. that it has no calibration) once
        per model in a process: by whatever answers with it (predict, a server)."""
        note = self.task.load_note()
        if note is None or self.source is None:
            return
        where = os.path.abspath(self.source)
        if where not in _NOTED:
            _NOTED.add(where)
            log.warn(f"{self.source}: {note}.")

    @classmethod
    def _load(cls: type[R], path: str | os.PathLike, device: str, backend: str) -> R:
        check_backend(backend)
        if backend in ONNX_KINDS and device == "auto":
            device = "cpu"  # onnxruntime's wheel runs on the CPU
        if names_onnx_file(path):
            return cls._from_onnx_file(path, device, backend)
        exported = cls._from_export(path, device, backend)
        if exported is not None:
            return exported
        from cnnkit.artifacts.modelfile import load_model

        dev = pick_device(device)
        model, card = load_model(path, dev)
        return cls(model, card, dev, backend, find_sidecar(path).parent)

    @classmethod
    def _from_onnx_file(cls: type[R], path: str | os.PathLike, device: str,
                        backend: str = "auto") -> R:
        """The file itself on onnxruntime; its run's torch module is built on demand when
        the run sits beside it (else asking for it is an error that says so)."""
        if not cpu_only(device) and device != "cpu":
            raise CnnkitError(f"{path} runs on onnxruntime on the CPU; received --device "
                              f"{device}. Use --device cpu, or the run folder with "
                              "--backend torch for the GPU.")
        card, sidecar, onnx_backend = onnx_file(path, backend)

        def loader() -> torch.nn.Module:
            if sidecar is None:
                raise CnnkitError(f"{path} is an ONNX file without its run beside it; "
                                  "Grad-CAM, feature maps and export need the run folder "
                                  "(made by `cnnkit train`).")
            from cnnkit.artifacts.modelfile import load_model

            return load_model(sidecar, "cpu")[0]

        return cls(None, card, None, onnx_backend, loader=loader)

    @classmethod
    def _from_export(cls: type[R], path: str | os.PathLike, device: str, backend: str
                     ) -> R | None:
        """The run's earlier ONNX export (float, or int8 for ``onnx-int8``) on
        onnxruntime, without torch, when the backend would be onnxruntime on the CPU anyway
        and the export was made from these weights (the sidecar's sha256 and the file's
        agree) with this architecture, classes and input (else None: the full load
        decides, and explains)."""
        if backend == "torch" or not cpu_only(device):
            return None
        card, weights = read_card(path)
        folder = find_sidecar(path).parent
        if backend == "onnx-int8":
            found = require_int8(card, folder, str(path))
        else:
            found = find_cached_onnx(card, folder)
        if found is None or file_sha256(weights) != card.sha256:
            return None

        def loader() -> torch.nn.Module:
            from cnnkit.artifacts.modelfile import load_model

            return load_model(path, "cpu")[0]

        name = "onnx-int8" if backend == "onnx-int8" else "onnx"
        return cls(None, card, None, OnnxBackend(found, name=name), loader=loader)

    @classmethod
    def _pretrained(cls: type[R], model: str, device: str, backend: str) -> R:
        """A pretrained model with its ImageNet head; an earlier export of it runs on
        onnxruntime without torch or timm."""
        from cnnkit.models.hub import check_weights
        from cnnkit.runtime.zeroshot import cached_imagenet_export, imagenet_model

        check_weights(model, get_model_info(model).weights_from)  # offline: at once
        if backend == "onnx-int8":
            raise CnnkitError(f"--backend onnx-int8 runs a run's int8 file, calibrated on its "
                              f"training images and measured on its test split; {model} is "
                              "a pretrained model with no run. Use --backend auto, or "
                              f"fine-tune it (`cnnkit train DATA -m {model}`) and export the "
                              "run with --quantize int8.")
        found = (cached_imagenet_export(model) if backend != "torch" and cpu_only(device)
                 else None)
        if found is not None:
            card, path = found
            return cls(None, card, None, OnnxBackend(path),
                       loader=lambda: imagenet_model(model)[0])
        net, card = imagenet_model(model)
        dev = pick_device(device)
        return cls(net.to(dev), card, dev, backend)

    # --- what it is -----------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module:
        """The torch module (for Grad-CAM, feature maps and export), built on first use
        when the model runs on an exported file."""
        if self._model is None:
            assert self._loader is not None
            self._model = self._loader().eval()
        return self._model

    @property
    def device(self) -> torch.device:
        if self._device is None:
            import torch

            self._device = torch.device("cpu")
        return self._device

    @property
    def channels_last(self) -> bool:
        return self.backend.channels_last

    @property
    def classes(self) -> tuple[str, ...]:
        return self.card.classes

    @property
    def task(self) -> Task:
        """What the model predicts, and how its outputs become answers."""
        return self.card.task

    # --- images in --------------------------------------------------------------------

    def decode_image(self, item: ImageInput, *,
                     formats: tuple[str, ...] | None = None) -> np.ndarray:
        """One image as this model reads it, uint8 ``(C, H, W)``; ``formats`` (Pillow's
        names) refuses encoded images of any other format (a server's untrusted uploads).
        Raises :class:`~cnnkit.data.decode.CorruptImageError` for an unreadable image."""
        pre = self.card.preprocess
        if isinstance(item, np.ndarray):
            arr = item
            if arr.dtype != np.uint8:
                raise CnnkitError(f"Arrays must be uint8 images (H, W) or (H, W, C); got "
                                  f"{arr.dtype}.")
            item = Image.fromarray(arr if arr.ndim == 2 or arr.shape[2] != 1 else arr[:, :, 0])
        return decode(item, pre.decode_channels, pre.decode_size, pre.interpolation,
                      formats=formats).transpose(2, 0, 1)

    def transform(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """The normalised input tensor the model sees for ``images``."""
        import torch

        from cnnkit.data.pipeline import eval_batch

        pre = self.card.preprocess
        x = torch.from_numpy(np.stack([self.decode_image(i) for i in images]))
        return eval_batch(x, pre, pre.img_size / pre.decode_size)

    # --- scores out -------------------------------------------------------------------

    def predict_proba(self, images: Sequence[ImageInput], *, batch_size: int = 64,
                      tta: bool = False) -> np.ndarray:
        """Class probabilities ``(N, classes)``; raises on an unreadable image."""
        arrays = []
        for item in images:
            try:
                arrays.append(self.decode_image(item))
            except CorruptImageError as exc:
                raise CnnkitError(str(exc)) from None
        return self.proba_decoded(arrays, batch_size=batch_size, tta=tta)

    def proba_decoded(self, arrays: list[np.ndarray] | np.ndarray, *, batch_size: int = 64,
                      tta: bool = False) -> np.ndarray:
        """Class probabilities ``(N, classes)`` of images from :meth:`decode_image` (a list,
        or one uint8 ``(N, C, H, W)`` array)."""
        if len(arrays) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        pre = self.card.preprocess
        images = arrays if isinstance(arrays, np.ndarray) else np.stack(arrays)
        crop = pre.img_size / pre.decode_size
        if self._on_numpy(images, crop):
            return np.exp(self._scores_np(images, crop, batch_size, tta))
        import torch

        from cnnkit.data.imageset import ImageSet

        data = ImageSet(torch.from_numpy(images), torch.zeros(len(images), dtype=torch.long),
                        self.classes, crop_fraction=crop)
        return self.log_probs(data, tta=tta, batch_size=batch_size).exp().numpy()

    def answer_inputs(self, arrays: list[np.ndarray] | np.ndarray, *, batch_size: int = 64,
                      tta: bool = False) -> np.ndarray:
        """What the task's answers read for images from :meth:`decode_image`, one row per
        image (:meth:`~cnnkit.tasks.base.Task.answer_inputs_np`: the probabilities, and
        what else the task adds, such as single-label's energy for its unknown rule)."""
        if len(arrays) == 0:
            return self.task.answer_inputs_np([np.zeros((0, len(self.classes)), np.float32)])
        pre = self.card.preprocess
        images = arrays if isinstance(arrays, np.ndarray) else np.stack(arrays)
        crop = pre.img_size / pre.decode_size
        if self._on_numpy(images, crop):
            views, distances = self._logits_np(images, crop, batch_size, tta)
        else:
            import torch

            from cnnkit.data.imageset import ImageSet
            from cnnkit.runtime.inference import view_outputs

            data = ImageSet(torch.from_numpy(images),
                            torch.zeros(len(images), dtype=torch.long), self.classes,
                            crop_fraction=crop)
            backend = self.backend
            paired = getattr(backend, "paired", None) if self.task.answers_read_distance \
                else None
            with backend.preprocessing():
                views, distances = view_outputs(
                    paired or backend, data, pre, backend.device,
                    batch_size=backend.batch_size(pre.img_size, batch_size), tta=tta,
                    channels_last=backend.channels_last, split=False)
        return self.task.answer_inputs_np(views, distances)

    def _logits_np(self, images: np.ndarray, crop_fraction: float, batch_size: int,
                   tta: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """The raw logits of each view of uint8 ``images`` from the onnxruntime backend,
        and each view's feature distances when the task reads them and the file has them."""
        assert isinstance(self.backend, OnnxBackend)
        pre = self.card.preprocess
        batch = self.backend.batch_size(pre.img_size, batch_size)
        n_views = 2 if tta else 1
        views = [np.empty((len(images), len(self.classes)), dtype=np.float32)
                 for _ in range(n_views)]
        paired = self.task.answers_read_distance and self.backend.has_distance
        distances = ([np.empty(len(images), dtype=np.float32) for _ in range(n_views)]
                     if paired else None)
        make, buf = self._input_np(len(images), batch)
        for start in range(0, len(images), batch):
            part = images[start:start + batch]
            for v, (flip, out) in enumerate(zip((False, True), views)):
                x = make(part, pre, crop_fraction, flip=flip, out=buf)
                if distances is None:
                    out[start:start + len(part)] = self.backend.run(x)
                else:
                    logits, dist = self.backend.run_pair(x)
                    out[start:start + len(part)] = logits
                    distances[v][start:start + len(part)] = dist
        return views, distances

    def log_probs(self, imageset: ImageSet, *, tta: bool = False,
                  batch_size: int = 256) -> torch.Tensor:
        """Per-class log-probabilities ``(N, classes)`` of decoded images, as the task
        scores them (to combine models' scores)."""
        import torch

        from cnnkit.runtime.inference import log_probs

        pre, backend = self.card.preprocess, self.backend
        if imageset.images.device.type == "cpu" and self._on_numpy(imageset.images,
                                                                   imageset.crop_fraction):
            return torch.from_numpy(self._scores_np(imageset.images.numpy(),
                                                    imageset.crop_fraction, batch_size, tta))
        with backend.preprocessing():
            return log_probs(backend, imageset, pre, backend.device, task=self.task,
                             batch_size=backend.batch_size(pre.img_size, batch_size), tta=tta,
                             channels_last=backend.channels_last, split=False)

    def _on_numpy(self, images: Any, crop_fraction: float) -> bool:
        """Whether these uint8 images go to onnxruntime through NumPy alone (no resize
        or channel change needed), rather than through the tensor pipeline."""
        return isinstance(self.backend, OnnxBackend) and prepares(
            tuple(images.shape), self.card.preprocess, crop_fraction)

    def _input_np(self, n: int, batch: int) -> tuple[Callable[..., np.ndarray | None],
                                                     np.ndarray]:
        """What makes the onnxruntime backend's input from uint8 images (the normalised
        floats, or the crop's pixels for a pixel-fed int8 graph), and a reused buffer."""
        assert isinstance(self.backend, OnnxBackend)
        pre = self.card.preprocess
        pixels = self.backend.pixel_input
        buf = np.empty((min(batch, n), pre.channels, pre.img_size, pre.img_size),
                       dtype=np.uint8 if pixels else np.float32)
        return (model_pixels if pixels else model_input), buf

    def _scores_np(self, images: np.ndarray, crop_fraction: float, batch_size: int,
                   tta: bool) -> np.ndarray:
        """The task's log-probabilities of uint8 ``images`` from the onnxruntime backend,
        batch by batch through one reused float buffer; as
        :func:`cnnkit.runtime.inference.log_probs`."""
        assert isinstance(self.backend, OnnxBackend)
        pre, task = self.card.preprocess, self.task
        batch = self.backend.batch_size(pre.img_size, batch_size)
        out = np.empty((len(images), len(self.classes)), dtype=np.float32)
        make, buf = self._input_np(len(images), batch)
        for start in range(0, len(images), batch):
            part = images[start:start + batch]
            x = make(part, pre, crop_fraction, out=buf)
            scores = task.scores_np(self.backend.run(x))
            if tta:  # the image's and its mirror's scores, merged as the task merges them
                x = make(part, pre, crop_fraction, flip=True, out=buf)
                scores = task.merge_views_np([scores, task.scores_np(self.backend.run(x))])
            out[start:start + len(part)] = scores
        return out
