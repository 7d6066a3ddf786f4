"""An int8 file fed the images' uint8 pixels: the same function as the file fed its
normalised floats, and only where the normalisation makes that exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from cnnkit.artifacts.onnxfile import OnnxMeta, export_onnx
from cnnkit.artifacts.pixel_input import pixel_variant
from cnnkit.base.errors import CnnkitError
from cnnkit.data.imageset import ImageSet
from cnnkit.data.preprocess import Preprocess, model_input, model_pixels
from cnnkit.export.quantize import quantize_int8
from cnnkit.runtime.backends import OnnxBackend

SIZE = 16
CLASSES = ("a", "b", "c")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU6(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, SIZE, SIZE), dtype=np.uint8)


def _files(tmp_path: Path, pre: Preprocess) -> tuple[nn.Module, Path, Path]:
    net = _net()
    path = export_onnx(net, OnnxMeta(CLASSES, pre, {"architecture": "tiny"}),
                       tmp_path / "m.onnx")
    calibration = _images(48, 1)
    data = ImageSet(torch.from_numpy(calibration), torch.zeros(48, dtype=torch.long), CLASSES)
    return net, path, quantize_int8(path, tmp_path / "m.int8.onnx", data, pre)


def _plain(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]


def test_pixels_in_give_what_the_file_gives_for_its_floats(tmp_path: Path) -> None:
    pre = Preprocess(SIZE, 3, (0.5,) * 3, (0.5,) * 3)  # pixel / 127.5 - 1: EfficientNet-Lite
    net, path, int8 = _files(tmp_path, pre)
    assert "Add" in {n.op_type for n in onnx.load(str(int8)).graph.node}
    backend = OnnxBackend(int8)
    assert backend.pixel_input and not OnnxBackend(path).pixel_input
    images = _images(20, 2)
    x, pixels = model_input(images, pre), model_pixels(images, pre)
    assert pixels.dtype == np.uint8
    file_itself = _plain(int8, x)  # the file as any onnxruntime user runs it
    np.testing.assert_array_equal(backend.run(pixels), file_itself)
    np.testing.assert_array_equal(backend.run(x), file_itself)
    with torch.inference_mode():
        reference = net(torch.from_numpy(x)).numpy()
    assert np.abs(file_itself - reference).max() < 0.1  # int8 approximates the float net
    with pytest.raises(CnnkitError, match="not uint8 pixels"):
        OnnxBackend(path).run(pixels)


def test_no_pixel_input_where_the_channels_are_normalised_apart(tmp_path: Path) -> None:
    pre = Preprocess(SIZE, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    _, _, int8 = _files(tmp_path, pre)
    assert "Add" not in {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert pixel_variant(onnx.load(str(int8)), pre) is None
    backend = OnnxBackend(int8)
    assert not backend.pixel_input
    x = model_input(_images(4, 3), pre)
    np.testing.assert_array_equal(backend.run(x), _plain(int8, x))


def test_a_grid_that_does_not_give_back_every_pixel_is_not_used(tmp_path: Path) -> None:
    """The check is on all 256 values: another normalisation than the file was made for
    (here std 0.25) does not quantize pixels back to themselves."""
    pre = Preprocess(SIZE, 3, (0.5,) * 3, (0.5,) * 3)
    _, _, int8 = _files(tmp_path, pre)
    model = onnx.load(str(int8))
    assert pixel_variant(model, pre) is not None
    assert pixel_variant(model, Preprocess(SIZE, 3, (0.5,) * 3, (0.25,) * 3)) is None
