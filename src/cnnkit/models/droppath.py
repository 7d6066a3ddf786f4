"""Stochastic depth (drop-path) switched on in a built model's residual blocks.

timm's blocks hold a ``drop_path`` slot (an Identity or None when built without it), so
the rate can be set after the pretrained weights load, with the rule timm's builders use:
it grows linearly from 0 at the first block to ``rate`` at the last. DropPath has no
parameters, so model files and checkpoints are the same with it and without it.
"""

from __future__ import annotations

from timm.layers import DropPath
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from cnnkit.base.errors import CnnkitError


def set_drop_path(model: nn.Module, rate: float) -> int:
    """Give every residual block its share of ``rate``; returns how many blocks took it."""
    slots = [m for m in model.modules() if hasattr(m, "drop_path") and (
        isinstance(m.drop_path, (nn.Identity, DropPath))
        # timm's ResNet blocks keep drop_path=None when built without it.
        or (m.drop_path is None and isinstance(m, (BasicBlock, Bottleneck))))]
    if not slots:
        raise CnnkitError(
            f"--drop-path skips residual blocks, and {type(model).__name__} has none that "
            "cnnkit can reach (timm's EfficientNet, MobileNet, ResNet and ConvNeXt "
            "blocks have them). Drop --drop-path, or add dropout layers to the stack.")
    last = max(len(slots) - 1, 1)
    for i, block in enumerate(slots):
        share = rate * i / last
        block.drop_path = DropPath(share) if share > 0 else nn.Identity()
    return len(slots)
