"""Every registered scratch model, generated from the registry: forward, one step, surface."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.base.errors import CnnkitError
from cnnkit.models import create_model, get_model_info, list_models, register_model
from cnnkit.models.registry import ModelInfo

SCRATCH = [m.name for m in list_models(family="scratch")]


def test_the_registry_holds_the_documented_scratch_models() -> None:
    assert {"seed-cnn", "lenet5", "vgg-bn", "fast-cnn", "resnet-small"} <= set(SCRATCH)
    assert len(SCRATCH) == len(set(SCRATCH))
    for info in list_models(family="scratch"):
        assert info.description and not info.is_pretrained


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_seed_cnn_has_exactly_225034_parameters() -> None:
    model = create_model("seed-cnn", num_classes=10, in_chans=1, img_size=28)
    assert _n_params(model) == 225_034
    # the textbook formulas: (F*F*C + 1) * K per conv, (N_in + 1) * N_out per dense
    conv1, conv2 = (3 * 3 * 1 + 1) * 32, (3 * 3 * 32 + 1) * 64
    dense1, dense2 = (5 * 5 * 64 + 1) * 128, (128 + 1) * 10
    assert conv1 + conv2 + dense1 + dense2 == 225_034


@pytest.mark.parametrize("name", SCRATCH)
@pytest.mark.parametrize("in_chans, size", [(1, 28), (3, 32), (3, 20)])
def test_forward(name: str, in_chans: int, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=in_chans, img_size=size).eval()
    x = torch.randn(2, in_chans, size, size)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 7) and torch.isfinite(out).all()
        # timm's surface: features, head, classifier
        feats = model.forward_features(x)
        assert feats.ndim == 4 and feats.shape[0] == 2
        assert torch.allclose(model.forward_head(feats), out, atol=1e-5)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.get_classifier().in_features)


@pytest.mark.parametrize("name", SCRATCH)
def test_one_training_step_changes_weights_and_stays_finite(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=3, img_size=24).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(4, 3, 24, 24), torch.tensor([0, 1, 2, 1])
    loss = nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)
    opt.step()
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len([p for p in model.parameters()]) // 2


@pytest.mark.parametrize("name", SCRATCH)
def test_reset_classifier(name: str) -> None:
    model = create_model(name, num_classes=10, in_chans=1, img_size=28)
    model.reset_classifier(4)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 4)


def test_registering_a_name_twice_is_an_error() -> None:
    info = get_model_info("seed-cnn")
    with pytest.raises(ValueError, match="registered twice"):
        register_model(ModelInfo("seed-cnn", info.builder, "again"))


def test_an_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(CnnkitError, match=r"Unknown model 'seed_cnn'.*Did you mean seed-cnn"):
        create_model("seed_cnn", 10)


def test_too_small_an_image_is_explained() -> None:
    with pytest.raises(CnnkitError, match=r"4x4 pixels shrink to nothing"):
        create_model("seed-cnn", 10, in_chans=1, img_size=4)
