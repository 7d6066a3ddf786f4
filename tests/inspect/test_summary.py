"""Layer summaries: textbook parameter counts, shapes, multiply-adds, timm models, the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.inspect.resolve import model_to_inspect
from cnnkit.inspect.summary import summary
from cnnkit.models import create_model


def test_seed_cnn_counts_follow_the_textbook_formulas() -> None:
    s = summary(create_model("seed-cnn", 10, 1, 28), (1, 28, 28))
    assert s.total_params == 225_034
    assert s.trainable_params == 225_034 and s.frozen_params == 0
    by_type: dict[str, list] = {}
    for row in s.rows:
        by_type.setdefault(row.type, []).append(row)
    conv1, conv2 = by_type["Conv2d"]
    assert conv1.params == (3 * 3 * 1 + 1) * 32 and conv1.output_shape == (32, 26, 26)
    assert conv2.params == (3 * 3 * 32 + 1) * 64 and conv2.output_shape == (64, 11, 11)
    assert conv1.formula == "(3x3x1+1)x32"
    dense, out = by_type["Linear"]
    assert dense.params == (64 * 5 * 5 + 1) * 128 and out.params == (128 + 1) * 10
    assert all(r.params == 0 for r in by_type["MaxPool2d"] + by_type["ReLU"])
    assert [r.output_shape for r in by_type["MaxPool2d"]] == [(32, 13, 13), (64, 5, 5)]
    # Multiply-adds: one per kernel weight per output value (no bias), N_in x N_out for dense.
    assert conv1.macs == 26 * 26 * 32 * 3 * 3 * 1
    assert conv2.macs == 11 * 11 * 64 * 3 * 3 * 32
    assert dense.macs == 1600 * 128
    assert s.total_macs == conv1.macs + conv2.macs + dense.macs + 128 * 10
    assert "225,034" in str(s)


def test_efficientnet_lite0_total_as_timm_counts() -> None:
    import timm

    model = timm.create_model("tf_efficientnet_lite0")  # 1000-class head, random weights
    s = summary(model, 224)
    assert s.input_shape == (3, 224, 224)
    assert s.total_params == 4_652_008 == sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in s.rows) == s.total_params  # every parameter in one row
    depthwise = next(r for r in s.rows if r.name == "blocks.1.0.conv_dw")
    assert depthwise.formula == "3x3x1x96" and depthwise.params == 3 * 3 * 96
    assert s.rows[-1].name == "classifier" and s.rows[-1].params == (1280 + 1) * 1000
    # Freezing the base shows up as frozen parameters, per row and in the totals.
    for p in model.blocks.parameters():
        p.requires_grad_(False)
    grouped = summary(model, 224, depth=1)
    frozen = sum(p.numel() for p in model.blocks.parameters())
    assert grouped.frozen_params == frozen
    assert grouped.trainable_params == 4_652_008 - frozen
    blocks = next(r for r in grouped.rows if r.name == "blocks")
    assert blocks.frozen == frozen and blocks.output_shape == (320, 7, 7)
    assert sum(r.params for r in grouped.rows) == 4_652_008
    assert grouped.total_macs == s.total_macs


def test_grouping_shared_and_unused_layers() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.unused = nn.Linear(4, 4)
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv(self.conv(x))  # one module called twice
            return self.fc(x.mean((2, 3)))

    s = summary(Net(), (3, 8, 8))
    convs = [r for r in s.rows if r.name == "conv"]
    assert [r.params for r in convs] == [81, 0]  # counted once
    assert convs[1].formula == "shared"
    assert s.total_params == 81 + 20 + 8
    assert s.total_macs == 2 * 8 * 8 * 3 * 27 + 3 * 2
    assert any("did not run through" in n for n in s.notes)


def test_grouping_a_part_whose_children_are_called_one_by_one() -> None:
    """A wrapper that runs its backbone's children itself (as a features-mode run's model
    does) never calls the backbone as a module: depth 1 still shows it as one row."""
    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.body = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Backbone()
            self.fc = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.net.body(self.net.stem(x))  # never self.net(x)
            return self.fc(x.mean((2, 3)))

    model = Wrapper()
    s = summary(model, (3, 8, 8), depth=1)
    assert [r.name for r in s.rows] == ["net", "fc"]
    net = s.rows[0]
    assert net.params == sum(p.numel() for p in model.net.parameters())
    assert net.output_shape == (6, 4, 4)  # what its last layer passed on
    assert net.macs == 8 * 8 * 4 * 27 + 4 * 4 * 6 * 9 * 4
    assert not s.notes  # every parameter ran


def test_a_file_that_is_no_model_is_named_as_such(tmp_path, capsys) -> None:
    """An ONNX export or a run's CSV is a file that exists: not an 'unknown model name'."""
    (tmp_path / "model.json").write_text("{}")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read")
    assert main(["summary", str(onnx)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Unknown model" not in err and "is an ONNX export" in err
    assert f"pass the run folder or model.json ({tmp_path})" in err
    table = tmp_path / "metrics.csv"
    table.write_text("epoch\n1\n")
    assert main(["summary", str(table)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Unknown model" not in err and f"{table} is not a model" in err


def test_a_model_folder_whose_name_ends_in_onnx_is_read(tmp_path) -> None:
    """'exp.onnx/' is a folder a user named, not an export: it is summarised."""
    from cnnkit.artifacts.modelfile import ModelCard, save_model
    from cnnkit.data.pipeline import Preprocess
    from cnnkit.models.build import resolve

    arch, _ = resolve("seed-cnn")
    folder = tmp_path / "exp.onnx"
    folder.mkdir()
    save_model(create_model(arch, 2, 1, 28), ModelCard(arch, ("a", "b"), Preprocess(
        28, 1, (0.5,), (0.5,)), {}), folder / "model.safetensors")
    assert model_to_inspect(str(folder)).classes == 2


def test_model_arguments_specs_yaml_and_runs(tmp_path) -> None:
    spec = model_to_inspect("conv32k3-pool2-dense128", img_size=32, channels=3)
    assert spec.input_shape == (3, 32, 32) and spec.classes == 10
    assert summary(spec.model, spec.input_shape).total_params == \
        (27 + 1) * 32 + (32 * 15 * 15 + 1) * 128 + (128 + 1) * 10
    yaml_file = tmp_path / "tiny.yaml"
    yaml_file.write_text("layers:\n  - conv: {filters: 8, kernel: 5}\n  - gap\n")
    tiny = model_to_inspect(str(yaml_file), classes=3)
    assert summary(tiny.model, tiny.input_shape).total_params == (25 + 1) * 8 + (8 + 1) * 3
    with pytest.raises(CnnkitError, match="Unknown model"):
        model_to_inspect("no-such-model")
    with pytest.raises(CnnkitError, match="--channels must be 1 or 3"):
        model_to_inspect("seed-cnn", channels=2)
    with pytest.raises(CnnkitError, match="does not run on"):
        summary(create_model("seed-cnn", 10, 1, 28), (3, 28, 28))


def test_summary_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "seed-cnn"]) == 0
    out = capsys.readouterr().out
    assert "225,034" in out and "(3x3x32+1)x64" in out and "features.3" in out
    assert main(["summary", "lenet5", "--depth", "1"]) == 0
    assert "classifier" in capsys.readouterr().out
    assert main(["summary", "conv8k3-zzz"]) == 2


@pytest.mark.parametrize("model", ["seed-cnn", "conv8k3-pool2-dense10"])
def test_an_img_size_beyond_what_training_accepts_is_one_line(model, capsys) -> None:
    """One rule for --img-size in summary and train: a side past the cap would only
    exhaust memory (a 30,000 px ResNet), so it is refused before any model is built."""
    from cnnkit.base.config import MAX_IMG_SIZE, TrainConfig

    assert main(["summary", model, "--img-size", str(MAX_IMG_SIZE + 1)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"largest sensible size is {MAX_IMG_SIZE}" in err
    with pytest.raises(CnnkitError) as train_says:
        TrainConfig(data="digits", img_size=MAX_IMG_SIZE + 1)
    assert str(train_says.value) in err
    assert main(["summary", model, "--img-size", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


def _stacks() -> list[str]:
    from cnnkit.models.layerspec import StackBuilder
    from cnnkit.models.registry import list_models

    names = [m.name for m in list_models() if isinstance(m.builder, StackBuilder)]
    return [*names, "conv8k5s2p2bn:tanh-avgpool2-drop25-bn-relu-gmp-dense16bn:sigmoid",
            "conv4k4same-pool3s2-flatten-drop0.1-dense12:linear-bn-dense6"]


@pytest.mark.parametrize("name", _stacks())
@pytest.mark.parametrize(("shape", "classes"), [((1, 28, 28), 10), ((3, 40, 40), 4)])
def test_a_stack_summary_without_torch_is_the_traced_one(name: str, shape: tuple,
                                                         classes: int) -> None:
    """`cnnkit summary` of a layer stack plans its rows from the layers (no torch import);
    they must be what a forward pass through the built model records."""
    from cnnkit.inspect.summary_rows import stack_summary
    from cnnkit.models.build import resolve

    arch, _ = resolve(name)
    planned = stack_summary(list(arch.layers), shape, classes, name)
    traced = summary(create_model(name, classes, shape[0], shape[1]), shape, model_name=name)
    assert planned.rows == traced.rows
    assert (planned.total_params, planned.trainable_params, planned.total_macs) == \
        (traced.total_params, traced.trainable_params, traced.total_macs)
    assert str(planned) == str(traced)
