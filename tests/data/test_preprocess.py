"""The NumPy model input (prediction without torch) is the tensor pipeline's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit.data.pipeline import eval_batch
from cnnkit.data.preprocess import Preprocess, model_input, prepares

LITE0 = Preprocess(224, 3, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)
IMAGENET = Preprocess(224, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875)
GREY = Preprocess(28, 1, (0.2860,), (0.3530,))
ODD = Preprocess(31, 3, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), crop_pct=0.9)


@pytest.mark.parametrize("pre", [LITE0, IMAGENET, GREY, ODD], ids=lambda p: str(p.img_size))
def test_model_input_equals_the_tensor_pipeline(pre: Preprocess, rng) -> None:
    size = pre.decode_size
    images = rng.integers(0, 256, (5, pre.channels, size, size), dtype=np.uint8)
    crop = pre.img_size / size
    ref = eval_batch(torch.from_numpy(images), pre, crop).numpy()
    got = model_input(images, pre, crop)
    assert got is not None and got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(model_input(images, pre, crop, flip=True), ref[..., ::-1])


def test_model_input_reuses_a_buffer_and_handles_a_short_last_batch(rng) -> None:
    images = rng.integers(0, 256, (7, 3, 256, 256), dtype=np.uint8)
    buf = np.empty((4, 3, 224, 224), dtype=np.float32)
    first = model_input(images[:4], LITE0, 224 / 256, out=buf)
    assert np.shares_memory(first, buf)
    last = model_input(images[4:], LITE0, 224 / 256, out=buf)
    assert last.shape == (3, 3, 224, 224) and np.shares_memory(last, buf)
    ref = eval_batch(torch.from_numpy(images[4:]), LITE0, 224 / 256).numpy()
    np.testing.assert_array_equal(last, ref)


def test_a_grey_image_into_an_rgb_model_is_repeated_as_the_tensor_pipeline_does(rng) -> None:
    images = rng.integers(0, 256, (3, 1, 256, 256), dtype=np.uint8)
    assert prepares(images.shape, IMAGENET, 224 / 256)
    ref = eval_batch(torch.from_numpy(images), IMAGENET, 224 / 256).numpy()
    assert ref.shape == (3, 3, 224, 224)
    np.testing.assert_array_equal(model_input(images, IMAGENET, 224 / 256), ref)


def test_images_that_need_a_resize_or_other_channels_are_left_to_torch(rng) -> None:
    assert prepares((2, 3, 256, 256), LITE0, 224 / 256)
    assert not prepares((2, 3, 28, 28), LITE0, 1.0)  # a built-in set's size: resized
    images = rng.integers(0, 256, (2, 3, 28, 28), dtype=np.uint8)
    assert model_input(images, LITE0) is None
