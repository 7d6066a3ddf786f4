"""The models a server holds: loaded from run folders or pretrained names, never trained."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit._version import __version__
from cnnkit.base.errors import CnnkitError
from cnnkit.runtime.predict import Classifier, load_predictor

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def build_classifier(model: str, backend: str = "auto", device: str = "auto") -> Classifier:
    """The one place the server turns a run folder, an ONNX file or a model name into a
    predictor; ``backend`` as ``cnnkit predict --backend`` takes it
    (:data:`~cnnkit.runtime.backend_names.BACKENDS`)."""
    return load_predictor(model, device, backend)


@dataclass
class ServedModel:
    """One model behind the API: its name in URLs, its predictor and what clients see."""

    name: str
    source: str
    classifier: Classifier
    backend: str
    ready: bool = field(default=False)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.classifier.classes

    def describe(self) -> dict[str, Any]:
        card = self.classifier.card
        pre = card.preprocess
        return {
            "name": self.name,
            "classes": list(card.classes),
            "num_classes": len(card.classes),
            "input": {"img_size": pre.img_size, "channels": pre.channels,
                      "decode_size": pre.decode_size},
            "preprocessing": pre.to_dict(),
            "architecture": card.architecture.to_dict(),
            # how outputs become answers (single-label: its temperature and unknown rule),
            # for a client that runs the ONNX file itself (the page, in the browser)
            "task": card.task.card_fields(),
            "backend": self.backend,
            "device": str(self.classifier.device),
            "ready": self.ready,
            "cnnkit_version": __version__,
        }

    def warm_up(self) -> None:
        """One forward pass on a blank image, so the first request pays no set-up cost."""
        pre = self.classifier.card.preprocess
        blank = np.zeros((pre.channels, pre.decode_size, pre.decode_size), dtype=np.uint8)
        self.classifier.proba_decoded([blank])
        self.ready = True


def parse_model_arg(arg: str) -> tuple[str, str]:
    """``NAME=RUN`` or ``RUN`` -> (name, source); a run's name is its folder's name."""
    name, sep, source = arg.partition("=")
    if not sep or os.path.exists(arg):
        source = arg
        path = Path(arg)
        name = path.parent.name if path.suffix in (".json", ".safetensors") else path.name
        name = name or source
    if not _NAME.match(name):
        raise CnnkitError(f"{name!r} cannot name a model in URLs: use letters, digits, '.', "
                          f"'_' and '-'. Name it with NAME=RUN, e.g. cats={source}")
    return name, source


def load_models(args: list[str], backend: str = "auto", device: str = "auto",
                threads: int | None = None) -> dict[str, ServedModel]:
    """Load each ``RUN`` or ``NAME=RUN``; two models with one name is an error.

    ``threads``: CPU threads for the forward pass, set before the backends are built
    (onnxruntime sessions take torch's thread count when they are opened).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    if not args:
        raise CnnkitError("Name at least one model to serve: a run folder made by "
                          "`cnnkit train`, or a pretrained model such as efficientnet_lite0.")
    models: dict[str, ServedModel] = {}
    for arg in args:
        name, source = parse_model_arg(arg)
        if name in models:
            raise CnnkitError(f"Two models are named {name!r} ({models[name].source} and "
                              f"{source}); name them apart with NAME=RUN, e.g. "
                              f"{name}-2={source}")
        classifier = build_classifier(source, backend, device)
        classifier.say_note()
        models[name] = ServedModel(name, source, classifier, classifier.backend.name)
    return models
