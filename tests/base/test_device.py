"""Choosing the device: whether it is surely the CPU is known without importing torch."""

from __future__ import annotations

import pytest
import torch

from cnnkit.base import device
from cnnkit.base.device import cpu_only


def test_cpu_only_agrees_with_torch_here() -> None:
    assert cpu_only("cpu")
    assert not cpu_only("cuda") and not cpu_only("cuda:1") and not cpu_only("mps")
    if cpu_only("auto"):  # never claims the CPU where torch would pick a GPU
        assert not torch.cuda.is_available()


def test_auto_is_the_cpu_when_no_gpu_can_be_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device.sys, "platform", "linux")
    monkeypatch.setattr(device.glob, "glob", lambda pattern: [])
    assert cpu_only("auto")
    monkeypatch.setattr(device.glob, "glob",
                        lambda pattern: ["/dev/nvidia0"] if "nvidia" in pattern else [])
    assert not cpu_only("auto")  # a GPU's device node: only torch can tell
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cpu_only("auto")  # every GPU hidden from this process
    monkeypatch.setattr(device.sys, "platform", "darwin")
    assert not cpu_only("auto")  # Apple's MPS: torch decides
