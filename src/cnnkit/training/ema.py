"""Weight averaging: an exponential moving average (EMA) of the weights.

The average of the last steps' weights often tests better than the last step's, which
carries the noise of its final mini-batches; timm's and Ultralytics' trainers keep one.
timm's ``ModelEmaV3`` does the averaging (parameters and batch-norm buffers); this adds
the ramp that keeps the early weights from dominating a short run, and the step count
that ``--resume`` needs.
"""

from __future__ import annotations

import torch
from timm.utils import ModelEmaV3
from torch import nn


def ramped_decay(decay: float, step: int) -> float:
    """TensorFlow's ``num_updates`` ramp, ``(1 + step) / (10 + step)`` up to ``decay``: the
    average spans about the last tenth of the steps so far, where a plain mean of every
    step would let a short run's early weights dominate (docs/design-notes.md, "--ema")."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """An averaged copy of ``model`` (the uncompiled module: the Trainer compiles only
    its forward), updated after every optimizer step."""

    def __init__(self, model: nn.Module, decay: float, steps: int = 0) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.steps = steps
        self._ema = ModelEmaV3(model, decay=decay)

    @property
    def module(self) -> nn.Module:
        return self._ema.module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        self._ema.apply_update_(model, ramped_decay(self.decay, self.steps))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
