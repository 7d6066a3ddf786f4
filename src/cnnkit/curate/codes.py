"""Codes (embeddings) of a data set's images, from a frozen network.

The pretrained EfficientNet-Lite0 reads the images as the features mode does (the
same tapped depths, the same disk cache: :func:`cnnkit.training.features.cached_features`),
so a data set whose features were extracted once is not read again. Given a run, its
own model's pre-logits codes are used instead, at its own input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cnnkit.base.errors import CnnkitError
from cnnkit.data.imageset import ImageSet
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.source import DataSource
from cnnkit.training.events import Events

PRETRAINED = "efficientnet_lite0"
# Small images are enlarged to this side at least (and never past the model's 224):
# Fashion-MNIST's 28 px codes at 64 px are as good as at 96 for these tools and 2x
# cheaper (docs/design-notes.md, "Codes for knowing the data").
MIN_SIDE, MAX_SIDE = 64, 224


@dataclass(frozen=True)
class Coded:
    """Images, their labels, where each came from, and their codes ``(N, D)``."""

    codes: np.ndarray  # float32, L2-normalised rows
    labels: np.ndarray  # int64 class index per image
    classes: tuple[str, ...]
    names: tuple[str, ...]  # a path, or split#index for a built-in set
    splits: tuple[str, ...]  # train, val, test or all
    images: torch.Tensor  # uint8 (N, C, H, W), for thumbnails
    by: str  # which network made the codes, in words

    def __len__(self) -> int:
        return len(self.labels)


def code_side(images: torch.Tensor) -> int:
    """The input side for pretrained codes of these images: twice their side, rounded up
    to a multiple of 32, within MIN_SIDE..MAX_SIDE."""
    side = max(int(images.shape[2]), int(images.shape[3])) if images.ndim == 4 else MAX_SIDE
    return int(min(MAX_SIDE, max(MIN_SIDE, math.ceil(2 * side / 32) * 32)))


def lite0_input(img_size: int) -> Preprocess:
    """EfficientNet-Lite0's preprocessing at ``img_size``."""
    return Preprocess(img_size, 3, (0.5,) * 3, (0.5,) * 3, "bicubic", 1.0)


def load_data(data: str, pre: Preprocess | None = None
              ) -> tuple[list[tuple[str, ImageSet]], Preprocess]:
    """Every image of DATA by split (none held out), decoded once, and the input they are
    coded at: ``pre`` (a run's), else Lite0's at a side that suits the images."""
    from cnnkit.base import log
    from cnnkit.data.sources import describe, load_splits

    source = describe(data)
    pre = pre or lite0_input(_folder_side(source))  # built-in sets keep their own size
    quiet = log.silent()
    log.set_quiet(True)
    try:
        splits = load_splits(source, pre, val_fraction=None, test_fraction=None)
    finally:
        log.set_quiet(quiet)
    if splits.train.multilabel:
        raise CnnkitError(f"{data} is multi-label data (a set of labels per image); these "
                          "tools take one class per image.")
    parts = [(n, getattr(splits, n)) for n in ("train", "val", "test")
             if getattr(splits, n) is not None]
    if not source.presplit:
        parts = [("all", parts[0][1])]
    if pre.img_size != MAX_SIDE or source.kind != "builtin":
        return parts, pre
    return parts, lite0_input(code_side(parts[0][1].images))


def pretrained_codes(parts: list[tuple[str, ImageSet]], pre: Preprocess,
                     events: Events | None = None) -> Coded:
    """Codes of the frozen pretrained Lite0, read as the features mode reads it."""
    from cnnkit.models.build import Architecture, create_model
    from cnnkit.models.build import resolve as resolve_model
    from cnnkit.models.pretrained import feature_kwargs

    arch, info = resolve_model(PRETRAINED)
    arch = Architecture(arch.name, None, feature_kwargs(arch.name, info))
    model = create_model(arch, 1, 3, pre.img_size, pretrained=True)
    identity = {"architecture": arch.to_dict(), "weights": "pretrained"}
    return _coded(model, identity, parts, pre, f"pretrained {PRETRAINED} at {pre.img_size} px",
                  events)


def run_codes(run: str, data: str | None, events: Events | None = None) -> Coded:
    """Codes of a run's own model (its pre-logits features) for DATA, or for the run's
    own data when DATA is None."""
    from cnnkit.artifacts.modelfile import load_model
    from cnnkit.artifacts.rundir import RunDir

    folder = RunDir.open(run)
    if not folder.model_path.is_file():
        raise CnnkitError(f"{folder.root} has no model.safetensors yet. Pass a finished run.")
    model, card = load_model(folder.model_path)
    if data is None:
        import json

        data = json.loads(folder.config_path.read_text())["data"]
    parts, pre = load_data(data, card.preprocess)
    classes = parts[0][1].classes
    if tuple(classes) != tuple(card.classes):
        raise CnnkitError(f"{data} has classes {list(classes)}, and the run's model "
                          f"{list(card.classes)}. Pass the data the run was trained on.")
    identity = {"run_model": card.sha256 or str(folder.model_path.resolve())}
    return _coded(model, identity, parts, pre, f"the model of {folder.root}", events)


def _coded(model: torch.nn.Module, identity: dict[str, object],
           parts: list[tuple[str, ImageSet]], pre: Preprocess, by: str,
           events: Events | None) -> Coded:
    from cnnkit.base.device import pick_device
    from cnnkit.training.features import cached_features

    device = pick_device("auto")
    model = model.to(device).eval()
    codes, labels, names, splits, images = [], [], [], [], []
    for split, part in parts:
        feats, _ = cached_features(model, identity, part, pre, device, channels_last=False,
                                   label=f"codes ({split})", events=events)
        codes.append(feats.numpy())
        labels.append(part.labels.numpy())
        names += list(part.paths) if part.paths is not None else \
            [f"{split}#{i}" for i in range(len(part))]
        splits += [split] * len(part)
        images.append(part.images)
    x = np.concatenate(codes).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return Coded(x, np.concatenate(labels).astype(np.int64), tuple(parts[0][1].classes),
                 tuple(names), tuple(splits), torch.cat(images), by)


def _folder_side(source: DataSource) -> int:
    """The coding side for a folder or CSV from its probed median side (built-in: any)."""
    try:
        facts = source.peek().facts
    except CnnkitError:
        facts = None
    return code_side(torch.empty(0, 0, facts.side, facts.side)) if facts and facts.side \
        else MAX_SIDE
