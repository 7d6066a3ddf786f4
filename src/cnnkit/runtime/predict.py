"""Predict with a trained model: files, folders, globs, PIL images or arrays in; top-k out."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image

from cnnkit.artifacts.modelcard import ModelCard, file_sha256, find_sidecar, read_card
from cnnkit.base import log
from cnnkit.base.device import cpu_only, pick_device
from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import CorruptImageError, decode, is_image_file
from cnnkit.data.preprocess import model_input, prepares
from cnnkit.data.scan import is_hidden, scan_images
from cnnkit.runtime.backend_names import ONNX_KINDS, check_backend
from cnnkit.runtime.backends import (
    Backend,
    OnnxBackend,
    find_cached_onnx,
    make_backend,
    onnx_file,
    require_int8,
)
from cnnkit.tasks.threshold import UNKNOWN, check_threshold, is_unknown

if TYPE_CHECKING:
    import torch

    from cnnkit.data.imageset import ImageSet
    from cnnkit.tasks.metrics import EvalResult

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, bytes]


@dataclass(frozen=True)
class Prediction:
    """One image's top classes; with a ``threshold``, ``label`` is ``"unknown"`` when the
    top probability is below it (``top`` still holds the model's classes)."""

    source: str
    top: list[tuple[str, float]]
    threshold: float | None = None

    @property
    def unknown(self) -> bool:
        return is_unknown(self.probability, self.threshold)

    @property
    def label(self) -> str:
        return UNKNOWN if self.unknown else self.top[0][0]

    @property
    def probability(self) -> float:
        """The top class's probability (also when the label is ``unknown``)."""
        return self.top[0][1]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.source, "label": self.label,
                               "probability": self.probability}
        if self.threshold is not None:
            out.update(unknown=self.unknown, threshold=self.threshold)
        out["top"] = [{"label": c, "probability": p} for c, p in self.top]
        return out


def expand_inputs(items: Iterable[str]) -> list[str]:
    """Files, folders (searched recursively) and glob patterns -> image file paths."""
    out: list[str] = []
    for item in items:
        path = Path(os.path.expanduser(item))
        if path.is_dir():
            scan = scan_images(path)
            scan.warn()
            found = sorted(scan.files)
            if not found:
                raise CnnkitError(f"No images found in folder {item}.")
            out += found
        elif path.is_file():
            out.append(str(path))
        elif any(ch in item for ch in "*?["):
            pattern = os.path.expanduser(item)
            root = _static_root(pattern)
            matches = _globstar(pattern, root) if "**" in pattern else glob.glob(pattern)
            found = sorted(p for p in matches
                           if os.path.isfile(p) and is_image_file(p)
                           and not _hidden_below(Path(p), root))
            if not found:
                raise CnnkitError(f"No images match {item!r}.")
            out += found
        else:
            raise CnnkitError(f"Image not found: {item}. Pass image files, folders or globs "
                              "such as 'photos/*.jpg'.")
    return out


def _static_root(pattern: str) -> Path | None:
    """The part of a glob pattern before its first wildcard ('shots/2024' of 'shots/2024/*')."""
    static = []
    for part in Path(pattern).parts:
        if any(ch in part for ch in "*?["):
            break
        static.append(part)
    return Path(*static) if static else None


def _globstar(pattern: str, root: Path | None) -> list[str]:
    """The files a ``**`` pattern matches, found by the folder scan (any depth, each folder
    once, so a link that loops or a tree 1,000 folders deep is read as it is) rather than
    by ``glob``, which recurses and follows a loop until the path is too long."""
    scan = scan_images(root if root is not None else ".")
    scan.warn()
    want = Path(pattern).parts
    found = (os.path.normpath(p) if root is None else p for p in scan.files)
    return [p for p in found if _parts_match(Path(p).parts, want)]


