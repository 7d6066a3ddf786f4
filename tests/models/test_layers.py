"""Custom stacks: the layer-spec grammar, YAML files, and the messages for mistakes in them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit.base.errors import CnnkitError
from cnnkit.models import create_model
from cnnkit.models.build import resolve
from cnnkit.models.layers import load_yaml, parse_spec
from cnnkit.models.sidecar_schema import NAME


def _layers(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_seed_spec_is_the_seed_cnn() -> None:
    spec = create_model("conv32k3-pool2-conv64k3-pool2-dense128", 10, 1, 28)
    assert _n_params(spec) == 225_034
    assert [type(m).__name__ for m in spec.features] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d"]


@pytest.mark.parametrize("token, layer", [
    ("conv32", {"type": "conv", "filters": 32, "kernel": 3, "stride": 1, "padding": "valid",
                "batchnorm": False, "activation": "relu"}),
    ("conv16k5s2same", {"type": "conv", "filters": 16, "kernel": 5, "stride": 2,
                        "padding": "same", "batchnorm": False, "activation": "relu"}),
    ("conv8k3p2bn:tanh", {"type": "conv", "filters": 8, "kernel": 3, "stride": 1,
                          "padding": 2, "batchnorm": True, "activation": "tanh"}),
    ("pool2", {"type": "pool", "kind": "max", "size": 2, "stride": 2}),
    ("maxpool3s2", {"type": "pool", "kind": "max", "size": 3, "stride": 2}),
    ("avgpool2", {"type": "pool", "kind": "avg", "size": 2, "stride": 2}),
    ("gap", {"type": "global_pool", "kind": "avg"}),
    ("gmp", {"type": "global_pool", "kind": "max"}),
    ("drop0.25", {"type": "dropout", "rate": 0.25}),
    ("drop50", {"type": "dropout", "rate": 0.5}),
    ("dense64bn:linear", {"type": "dense", "units": 64, "batchnorm": True,
                          "activation": "linear"}),
    ("flatten", {"type": "flatten"}),
    ("bn", {"type": "batchnorm"}),
    ("tanh", {"type": "activation", "name": "tanh"}),
])
def test_spec_tokens(token: str, layer: dict) -> None:
    assert parse_spec(token) == [layer]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_valid_padding_shrinks_and_same_keeps_the_size() -> None:
    valid = create_model("conv4k5", 2, 1, 28)
    same = create_model("conv4k5same", 2, 1, 28)
    x = torch.zeros(1, 1, 28, 28)
    assert valid.forward_features(x).shape == (1, 4, 24, 24)  # 28 - 5 + 1
    assert same.forward_features(x).shape == (1, 4, 28, 28)
    strided = create_model("conv4k3s2same", 2, 1, 28)
    assert strided.forward_features(x).shape == (1, 4, 14, 14)
    padded = create_model("conv4k3s2p1", 2, 1, 27)
    # floor((W - F + 2P) / S) + 1 = floor((27 - 3 + 2) / 2) + 1 = 14
    assert padded.forward_features(torch.zeros(1, 1, 27, 27)).shape == (1, 4, 14, 14)
    even = create_model("conv4k4same", 2, 1, 9)
    assert even.forward_features(torch.zeros(1, 1, 9, 9)).shape == (1, 4, 9, 9)


def test_pooling_kinds_and_sizes() -> None:
    model = create_model("conv4k3same-maxpool2-avgpool3s1-gmp", 2, 3, 16)
    pools = [type(m).__name__ for m in model.modules()
             if "Pool" in type(m).__name__]
    assert pools == ["MaxPool2d", "AvgPool2d", "AdaptiveMaxPool2d"]
    assert model.forward_features(torch.zeros(1, 3, 16, 16)).shape == (1, 4, 6, 6)
    assert model.num_features == 4  # global pooling: one value per channel


def test_dropout_dense_and_parameter_counts() -> None:
    model = create_model("conv8k3-drop0.25-dense32bn-drop50-dense16:tanh", 5, 3, 10)
    drops = [m.p for m in _layers(model, nn.Dropout)]
    assert drops == [0.25, 0.5]
    dense = _layers(model, nn.Linear)
    assert [(d.in_features, d.out_features) for d in dense] == [(8 * 8 * 8, 32), (32, 16),
                                                                (16, 5)]
    assert dense[0].bias is None  # batch norm follows: no bias
    assert _layers(model, nn.Tanh) and _layers(model, nn.BatchNorm1d)
    conv = _layers(model, nn.Conv2d)[0]
    assert sum(p.numel() for p in conv.parameters()) == (3 * 3 * 3 + 1) * 8
    assert model(torch.zeros(2, 3, 10, 10)).shape == (2, 5)


def test_the_readme_yaml_example(tmp_path: Path) -> None:
    (tmp_path / "my-cnn.yaml").write_text(
        "layers:\n"
        "  - conv: {filters: 32, kernel: 3, padding: same, batchnorm: true}\n"
        "  - maxpool: 2\n"
        "  - dropout: 0.25\n"
        "  - dense: 128\n")
    yaml_model = create_model(str(tmp_path / "my-cnn.yaml"), 10, 1, 28)
    spec_model = create_model("conv32k3samebn-pool2-drop0.25-dense128", 10, 1, 28)
    assert str(yaml_model) == str(spec_model)
    assert _n_params(yaml_model) == _n_params(spec_model)
    arch, _ = resolve(str(tmp_path / "my-cnn.yaml"))
    assert arch.name == "my-cnn" and arch.layers[0]["filters"] == 32


def test_yaml_takes_the_spec_words(tmp_path: Path) -> None:
    """Every spec word works as a YAML layer: a string, a key, or a key with options."""
    (tmp_path / "words.yaml").write_text(
        "layers:\n"
        "  - conv32k3same\n"
        "  - bn\n"
        "  - relu\n"
        "  - pool: {size: 2}\n"
        "  - avgpool: {size: 2, stride: 1}\n"
        "  - conv: 8\n"
        "  - batchnorm\n"
        "  - tanh\n"
        "  - drop: 0.1\n"
        "  - gmp\n"
        "  - dense: {units: 16, activation: sigmoid}\n"
        "  - dropout: 20\n")
    layers = load_yaml(tmp_path / "words.yaml")
    assert [layer["type"] for layer in layers] == [
        "conv", "batchnorm", "activation", "pool", "pool", "conv", "batchnorm", "activation",
        "dropout", "global_pool", "dense", "dropout"]
    assert layers[4]["kind"] == "avg" and layers[9]["kind"] == "max"
    assert layers[8]["rate"] == 0.1 and layers[11]["rate"] == 0.2
    model = create_model(str(tmp_path / "words.yaml"), 3, 3, 16)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)
    (tmp_path / "keys.yaml").write_text(
        "layers:\n  - conv: {filters: 4}\n  - bn:\n  - gap:\n  - flatten:\n  - Dense: 8\n")
    assert [layer["type"] for layer in load_yaml(tmp_path / "keys.yaml")] == [
        "conv", "batchnorm", "global_pool", "flatten", "dense"]


def test_a_bare_yaml_list_works(tmp_path: Path) -> None:
    (tmp_path / "bare.yml").write_text("- conv: 4\n- gap\n")
    assert create_model(str(tmp_path / "bare.yml"), 2, 1, 8)(torch.zeros(1, 1, 8, 8)).shape == (
        1, 2)


@pytest.mark.parametrize("spec, message", [
    ("conv32k3-pool2-dens128", r"Cannot read 'dens128'"),
    ("conv0k3-dense8", r"filters of 'conv0k3'.*at least 1"),
    ("conv8k0-dense8", r"kernel.*at least 1"),
    ("conv8s0-dense8", r"stride.*at least 1"),
    ("conv8-pool0", r"pool size.*at least 1"),
    ("conv8-dense0", r"units.*at least 1"),
    ("conv8-drop1.0", r"[Dd]ropout rate"),
    ("conv8-dense8:swish", r"Unknown activation 'swish'"),
    ("dense8-conv8", r"comes after the dense part"),
])
def test_spec_mistakes_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(CnnkitError, match=message):
        create_model(spec, 3, 3, 32)


def test_an_empty_spec() -> None:
    with pytest.raises(CnnkitError, match="empty layer spec"):
        parse_spec(" - ")


@pytest.mark.parametrize("text, message", [
    ("layers: [conv: {filters: 8, padding: full}]", r"padding.*'full'"),
    ("layers: [conv: {filters: many}]", r"filters.*'many'"),
    ("layers: [conv: {kernel: 3}]", r"conv needs filters"),
    ("layers: [conv: {filters: 8, colour: red}]", r"no option\(s\) colour"),
    ("layers: [convolution: 8]", r"unknown layer 'convolution'"),
    ("layers: [conv: 8, {dense: 4, pool: 2}]", r"each layer is one mapping"),
    ("layers: [conv: {filters: 8, activation: swish}]", r"activation 'swish'"),
    ("layers: [conv: 8, pool: {kind: min}]", r"kind.*'min'"),
    ("layers: [conv: 8, dropout: 1.5]", r"[Dd]ropout rate"),
    ("layers: [conv: 8, dense: {units: 4, batchnorm: maybe}]", r"batchnorm.*true or false"),
    ("layers: []", r"needs a 'layers:' list"),
    ("name: x", r"needs a 'layers:' list"),
    ("layers: [conv: {filters: 8}\n  - ]]", r"is not valid YAML"),
])
def test_yaml_mistakes_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CnnkitError, match=message):
        create_model(str(path), 3, 3, 16)


def test_a_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="Model file not found"):
        create_model(str(tmp_path / "nope.yaml"), 3)


@pytest.mark.parametrize("spec, message", [
    ("dense1000000000", "its units must be at most 65,536. Received: 1,000,000,000"),
    ("conv5000k3-dense8", "its filters must be at most 4,096"),
    ("conv8k33-dense8", "its kernel size must be at most 31"),
    ("conv8k3p100-dense8", "its padding must be at most 64"),
    ("pool40", "its pool size must be at most 32"),
    ("-".join(["conv4k3same"] * 200), "longer than a model's name may be (200)"),
])
def test_a_spec_that_no_model_file_could_hold_is_refused_before_building(
        spec: str, message: str) -> None:
    with pytest.raises(CnnkitError, match=re.escape(message)) as err:
        resolve(spec)
    assert len(str(err.value)) < 400


def test_a_yaml_stack_with_too_many_layers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("layers:\n" + "- conv4k3same\n" * 300)
    with pytest.raises(CnnkitError, match="has 300 layers; a model may have at most 256"):
        load_yaml(path)
    path.write_text("layers:\n- dense: 100000\n")
    with pytest.raises(CnnkitError, match="units must be at most 65,536"):
        load_yaml(path)
    path.write_bytes(b"\xff\xfe\x00layers")
    with pytest.raises(CnnkitError, match="is not UTF-8 text"):
        load_yaml(path)


@pytest.mark.parametrize("given, name", [(" conv4k3-dense8 ", "conv4k3-dense8"),
                                         ("my net (v2).yaml", "my-net-v2")])
def test_a_stack_s_name_is_one_a_model_file_can_hold(tmp_path: Path, given: str,
                                                     name: str) -> None:
    if given.endswith(".yaml"):
        (tmp_path / given).write_text("layers:\n- conv4k3\n- dense8\n")
        given = str(tmp_path / given)
    arch, _ = resolve(given)
    assert arch.name == name and NAME.match(arch.name)


def test_a_stack_too_large_for_memory_is_refused_before_allocating() -> None:
    # within every layer's range, yet 2**40 weights in its dense layer (4 TB)
    with pytest.raises(CnnkitError, match=r"1,099,51\d,\d{3},\d{3} parameters needs [\d,.]+ GB"):
        create_model("conv4096k3same-dense65536", 10, 3, 64)


def test_a_model_file_with_yaml_aliases_is_refused(tmp_path: Path) -> None:
    lines = ["layers:", "  - &l0 [conv8k3, conv8k3, conv8k3, conv8k3, conv8k3, conv8k3, conv8k3]"]
    lines += [f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(CnnkitError, match=r"bomb\.yaml line 3: YAML aliases"):
        load_yaml(tmp_path / "bomb.yaml")
