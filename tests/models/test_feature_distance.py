"""The model that also gives the unknown rule's feature distance: the same logits as the
model, and the distance the statistics give from the same features, full or low rank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit.models.build import create_model
from cnnkit.models.feature_distance import WithDistance
from cnnkit.tasks.ood import fit_stats


@pytest.mark.parametrize("rank", [16, 5])
def test_logits_unchanged_and_the_distance_is_the_statistics_own(rank):
    torch.manual_seed(0)
    model = create_model("conv8k3same-pool2-conv16k3-gap", 3, 1, 16).eval()
    x = torch.randn(64, 1, 16, 16)
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True).double().numpy()
        stats = fit_stats(feats, np.arange(64) % 3, 3, rank=rank)
        assert stats.whiten.shape == (16, rank) and (stats.iso > 0) == (rank < 16)
        logits, distance = WithDistance(model, stats.means, stats.whiten, stats.iso)(x[:8])
        np.testing.assert_allclose(logits.numpy(), model(x[:8]).numpy(), atol=1e-6)
    np.testing.assert_allclose(distance.numpy(), stats.distance(feats[:8]), rtol=1e-3,
                               atol=1e-3)
