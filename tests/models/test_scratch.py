"""Scratch models: every registered one forwards and trains; specs and YAML build stacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.base.errors import CnnkitError
from cnnkit.models.build import create_model, resolve
from cnnkit.models.layers import parse_spec
from cnnkit.models.registry import ModelInfo, list_models, register_model

SCRATCH = [m.name for m in list_models(family="scratch")]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_seed_cnn_has_the_tutorials_parameter_count() -> None:
    assert _params(create_model("seed-cnn", 10, 1, 28)) == 225_034


@pytest.mark.parametrize("name", SCRATCH)
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 40)])
def test_every_scratch_model_forwards_and_takes_a_training_step(name: str, channels: int,
                                                                size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, 5, channels, size)
    x = torch.randn(4, channels, size, size)
    y = torch.tensor([0, 1, 2, 3])
    assert model.eval()(x).shape == (4, 5)
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed), f"{name}: some parameters got no gradient"
    # timm's surface, used by transfer learning and the inspect tools.
    assert model.get_classifier().out_features == 5
    feats = model.forward_features(x)
    assert model.forward_head(feats).shape == (4, 5)
    model.reset_classifier(7)
    assert model.eval()(x).shape == (4, 7)


def test_registering_a_name_twice_is_an_error() -> None:
    info = list_models(family="scratch")[0]
    with pytest.raises(ValueError, match="registered twice"):
        register_model(ModelInfo(info.name, info.builder, "again"))


def test_spec_grammar_follows_keras_arithmetic() -> None:
    model = create_model("conv8k5s2same-maxpool2-conv16k3p1bn-avgpool2s1-drop0.25-dense32", 3,
                         1, 32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert (convs[0].out_channels, convs[0].kernel_size, convs[0].stride) == (8, (5, 5), (2, 2))
    assert convs[1].padding == (1, 1)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in model.modules())
    assert any(isinstance(m, nn.Dropout) and m.p == 0.25 for m in model.modules())
    # 32 -same,s2-> 16 -pool2-> 8 -p1 k3-> 8 -avgpool2 s1-> 7: 16 * 7 * 7 into dense32
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert dense[0].in_features == 16 * 7 * 7 and dense[0].out_features == 32
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_valid_padding_is_the_default_as_in_keras() -> None:
    layers = parse_spec("conv32k3-pool2-conv64k3-pool2-dense128")
    assert layers[0]["padding"] == "valid" and layers[0]["filters"] == 32
    assert [d["type"] for d in layers] == ["conv", "pool", "conv", "pool", "dense"]


def test_yaml_file_builds_the_same_stack(tmp_path: Path) -> None:
    path = tmp_path / "my-cnn.yaml"
    path.write_text("layers:\n"
                    "  - conv: {filters: 32, kernel: 3}\n"
                    "  - maxpool: 2\n"
                    "  - conv: 64\n"
                    "  - pool: 2\n"
                    "  - dense: 128\n")
    arch, _ = resolve(str(path))
    assert arch.name == "my-cnn"
    assert _params(create_model(str(path), 10, 1, 28)) == 225_034
    (tmp_path / "bad.yaml").write_text("layers:\n  - convolution: 3\n")
    with pytest.raises(CnnkitError, match="unknown layer 'convolution'"):
        create_model(str(tmp_path / "bad.yaml"), 10, 1, 28)


@pytest.mark.parametrize(("spec", "words"), [
    ("conv32k3-pool2-bogus7", "bogus7"),
    ("conv32k9-conv32k9-conv32k9-dense10", "shrink to nothing at layer 2"),
    ("resnet-tiny-99", "Unknown model"),
])
def test_spec_mistakes_are_clear(spec: str, words: str) -> None:
    with pytest.raises(CnnkitError, match=words):
        create_model(spec, 10, 1, 16)
