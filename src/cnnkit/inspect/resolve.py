"""Turn a MODEL argument (run folder, model file, registered name, layer spec, .yaml) into a
model to inspect, with the input size it is summarised at."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.base.config import check_img_size
from cnnkit.base.errors import CnnkitError

if TYPE_CHECKING:
    from torch import nn

# Scratch models adapt to their input; without --img-size/--channels/--classes they are
# shown at Fashion-MNIST's 28 x 28 x 1 with 10 classes, the tutorials' example.
SCRATCH_DEFAULT = (28, 1, 10)
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Inspected:
    model: nn.Module
    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    classes: int
    source: str  # "run" | "registered" | "spec"


def refuse_onnx(arg: str, command: str, needs: str) -> None:
    """Refuse an ONNX export where a PyTorch model is needed, naming what to pass."""
    path = Path(os.path.expanduser(arg))
    if path.suffix.lower() != ".onnx" or path.is_dir():  # a folder a user named 'x.onnx'
        return
    beside = path.parent / "model.json"
    where = f" ({path.parent})" if beside.is_file() else ""
    raise CnnkitError(f"{arg} is an ONNX export; {command} needs the PyTorch model ({needs}): "
                      f"pass the run folder or model.json{where} it was exported from.")


def _is_model_path(arg: str) -> bool:
    p = Path(os.path.expanduser(arg))
    return p.is_dir() or (p.is_file() and p.suffix in (".json", ".safetensors"))


@dataclass(frozen=True)
class Stack:
    """A layer stack to summarise from its layers, without building it."""

    layers: list[dict[str, Any]]
    name: str
    input_shape: tuple[int, int, int]
    classes: int


def _check_file(arg: str) -> None:
    """A file given as the model must be one a summary can read."""
    refuse_onnx(arg, "summary", "it traces the layers of a forward pass")
    path = Path(os.path.expanduser(arg))
    if path.is_file() and path.suffix.lower() not in (".json", ".safetensors", ".yaml", ".yml"):
        raise CnnkitError(f"{arg} is not a model: pass a run folder, a model.json or "
                          ".safetensors file, a registered name (`cnnkit models`), a layer "
                          "spec such as 'conv32k3-pool2-dense128' or a .yaml file.")


def _check_sizes(img_size: int | None, channels: int | None, classes: int | None) -> None:
    check_img_size(img_size)
    for flag, value in (("--channels", channels), ("--classes", classes)):
        if value is not None and value < 1:
            raise CnnkitError(f"{flag} must be positive. Received: {value}")
    if channels is not None and channels not in (1, 3):
        raise CnnkitError(f"--channels must be 1 or 3. Received: {channels}")


def stack_to_inspect(arg: str, img_size: int | None = None, channels: int | None = None,
                     classes: int | None = None) -> Stack | None:
    """``arg`` as a layer stack (a registered stack, a spec or a .yaml file), or None when
    it names a saved model or another kind of model."""
    _check_file(arg)
    _check_sizes(img_size, channels, classes)
    if _is_model_path(arg):
        return None
    from cnnkit.models.build import resolve

    arch, _ = resolve(arg)
    if arch.layers is None:
        return None
    size = img_size or SCRATCH_DEFAULT[0]
    return Stack(list(arch.layers), arch.name, (channels or SCRATCH_DEFAULT[1], size, size),
                 classes or SCRATCH_DEFAULT[2])


def model_to_inspect(arg: str, img_size: int | None = None, channels: int | None = None,
                     classes: int | None = None) -> Inspected:
    """The model ``arg`` names, built with random weights unless it is a saved model."""
    _check_file(arg)
    _check_sizes(img_size, channels, classes)
    if _is_model_path(arg):
        from cnnkit.artifacts.modelfile import load_model

        given = [f for f, v in (("--img-size", img_size), ("--channels", channels),
                                ("--classes", classes)) if v is not None]
        if given:
            raise CnnkitError(f"A saved model has its own input size and classes; drop "
                              f"{', '.join(given)}.")
        model, card = load_model(Path(os.path.expanduser(arg)))
        if card.info.get("mode") == "features":
            _freeze_backbone(model)
        pre = card.preprocess
        return Inspected(model, card.architecture.name, (pre.channels, pre.img_size,
                                                         pre.img_size), len(card.classes), "run")
    from cnnkit.models.build import create_model, resolve

    arch, info = resolve(arg)
    if info.channels is not None and channels not in (None, info.channels):
        raise CnnkitError(f"{arch.name} takes {info.channels}-channel images. "
                          f"Received: --channels {channels}")
    size = img_size or info.img_size or SCRATCH_DEFAULT[0]
    chans = channels or info.channels or SCRATCH_DEFAULT[1]
    n = classes or (IMAGENET_CLASSES if info.is_pretrained else SCRATCH_DEFAULT[2])
    model = create_model(arch, n, chans, size, pretrained=False)
    source = "registered" if _registered(arg) else "spec"
    return Inspected(model.eval(), arch.name, (chans, size, size), n, source)


def _freeze_backbone(model: nn.Module) -> None:
    """A features-mode run trained its classifier alone: mark the rest frozen, as it was
    (a loaded model has every parameter trainable), so the summary counts it so."""
    from cnnkit.models.interface import classifier_params

    head = {id(p) for _, p in classifier_params(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)


def _registered(name: str) -> bool:
    from cnnkit.models.registry import is_registered

    return is_registered(name)