def _parts_match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether path parts match glob pattern parts, ``**`` standing for any number of
    folders (none included), as ``glob(recursive=True)`` reads it."""
    def past_stars(states: set[int]) -> set[int]:
        out, todo = set(states), list(states)
        while todo:
            j = todo.pop()
            if j < len(pattern) and pattern[j] == "**" and j + 1 not in out:
                out.add(j + 1)
                todo.append(j + 1)
        return out

    states = past_stars({0})
    for part in parts:
        states = past_stars({j if pattern[j] == "**" else j + 1 for j in states
                             if j < len(pattern) and (pattern[j] == "**"
                                                      or fnmatch.fnmatchcase(part, pattern[j]))})
        if not states:
            return False
    return len(pattern) in states


def _hidden_below(path: Path, root: Path | None) -> bool:
    """Whether a part of ``path`` that a wildcard matched is hidden (``.x``, ``__MACOSX``).

    Parts the user typed out (``.cache/*.png``) are what they asked for.
    """
    parts = path.parts if root is None else path.parts[len(root.parts):]
    return any(is_hidden(part) for part in parts)


class Classifier:
    """A trained model ready to predict: ``cnnkit.load("runs/x").predict(["a.jpg"])``."""

    def __init__(self, model: torch.nn.Module | None, card: ModelCard,
                 device: torch.device | None, backend: str | Backend = "torch",
                 folder: Path | None = None, *,
                 loader: Callable[[], torch.nn.Module] | None = None) -> None:
        """``backend``: auto, torch, onnx, or a ready :class:`~cnnkit.runtime.backends.Backend`;
        ``folder``: where an ONNX export may be cached (the run folder). ``model`` may be
        None with a ready onnxruntime backend: ``loader`` then builds the torch module
        the first time it is asked for (Grad-CAM, export), and torch is never imported
        by prediction alone."""
        if model is None and (isinstance(backend, str) or loader is None):
            raise ValueError("a Classifier without a model needs a ready backend and a loader")
        self.backend: Backend = (backend if not isinstance(backend, str)
                                 else make_backend(backend, model, card, device, folder))
        self._model = model.eval() if model is not None else None
        self._loader = loader
        self.card = card
        self._device = device

    @property
    def model(self) -> torch.nn.Module:
        """The torch module (for Grad-CAM, feature maps and export), built on first use
        when the predictor runs on an exported file."""
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

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto",
             backend: str = "auto") -> Classifier:
        """A run folder, model.json, model.safetensors, or an ONNX file `cnnkit export`
        wrote (float or int8); ``backend``: one of
        :data:`~cnnkit.runtime.backends.BACKENDS`."""
        check_backend(backend)
        if backend in ONNX_KINDS and device == "auto":
            device = "cpu"  # onnxruntime's wheel runs on the CPU
        if Path(path).suffix.lower() == ".onnx":
            return cls._from_onnx_file(path, device, backend)
        exported = cls._from_export(path, device, backend)
        if exported is not None:
            return exported
        from cnnkit.artifacts.modelfile import load_model

        dev = pick_device(device)
        model, card = load_model(path, dev)
        return cls(model, card, dev, backend, find_sidecar(path).parent)

    @classmethod
    def _from_onnx_file(cls, path: str | os.PathLike, device: str,
                        backend: str = "auto") -> Classifier:
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
    def _from_export(cls, path: str | os.PathLike, device: str, backend: str
                     ) -> Classifier | None:
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

    @property
    def channels_last(self) -> bool:
        return self.backend.channels_last

    @property
    def classes(self) -> tuple[str, ...]:
        return self.card.classes

    def decode_image(self, item: ImageInput, *,
                     formats: tuple[str, ...] | None = None) -> np.ndarray:
        """One image as this model reads it, uint8 ``(C, H, W)``; ``formats`` (Pillow's
        names) refuses encoded images of any other format (a server's untrusted uploads)."""
        return self._decode(item, formats)

    def proba_decoded(self, arrays: list[np.ndarray] | np.ndarray, *, batch_size: int = 64,
                      tta: bool = False) -> np.ndarray:
        """Class probabilities ``(N, classes)`` of images from :meth:`decode_image` (a list,
        or one uint8 ``(N, C, H, W)`` array)."""
        return self._probs(arrays, batch_size, tta)

    def _decode(self, item: ImageInput, formats: tuple[str, ...] | None = None) -> np.ndarray:
        pre = self.card.preprocess
        if isinstance(item, np.ndarray):
            arr = item
            if arr.dtype != np.uint8:
                raise CnnkitError(f"Arrays must be uint8 images (H, W) or (H, W, C); got "
                                  f"{arr.dtype}.")
            item = Image.fromarray(arr if arr.ndim == 2 or arr.shape[2] != 1 else arr[:, :, 0])
        return decode(item, pre.channels, pre.decode_size, pre.interpolation,
                      formats=formats).transpose(2, 0, 1)

    def predict_proba(self, images: Sequence[ImageInput], *, batch_size: int = 64,
                      tta: bool = False) -> np.ndarray:
        """Class probabilities ``(N, classes)``; raises on an unreadable image."""
        arrays = []
        for item in images:
            try:
                arrays.append(self._decode(item))
            except CorruptImageError as exc:
                raise CnnkitError(str(exc)) from None
        return self._probs(arrays, batch_size, tta)

    def _probs(self, arrays: list[np.ndarray] | np.ndarray, batch_size: int, tta: bool
               ) -> np.ndarray:
        if len(arrays) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        pre = self.card.preprocess
        images = arrays if isinstance(arrays, np.ndarray) else np.stack(arrays)
        crop = pre.img_size / pre.decode_size
        if self._on_numpy(images, crop):
            return np.exp(self._scores(images, crop, batch_size, tta))
        import torch

        from cnnkit.data.imageset import ImageSet

        data = ImageSet(torch.from_numpy(images), torch.zeros(len(images), dtype=torch.long),
                        self.classes, crop_fraction=crop)
        return self._log_probs(data, tta, batch_size).exp().numpy()

    def _on_numpy(self, images: Any, crop_fraction: float) -> bool:
        """Whether these uint8 images go to onnxruntime through NumPy alone (no resize
        or channel change needed), rather than through the tensor pipeline."""
        return isinstance(self.backend, OnnxBackend) and prepares(
            tuple(images.shape), self.card.preprocess, crop_fraction)

    def _scores(self, images: np.ndarray, crop_fraction: float, batch_size: int, tta: bool
                ) -> np.ndarray:
        """Log-probabilities of uint8 ``images`` from the onnxruntime backend, batch by
        batch through one reused float buffer; as ``cnnkit.runtime.inference.log_probs``."""
        assert isinstance(self.backend, OnnxBackend)
        pre = self.card.preprocess
        batch = self.backend.batch_size(pre.img_size, batch_size)
        out = np.empty((len(images), len(self.classes)), dtype=np.float32)
        buf = np.empty((min(batch, len(images)), pre.channels, pre.img_size, pre.img_size),
                       dtype=np.float32)
        for start in range(0, len(images), batch):
            part = images[start:start + batch]
            x = model_input(part, pre, crop_fraction, out=buf)
            scores = _log_softmax(self.backend.run(x))
            if tta:  # averaged log-probabilities of the image and its mirror, renormalised
                x = model_input(part, pre, crop_fraction, flip=True, out=buf)
                scores = _log_softmax((scores + _log_softmax(self.backend.run(x))) / 2)
            out[start:start + len(part)] = scores
        return out

    def predict(self, images: Sequence[ImageInput] | ImageInput, *, top_k: int = 5,
                batch_size: int = 64, tta: bool = False,
                threshold: float | None = None) -> list[Prediction]:
        """Top-``k`` classes with probabilities.

        With ``threshold`` P, an image whose top probability is below P is labelled
        ``"unknown"`` (the report's confidence plot and table help to choose P).
        Unreadable images are skipped with a warning; if none can be read, that is an error.
        """
        threshold = check_threshold(threshold, "threshold")
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, bytes)):
            images = [images]
        arrays, names, skipped = [], [], []
        for i, item in enumerate(images):
            name = str(item) if isinstance(item, (str, os.PathLike)) else f"<image {i}>"
            try:
                arrays.append(self._decode(item))
                names.append(name)
            except CorruptImageError as exc:
                skipped.append(str(exc))
            except FileNotFoundError:
                skipped.append(f"{log.quoted(name)}: file not found")
        if skipped and not names:
            more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
            raise CnnkitError(f"No image could be read: {skipped[0]}{more}.")
        for message in skipped:
            log.warn(f"skipped {message}")
        probs = self._probs(arrays, batch_size, tta)
        k = max(1, min(top_k, len(self.classes)))
        out = []
        for name, row in zip(names, probs):
            order = np.argsort(-row)[:k]
            out.append(Prediction(name, [(self.classes[j], float(row[j])) for j in order],
                                  threshold))
        return out

    def evaluate(self, data: str, *, tta: bool = False, batch_size: int = 256) -> EvalResult:
        """Metrics on a built-in set's test split, a folder or a CSV."""
        from cnnkit.data.sources import load_eval_set

        imageset = load_eval_set(data, self.card.preprocess, self.classes)
        return self.evaluate_set(imageset, tta=tta, batch_size=batch_size)

    def evaluate_set(self, imageset: ImageSet, *, tta: bool = False,
                     batch_size: int = 256) -> EvalResult:
        from cnnkit.tasks.metrics import compute

        scores = self.log_probs(imageset, tta=tta, batch_size=batch_size)
        return compute(scores, imageset.labels, self.classes)

    def log_probs(self, imageset: ImageSet, *, tta: bool = False,
                  batch_size: int = 256) -> torch.Tensor:
        """Log-probabilities ``(N, classes)`` of decoded images (to combine models' scores)."""
        return self._log_probs(imageset, tta, batch_size)

    def _log_probs(self, data: ImageSet, tta: bool, batch_size: int) -> torch.Tensor:
        import torch

        from cnnkit.runtime.inference import log_probs

        pre, backend = self.card.preprocess, self.backend
        if data.images.device.type == "cpu" and self._on_numpy(data.images, data.crop_fraction):
            return torch.from_numpy(self._scores(data.images.numpy(), data.crop_fraction,
                                                 batch_size, tta))
        with backend.preprocessing():
            return log_probs(backend, data, pre, backend.device,
                             batch_size=backend.batch_size(pre.img_size, batch_size), tta=tta,
                             channels_last=backend.channels_last, split=False)

    def transform(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """The normalised input tensor the model sees for ``images``."""
        import torch

        from cnnkit.data.pipeline import eval_batch

        pre = self.card.preprocess
        x = torch.from_numpy(np.stack([self._decode(i) for i in images]))
        return eval_batch(x, pre, pre.img_size / pre.decode_size)


def load_predictor(model: str, device: str = "auto", backend: str = "auto") -> Classifier:
    """A run folder, model file or ONNX file; or a pretrained model's name for its
    ImageNet classes."""
    check_backend(backend)
    if os.path.exists(model):
        return Classifier.load(model, device, backend)
    from cnnkit.models.registry import get_model_info, is_registered

    if is_registered(model) and get_model_info(model).is_pretrained:
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
        if found is not None:  # an earlier export: no torch, no timm
            card, path = found
            return Classifier(None, card, None, OnnxBackend(path),
                              loader=lambda: imagenet_model(model)[0])
        net, card = imagenet_model(model)
        dev = pick_device(device)
        return Classifier(net.to(dev), card, dev, backend)
    raise CnnkitError(f"{model!r} is neither a run folder nor a pretrained model name. Pass a "
                      "folder made by `cnnkit train` (e.g. runs/fashion-mnist-fast-cnn) or "
                      "a pretrained model from `cnnkit models`.")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))
