"""Every registered model, generated from the registry (as timm tests every model).

Each name builds at a small size, runs forward, satisfies :class:`ModelInterface`, and
round-trips through ``model.safetensors`` + ``model.json``. Pretrained names are built
with random weights (no download), except ``efficientnet_lite0``, whose weights ship
with cnnkit; the features-mode variants (tapped depths, pooled maps) are included.
Each model is built once per case, at 28 px grey (scratch) or 64 px RGB (pretrained).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.models import group_parameters
from torch import nn

from cnnkit.artifacts.modelfile import ModelCard, load_model, save_model
from cnnkit.data.pipeline import Preprocess
from cnnkit.models import list_models
from cnnkit.models.build import Architecture, create_model
from cnnkit.models.interface import ModelInterface, classifier_params, evaluating
from cnnkit.models.pretrained import feature_kwargs

CLASSES = ("a", "b", "c", "d", "e")
# VGG-16's 134M parameters make each round trip seconds long; its features variant is
# the same catavgmax pooling as the other timm names', so it is built once, not twice.
HEAVY = {"vgg16"}


def _cases() -> list:
    cases = []
    for info in list_models():
        cases.append(pytest.param(Architecture(info.name), id=info.name))
        extra = feature_kwargs(info.name, info)
        if extra and info.name not in HEAVY:
            cases.append(pytest.param(Architecture(info.name, None, extra),
                                      id=f"{info.name}-features"))
    return cases


def _small_input(arch: Architecture) -> tuple[int, int]:
    """(channels, size): grey 28 px for scratch models, RGB 64 px for pretrained ones."""
    from cnnkit.models.build import resolve

    info = resolve(arch)[1]
    return (3, 64) if info.is_pretrained else (1, 28)


def test_the_cases_cover_every_registered_name() -> None:
    names = {p.values[0].name for p in _cases()}
    assert names == {m.name for m in list_models()}
    assert {"seed-cnn", "efficientnet_lite0", "alexnet", "vgg16"} <= names


@pytest.mark.parametrize("arch", _cases())
def test_builds_runs_and_satisfies_the_interface(arch: Architecture, tmp_path: Path) -> None:
    torch.manual_seed(0)
    chans, size = _small_input(arch)
    pretrained = arch.name == "efficientnet_lite0"  # bundled: no download
    model = create_model(arch, len(CLASSES), chans, size, pretrained=pretrained)
    assert isinstance(model, ModelInterface)
    x = torch.randn(2, chans, size, size)
    with torch.no_grad(), evaluating(model):
        out = model(x)
        assert out.shape == (2, len(CLASSES)) and torch.isfinite(out).all()
        feats = model.forward_features(x)
        assert torch.allclose(model.forward_head(feats), out, atol=1e-4)
        width = model.get_classifier().in_features  # timm: head_hidden_size or num_features
        assert model.forward_head(feats, pre_logits=True).shape == (2, width)
    assert model.training  # evaluating() gave the mode back

    head = classifier_params(model)
    assert head and all(p is dict(model.named_parameters())[n] for n, p in head)
    assert model.get_classifier().out_features == len(CLASSES)
    groups = group_parameters(model, model.group_matcher(coarse=True))
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))
    assert len(groups) >= 2
    assert {n for n, _ in head} <= set(groups[max(groups)])  # the classifier comes last

    pre = Preprocess(size, chans, (0.5,) * chans, (0.5,) * chans)
    save_model(model, ModelCard(arch, CLASSES, pre, {}), tmp_path / "model.safetensors")
    loaded, card = load_model(tmp_path)
    assert card.architecture == arch and card.classes == CLASSES
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))

    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3
    with torch.no_grad():
        assert model(x).shape == (2, 3)


def test_evaluating_restores_each_modules_own_mode() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    model.train()
    model[1].eval()  # as fine-tuning keeps batch norm statistics
    with evaluating(model) as same:
        assert same is model and not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, True, False, True]
    with pytest.raises(RuntimeError), evaluating(model):
        raise RuntimeError("restored on errors too")
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_classifier_params_of_a_model_without_a_classifier() -> None:
    assert classifier_params(nn.Linear(2, 2)) == []
