"""What a CNN looks at: Grad-CAM heat maps, feature maps of chosen layers, first-layer filters.

Grad-CAM (Selvaraju et al. 2017): take the feature maps ``A`` of a late convolutional
layer and the gradient of the class score with respect to them; weight each channel
by its mean gradient, sum, keep the positive part and scale it up to the image.
A forward hook swaps the layer's output for a detached copy that requires grad, so
the heat map needs no parameter gradients and works on frozen or pretrained models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.base.errors import CnnkitError
from cnnkit.models.interface import evaluating


@dataclass(frozen=True)
class CamResult:
    """Heat maps ``(B, H, W)`` in 0..1 at the input's size, for ``classes`` ``(B,)``."""

    cams: np.ndarray
    classes: np.ndarray
    probs: np.ndarray  # (B, num_classes) probabilities (softmax of the logits by default)
    layer: str
    layer_shape: tuple[int, ...]  # (C, h, w) of the layer the maps come from


def _named(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


def _not_run(layer: str) -> CnnkitError:
    return CnnkitError(f"Layer {layer!r} does not run when this model predicts (the model "
                       "holds it but its forward pass goes another way); `cnnkit summary` "
                       "lists the layers that run.")


def layer_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape without batch) of every module, in the order the modules finish."""
    found: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                found.append((name, tuple(out.shape[1:])))
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def default_cam_layer(model: nn.Module, x: torch.Tensor, min_side: int = 7) -> str:
    """The last layer whose output is still a spatial map of at least ``min_side`` pixels.

    For cnnkit's and timm's models at their usual sizes that is the output of
    ``forward_features`` (``features``; ``bn2`` of an EfficientNet, 7 x 7 at 224 px), the
    layer Grad-CAM is usually shown for. Where the last maps are smaller (3 x 3 after
    three poolings of a 28-pixel image) a heat map says little, so an earlier, finer
    layer is taken.
    """
    outputs = layer_outputs(model, x[:1])
    spatial = [(n, s) for n, s in outputs if len(s) == 3 and s[1] * s[2] > 1]
    if not spatial:
        raise CnnkitError("This model has no layer with a spatial output for Grad-CAM.")
    largest = max(min(s[1], s[2]) for _, s in spatial)
    fine = [n for n, s in spatial if min(s[1], s[2]) >= min(min_side, largest)]
    return fine[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | list[int] | None = None,
             layer: str | None = None,
             to_probs: Callable[[torch.Tensor], torch.Tensor] | None = None) -> CamResult:
    """Grad-CAM for a batch ``x`` (normalised input) and the ``target`` class of each image.

    ``target`` None takes each image's top class. ``layer`` names a module
    (``model.named_modules()``); by default the last spatial top-level part.
    ``to_probs``: the probabilities of logits (default: softmax; a multi-label model's
    task gives a sigmoid per label).
    """
    modules = _named(model)
    layer = layer or default_cam_layer(model, x)
    if layer not in modules:
        raise CnnkitError(f"No layer {layer!r} in this model; `cnnkit summary` lists the "
                          "layer names.")
    captured: dict[str, torch.Tensor] = {}

    def swap(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        leaf = out.detach().requires_grad_(True)
        captured["a"] = leaf
        return leaf * 1.0  # a new tensor, so later in-place layers leave the leaf alone

    handle = modules[layer].register_forward_hook(swap)
    try:
        with torch.enable_grad(), evaluating(model):
            logits = model(x).float()
            if "a" not in captured:
                raise _not_run(layer)
            if target is None:
                targets = logits.argmax(1)
            else:
                targets = torch.as_tensor(target, device=logits.device).reshape(-1)
                if len(targets) == 1 and len(x) > 1:
                    targets = targets.expand(len(x))
            score = logits.gather(1, targets[:, None]).sum()
            acts = captured["a"]
            if acts.ndim != 4:
                raise CnnkitError(f"Layer {layer!r} gives {tuple(acts.shape[1:])} outputs; "
                                  "Grad-CAM needs a convolutional (C, H, W) layer.")
            (grads,) = torch.autograd.grad(score, acts)
    finally:
        handle.remove()
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts.detach().float()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    cam = (cam - lo[:, None, None]) / (hi - lo).clamp(min=1e-12)[:, None, None]
    probs = to_probs(logits.detach()) if to_probs is not None else logits.detach().softmax(1)
    return CamResult(cam.cpu().numpy(), targets.cpu().numpy(), probs.cpu().numpy(), layer,
                     tuple(acts.shape[1:]))


def feature_maps(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, np.ndarray]:
    """Outputs ``(C, H, W)`` of the named layers for the first image of ``x``."""
    modules = _named(model)
    unknown = [n for n in layers if n not in modules or not n]
    if unknown:
        raise CnnkitError(f"No layer {unknown[0]!r} in this model; `cnnkit summary` lists the "
                          "layer names (e.g. --layer features.3).")
    maps: dict[str, np.ndarray] = {}
    ran: set[str] = set()
    handles = []
    for name in layers:
        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            ran.add(name)
            if isinstance(out, torch.Tensor) and name not in maps:
                maps[name] = out[0].detach().float().cpu().numpy().copy()
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad(), evaluating(model):
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    skipped = [n for n in layers if n not in ran]
    if skipped:
        raise _not_run(skipped[0])
    flat = [n for n in layers if n in maps and maps[n].ndim != 3]
    if flat:
        raise CnnkitError(f"Layer {flat[0]!r} has no spatial output ({maps[flat[0]].shape}); "
                          "pick a convolution, activation or pooling layer.")
    return maps


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU,
                nn.Hardswish, nn.ELU)


def default_feature_layers(model: nn.Module, x: torch.Tensor, count: int = 4) -> list[str]:
    """A few layers spread from input to output: activations, i.e. what each stage passes on.

    Falls back to convolutions, then to any module with a spatial output.
    """
    outputs = layer_outputs(model, x[:1])
    modules = _named(model)
    order = list(dict.fromkeys(n for n, s in outputs if len(s) == 3 and s[1] * s[2] > 1))
    candidates = [n for n in order if isinstance(modules[n], _ACTIVATIONS)]
    if len(candidates) < 2:
        candidates = [n for n in order if isinstance(modules[n], nn.Conv2d)] or order
    if len(candidates) <= count:
        return candidates
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return [candidates[i] for i in dict.fromkeys(picks.tolist())]


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first 2-D convolution (in registration order: the stem of every usual CNN)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise CnnkitError("This model has no 2-D convolution layer to show filters of.")
