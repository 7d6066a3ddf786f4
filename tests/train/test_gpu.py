"""GPU paths: resident uint8 data, bf16 autocast, channels_last. Skipped without CUDA;
the same code runs on the CPU in the rest of the suite."""

from __future__ import annotations

import pytest
import torch

import cnnkit
from cnnkit.data.imageset import ImageSet
from cnnkit.data.loader import resident

pytestmark = pytest.mark.gpu


def test_data_becomes_resident_on_the_gpu() -> None:
    data = ImageSet(torch.zeros(8, 1, 28, 28, dtype=torch.uint8), torch.zeros(8, dtype=torch.long),
                    ("a",))
    moved = resident(data, torch.device("cuda"))
    assert moved.images.is_cuda and moved.images.dtype == torch.uint8


def test_bf16_training_on_the_gpu_learns(tmp_path) -> None:
    result = cnnkit.train("shapes:size=32,count=600", model="fast-cnn", epochs=6,
                          device="cuda", out=str(tmp_path), plots=False)
    assert result.config.precision == "bf16"
    assert result.test_accuracy > 0.8
