"""Defaults that depend on the data's size (cnnkit.training.recipe, cnnkit.training.hyperparams)."""

from __future__ import annotations

import pytest

from cnnkit.base.config import TrainConfig
from cnnkit.training.hyperparams import (
    FINE_TUNE_LR,
    PEAK_LR,
    small_data_batch,
    small_data_changes,
)
from cnnkit.training.recipe import resolve_config


def _changes(n_train: int, **options: object) -> tuple[dict[str, float], TrainConfig]:
    config = TrainConfig("fashion-mnist", device="cpu", **options)
    resolved = resolve_config(config).config
    return small_data_changes(config, resolved, n_train), resolved


def test_few_images_get_a_smaller_batch_so_an_epoch_has_steps() -> None:
    assert small_data_batch(1_000, 128) == 32  # 31 steps an epoch, not 8
    assert small_data_batch(60_000, 128) == 128
    assert small_data_batch(100, 128) == 16  # never below 16


def test_few_image_fine_tuning_gets_more_epochs() -> None:
    changes, resolved = _changes(1_000, model="efficientnet_lite0")
    assert changes == {"batch_size": 32, "epochs": 10}
    assert resolved.lr == FINE_TUNE_LR["adamw"]


def test_what_the_user_chose_is_kept() -> None:
    changes, _ = _changes(1_000, model="efficientnet_lite0", lr=3e-4, batch_size=64, epochs=4)
    assert changes == {}
    _, resolved = _changes(1_000, model="efficientnet_lite0", lr=3e-4)
    assert resolved.lr == 3e-4


@pytest.mark.parametrize("batch_size", [32, 128, 256])
def test_the_adamw_fine_tune_rate_is_not_scaled_with_the_batch(batch_size: int) -> None:
    _, resolved = _changes(60_000, model="efficientnet_lite0", batch_size=batch_size)
    assert resolved.lr == FINE_TUNE_LR["adamw"] == 2e-3
    _, sgd = _changes(60_000, model="efficientnet_lite0", batch_size=batch_size,
                      optimizer="sgd")  # the sweeps were AdamW's: SGD keeps the scaled rate
    assert sgd.lr == pytest.approx(PEAK_LR["sgd"] * batch_size / 256 / 8)


@pytest.mark.parametrize(("options", "fine_tune"), [
    ({"model": "efficientnet_lite0"}, True),
    ({"model": "efficientnet_lite0", "mode": "features"}, False),
    ({"model": "efficientnet_lite0", "mode": "scratch"}, False),
    ({"model": "seed-cnn"}, False),
])
def test_only_fine_tuning_gets_the_fixed_rate(options: dict, fine_tune: bool) -> None:
    for n_train in (1_000, 60_000):
        changes, resolved = _changes(n_train, batch_size=128, **options)
        assert "lr" not in changes
        assert (resolved.lr == FINE_TUNE_LR["adamw"]) == fine_tune
        if not fine_tune:
            assert resolved.lr == pytest.approx(PEAK_LR["adamw"] * 128 / 256)


@pytest.mark.parametrize("argv", [["--keep", "best"], ["--patience", "2"]])
def test_options_that_read_validation_need_a_validation_split(argv: list[str], tmp_path,
                                                              capsys) -> None:
    """With --val-fraction 0 both were silently void: every epoch counted as 'better', so
    --keep best kept the last and --patience never stopped."""
    from cnnkit.cli import main

    code = main(["train", "shapes:count=60,size=32", "-m", "lenet5", "-e", "1",
                 "--val-fraction", "0", "--no-plots", "--out", str(tmp_path / "runs"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{argv[0]} {argv[1]}" in err and "no validation split (--val-fraction 0)" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("options", "said"), [
    ({"tta": True}, "--tta averages each test image's scores with its mirror's, and the "
                    "classes are characters (0, 1, 2, ...): a mirrored image may show another "
                    "class, so the test figures may be lower than without --tta"),
    ({"augment": "flip+crop"}, "--augment flip mirrors training images, and the classes are "
                               "characters (0, 1, 2, ...): a mirrored image may show another "
                               "class; leave flip out unless mirrors keep the class"),
])
def test_mirrors_asked_for_on_classes_a_mirror_changes_are_said(capsys, options, said) -> None:
    """--tta on digits averaged each test digit with its mirror image without a word."""
    resolve_config(TrainConfig(data="digits", model="lenet5", **options))
    assert capsys.readouterr().err == f"warning: {said}\n"
    resolve_config(TrainConfig(data="fashion-mnist", model="lenet5", **options))
    resolve_config(TrainConfig(data="digits", model="lenet5"))  # auto leaves flip out
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("options", "named"), [
    ({"lr": 0.1}, "--lr shapes"),
    ({"weight_decay": 0.0, "schedule": "cosine"}, "--weight-decay and --schedule shape"),
    ({"patience": 2, "warmup_epochs": 1.0, "optimizer": "sgd"},
     "--warmup-epochs, --patience and --optimizer shape"),
    ({"label_smoothing": 0.0}, "--label-smoothing shapes"),
])
def test_options_of_stepped_training_on_a_features_run_are_one_line(options, named) -> None:
    """--lr 0.1 --mode features was dropped without a word: its head is one L-BFGS solve."""
    from cnnkit.base.errors import CnnkitError

    with pytest.raises(CnnkitError) as caught:
        resolve_config(TrainConfig("shapes:count=30,size=32", model="efficientnet_lite0",
                                   mode="features", **options))
    assert str(caught.value).startswith(
        f"{named} training by steps, and --mode features fits its head in one L-BFGS solve "
        "with a fixed L2 strength (no learning rate, schedule or early stopping). Drop ")
    resolve_config(TrainConfig("shapes:count=30,size=32", model="efficientnet_lite0",
                               mode="features"))
