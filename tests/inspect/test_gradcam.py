"""Grad-CAM finds the object; it matches a direct computation; feature maps and filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.base.errors import CnnkitError
from cnnkit.inspect.gradcam import (
    default_cam_layer,
    default_feature_layers,
    feature_maps,
    first_conv,
    grad_cam,
)
from cnnkit.models import create_model


def _bright_object_net() -> nn.Module:
    """Responds to bright blobs: box filter with a threshold, pooling, a 'bright' class."""
    conv = nn.Conv2d(1, 1, 5, padding=2)
    with torch.no_grad():
        conv.weight.fill_(1 / 25)
        conv.bias.fill_(-0.45)  # the noisy dark background (mean 0.2) stays below 0
    net = nn.Sequential()
    net.features = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2))
    net.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.classifier = nn.Linear(1, 2)
    with torch.no_grad():
        net.classifier.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        net.classifier.bias.zero_()
    return net.eval()


def _scene(top: int, left: int, size: int = 8, side: int = 48, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    img = 0.2 + 0.08 * torch.randn(side, side, generator=gen)
    img[top:top + size, left:left + size] = 0.95
    return img.clamp(0, 1)[None]


def test_peak_lies_on_the_bright_object() -> None:
    net = _bright_object_net()
    corners = [(4, 6), (30, 8), (20, 34), (36, 36)]
    x = torch.stack([_scene(top, left, seed=i) for i, (top, left) in enumerate(corners)])
    result = grad_cam(net, x, target=1)
    assert result.layer == "features" and result.layer_shape == (1, 24, 24)
    assert result.cams.shape == (4, 48, 48)
    assert result.cams.min() >= 0 and result.cams.max() == pytest.approx(1.0)
    for cam, (top, left) in zip(result.cams, corners):
        y, x_ = np.unravel_index(cam.argmax(), cam.shape)
        assert top <= y < top + 8 and left <= x_ < left + 8
        assert cam[top:top + 8, left:left + 8].mean() > 0.5  # hot on the object
        assert cam.mean() < 0.1  # and cold around it


def test_matches_a_direct_computation_for_any_target() -> None:
    torch.manual_seed(0)
    model = create_model("seed-cnn", 10, 1, 28).eval()
    x = torch.randn(3, 1, 28, 28)
    targets = [2, 7, 7]
    ours = grad_cam(model, x, targets, layer="features")
    feats = model.forward_features(x).detach().requires_grad_(True)
    logits = model.forward_head(feats)
    logits[torch.arange(3), torch.tensor(targets)].sum().backward()
    cam = F.relu((feats.grad.mean((2, 3), keepdim=True) * feats).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).min(1).values[:, None, None]
    hi = cam.flatten(1).max(1).values[:, None, None]
    expected = ((cam - lo) / (hi - lo).clamp(min=1e-12)).detach().numpy()
    np.testing.assert_allclose(ours.cams, expected, atol=1e-5)
    assert ours.classes.tolist() == targets
    np.testing.assert_allclose(ours.probs, logits.softmax(1).detach().numpy(), atol=1e-6)
    top = grad_cam(model, x)  # default: each image's top class
    assert top.classes.tolist() == logits.argmax(1).tolist()


def test_frozen_model_in_place_layers_and_no_leftovers() -> None:
    model = create_model("resnet-small", 3, 3, 32)
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    # features.0.1 is a batch norm followed by an in-place ReLU.
    result = grad_cam(model, x, 0, layer="features.0.1")
    assert result.cams.shape == (2, 32, 32) and result.layer_shape == (32, 32, 32)
    assert model.training  # mode restored
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(CnnkitError, match="No layer 'nope'"):
        grad_cam(model, x, layer="nope")
    with pytest.raises(CnnkitError, match="convolutional"):
        grad_cam(model, x, layer="head.1")


def test_default_layers_feature_maps_and_filters() -> None:
    seed = create_model("seed-cnn", 10, 1, 28).eval()
    x = torch.rand(1, 1, 28, 28)
    assert default_feature_layers(seed, x) == ["features.1", "features.4"]  # the two ReLUs
    # fast-cnn's last maps are 3x3 at 28 px: Grad-CAM takes the last 7x7 layer instead.
    fast = create_model("fast-cnn", 10, 1, 28).eval()
    assert default_cam_layer(fast, x) == "features.8"
    vgg = create_model("vgg-bn", 10, 3, 32).eval()
    layers = default_feature_layers(vgg, torch.rand(1, 3, 32, 32))
    assert len(layers) == 4 and layers[0] == "features.2"
    maps = feature_maps(seed, x, ["features.0", "features.4"])
    assert maps["features.0"].shape == (32, 26, 26) and maps["features.4"].min() >= 0
    np.testing.assert_allclose(maps["features.0"], seed.features[0](x)[0].detach().numpy(),
                               atol=1e-6)
    with pytest.raises(CnnkitError, match="no spatial output"):
        feature_maps(seed, x, ["head.1"])
    name, conv = first_conv(seed)
    assert name == "features.0" and conv.weight.shape == (32, 1, 3, 3)


def test_a_layer_the_forward_pass_skips_is_named() -> None:
    """A module the model holds but never runs (a wrapped backbone's own pooling) has no
    map: one line says so, not a KeyError."""
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.unused = nn.Conv2d(2, 2, 1)
            self.fc = nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean((2, 3)))

    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(CnnkitError, match="'unused' does not run when this model predicts"):
        grad_cam(Skips(), x, layer="unused")
    with pytest.raises(CnnkitError, match="'unused' does not run when this model predicts"):
        feature_maps(Skips(), x, ["conv", "unused"])
