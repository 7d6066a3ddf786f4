"""A folder's or CSV's images decide a scratch model's input: grey stays grey, small
images keep their size, and the run's first lines say what was chosen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.base.config import TrainConfig
from cnnkit.cli import main
from cnnkit.training.recipe import resolve_config


def _tree(root: Path, classes: list[str], per_class: int, size: int, mode: str) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size, size) if mode == "L" else (size, size, 3)
            Image.fromarray(rng.integers(0, 255, shape, np.uint8), mode).save(
                root / c / f"{i}.png")
    return root


def test_28px_grey_digits_train_at_28x28x1_with_seed_cnns_parameters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's new user: a folder of 28x28 grey PNGs of ten digit classes."""
    data = _tree(tmp_path / "digits-png", [str(d) for d in range(10)], 3, 28, "L")
    code = main(["train", str(data), "--model", "seed-cnn", "--epochs", "1", "--no-plots",
                 "--device", "cpu", "--out", str(tmp_path / "runs"), "--name", "r"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "input: 28x28x1 - the images' own size, grey like the images"
    assert lines[1].startswith("augmentation: crop - no flip: the classes are characters")
    assert lines[2].startswith("hint: ") and "--img-size 56" in lines[2]
    assert "model: seed-cnn, 225,034 parameters for 10 classes" in out
    import json

    card = json.loads((tmp_path / "runs" / "r" / "model.json").read_text())
    assert (card["input"]["img_size"], card["input"]["channels"]) == (28, 1)


@pytest.mark.parametrize(("size", "mode", "options", "expected"), [
    (40, "RGB", {}, (40, 3, "flip+crop")),
    (100, "L", {}, (64, 1, "flip+crop")),  # large images: the scratch default side
    (8, "L", {}, (28, 1, "flip+crop")),  # tiny ones: upsized as the built-in digits
    (28, "L", {"img_size": 64, "channels": 3}, (64, 3, "flip+crop")),  # told otherwise
    (28, "L", {"augment": "flip"}, (28, 1, "flip")),
])
def test_what_the_images_decide(tmp_path: Path, size: int, mode: str, options: dict,
                                expected: tuple) -> None:
    data = _tree(tmp_path / "d", ["cat", "dog"], 2, size, mode)
    plan = resolve_config(TrainConfig(str(data), model="seed-cnn", device="cpu", **options))
    assert (plan.config.img_size, plan.config.channels, plan.config.augment) == expected
    assert plan.notes[0].startswith(f"input: {expected[0]}x{expected[0]}x{expected[1]}")
    assert any("hint" in n for n in plan.notes) == (expected[0] <= 32 and
                                                    "img_size" not in options)


def test_the_augmentation_line_names_what_trains(tmp_path: Path) -> None:
    """Empty parts of --augment are dropped; the line read "augmentation: flip, , crop, "."""
    data = _tree(tmp_path / "d", ["cat", "dog"], 2, 28, "L")
    plan = resolve_config(TrainConfig(str(data), model="seed-cnn", device="cpu",
                                      augment="flip++crop,"))
    assert plan.augment == ("flip", "crop")
    assert plan.notes[1] == "augmentation: flip, crop (--augment to change)"


def test_a_pretrained_model_keeps_its_own_input_and_digits_are_not_flipped(
        tmp_path: Path) -> None:
    data = _tree(tmp_path / "d", ["0", "1"], 2, 28, "L")
    plan = resolve_config(TrainConfig(str(data), model="efficientnet_lite0", device="cpu"))
    assert (plan.config.img_size, plan.config.channels, plan.config.augment) == \
        (224, 3, "crop")
    assert plan.notes[0] == ("input: 224x224x3 - efficientnet_lite0's input, RGB "
                             "(efficientnet_lite0's input)")
    csv = tmp_path / "d.csv"
    csv.write_text("path,label\n" + "".join(f"d/{c}/{i}.png,{c}\n" for c in "01"
                                           for i in range(2)))
    plan = resolve_config(TrainConfig(str(csv), model="seed-cnn", device="cpu"))
    assert (plan.config.img_size, plan.config.channels, plan.config.augment) == (28, 1, "crop")
    builtin = resolve_config(TrainConfig("digits", device="cpu"))
    assert "flip" not in builtin.config.augment


@pytest.mark.parametrize(("size", "mode"), [(28, "L"), (40, "RGB"), (8, "L")])
def test_images_far_smaller_than_the_pretrained_input_train_from_scratch_at_their_size(
        tmp_path: Path, size: int, mode: str) -> None:
    """28x28 grey files are not blown up to 224x224x3 for EfficientNet-Lite0 by default:
    the small-image model trains at their own size, and the first line says why."""
    data = _tree(tmp_path / "d", ["shirt", "shoe"], 2, size, mode)
    plan = resolve_config(TrainConfig(str(data), device="cpu"))
    channels = 1 if mode == "L" else 3
    own = 28 if size < 16 else size
    assert (plan.config.model, plan.config.mode) == ("fast-cnn", "scratch")
    assert (plan.config.img_size, plan.config.channels) == (own, channels)
    assert plan.notes[0].startswith(f"model: fast-cnn from scratch at the images' own size - "
                                    f"they are {size}x{size}, far smaller than "
                                    "efficientnet_lite0's 224 px input")
    assert "--model efficientnet_lite0 to fine-tune it anyway" in plan.notes[0]


@pytest.mark.parametrize("options", [{"model": "efficientnet_lite0"}, {"img_size": 96},
                                     {"mode": "features"}, {"mode": "fine-tune"}])
def test_what_was_asked_for_keeps_the_pretrained_model(tmp_path: Path, options: dict) -> None:
    data = _tree(tmp_path / "d", ["shirt", "shoe"], 2, 28, "L")
    plan = resolve_config(TrainConfig(str(data), device="cpu", **options))
    assert plan.config.model == "efficientnet_lite0"
    assert not plan.notes[0].startswith("model:")


def test_larger_images_keep_the_pretrained_default(tmp_path: Path) -> None:
    data = _tree(tmp_path / "d", ["shirt", "shoe"], 2, 60, "RGB")
    plan = resolve_config(TrainConfig(str(data), device="cpu"))
    assert (plan.config.model, plan.config.img_size) == ("efficientnet_lite0", 224)
