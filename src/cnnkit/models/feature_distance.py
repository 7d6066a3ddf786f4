"""A model that also says how far each image's features are from the known classes.

:class:`WithDistance` wraps a trained model for inference and export: it returns the
logits and each image's squared Mahalanobis distance from its penultimate features
(``forward_head(..., pre_logits=True)``) to the nearest class mean, read through a
whitening (:class:`cnnkit.tasks.ood.FeatureStats`), as the unknown rule reads it. One
forward pass gives both; in an ONNX file the distance is a second output.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class WithDistance(nn.Module):
    """``model`` returning ``(logits, distance)``; ``means`` ``(K, D)``, ``whiten``
    ``(D, r)`` and ``iso`` as :class:`cnnkit.tasks.ood.FeatureStats` holds them (and
    reads them: with ``iso > 0``, ``iso |f - mu|^2`` less the whitened part)."""

    def __init__(self, model: nn.Module, means: np.ndarray, whiten: np.ndarray,
                 iso: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.iso = float(iso)
        m = torch.from_numpy(np.asarray(means, np.float32))
        w = torch.from_numpy(np.asarray(whiten, np.float32))
        centres = m @ w
        self.register_buffer("whiten", w)
        self.register_buffer("centres_t", centres.T.contiguous())
        self.register_buffer("centre_norms", (centres * centres).sum(1))
        self.register_buffer("means_t", m.T.contiguous())
        self.register_buffer("mean_norms", (m * m).sum(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.model.forward_features(x)
        logits = self.model.forward_head(maps)
        feats = self.model.forward_head(maps, pre_logits=True).float()
        z = feats @ self.whiten
        d = (z * z).sum(1, keepdim=True) - 2 * (z @ self.centres_t) + self.centre_norms
        if self.iso:  # the covariance's top directions, and one variance for the rest
            d = self.iso * ((feats * feats).sum(1, keepdim=True)
                            - 2 * (feats @ self.means_t) + self.mean_norms) - d
        return logits, d.min(dim=1).values.clamp_min(0.0)
