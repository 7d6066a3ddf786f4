"""Stochastic depth set on built models: timm's rule, no new weights, clear refusals."""

from __future__ import annotations

import itertools

import pytest
import torch
from timm.layers import DropPath

from cnnkit.base.errors import CnnkitError
from cnnkit.models.build import create_model
from cnnkit.models.droppath import set_drop_path


def _rates(model: torch.nn.Module) -> list[float]:
    return [getattr(m.drop_path, "drop_prob", 0.0) for m in model.modules()
            if hasattr(m, "drop_path")]


def test_rates_rise_linearly_to_the_last_block_as_timm_builds_them() -> None:
    import timm

    model = create_model("efficientnet_lite0", 3, img_size=32)
    keys = list(model.state_dict())
    assert set_drop_path(model, 0.2) == 16
    ours = _rates(model)
    theirs = _rates(timm.create_model("tf_efficientnet_lite0", drop_path_rate=0.2))
    assert ours[0] == 0.0 and ours[-1] == pytest.approx(0.2)
    # timm spreads over block_idx / block_count, we over i / (n - 1): same shape, same top.
    assert all(b >= a for a, b in itertools.pairwise(ours))
    assert max(theirs) <= 0.2 and len(theirs) == len(ours)
    assert list(model.state_dict()) == keys  # model files stay the same


def test_blocks_are_skipped_while_training_and_never_in_eval() -> None:
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 3, img_size=32)
    set_drop_path(model, 0.5)
    x = torch.randn(8, 3, 32, 32)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_resnet_blocks_built_without_a_slot_take_it() -> None:
    model = create_model("resnet18", 3, img_size=32)
    assert set_drop_path(model, 0.1) == 8
    assert isinstance(model.layer4[1].drop_path, DropPath)


def test_a_stack_without_residual_blocks_is_refused() -> None:
    with pytest.raises(CnnkitError, match="has none"):
        set_drop_path(create_model("seed-cnn", 3, in_chans=1, img_size=28), 0.1)
