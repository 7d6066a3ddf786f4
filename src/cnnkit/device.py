"""Which torch device to run on: one small module so that prediction, serving and
inspection can choose a device without importing the trainer."""

from __future__ import annotations

import torch

from cnnkit.errors import CnnkitError


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA, then Apple's MPS, then the CPU), or a torch device name."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnnkitError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnkitError(f"--device {name} asks for a GPU, but PyTorch sees none here. "
                          "Use --device cpu (or auto).")
    return device
