"""Defaults that depend on the data's size (cnnkit.training.recipe)."""

from __future__ import annotations

import pytest

from cnnkit.config import TrainConfig
from cnnkit.training.recipe import (
    SMALL_FINE_TUNE_LR,
    resolve_config,
    small_data_batch,
    small_data_changes,
)


def _changes(n_train: int, **options: object) -> tuple[dict[str, float], TrainConfig]:
    config = TrainConfig("fashion-mnist", device="cpu", **options)
    resolved = resolve_config(config).config
    return small_data_changes(config, resolved, n_train), resolved


def test_few_images_get_a_smaller_batch_so_an_epoch_has_steps() -> None:
    assert small_data_batch(1_000, 128) == 32  # 31 steps an epoch, not 8
    assert small_data_batch(60_000, 128) == 128
    assert small_data_batch(100, 128) == 16  # never below 16


def test_few_image_fine_tuning_gets_more_epochs_and_a_higher_rate() -> None:
    changes, resolved = _changes(1_000, model="efficientnet_lite0")
    assert resolved.lr == pytest.approx(8e-3 * 128 / 256 / 8)  # the batch-scaled rate
    assert changes == {"batch_size": 32, "epochs": 10, "lr": SMALL_FINE_TUNE_LR}
    assert changes["lr"] > resolved.lr  # not scaled down with the smaller batch


def test_what_the_user_chose_is_kept() -> None:
    changes, _ = _changes(1_000, model="efficientnet_lite0", lr=3e-4, batch_size=64, epochs=4)
    assert changes == {}
    changes, _ = _changes(1_000, model="efficientnet_lite0", optimizer="sgd")
    assert "lr" not in changes  # the sweep behind the rate was AdamW's


@pytest.mark.parametrize(("options", "raised"), [
    ({"model": "efficientnet_lite0"}, True),
    ({"model": "efficientnet_lite0", "mode": "features"}, False),
    ({"model": "efficientnet_lite0", "mode": "scratch"}, False),
    ({"model": "seed-cnn"}, False),
])
def test_the_rate_changes_only_for_few_image_fine_tuning(options: dict, raised: bool) -> None:
    big, _ = _changes(60_000, **options)
    assert "lr" not in big
    small, _ = _changes(1_000, **options)
    assert ("lr" in small) == raised
