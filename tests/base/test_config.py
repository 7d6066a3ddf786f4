"""The frozen training config and --config files: defaults in one place, mistakes caught."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cnnkit.base.config import TrainConfig, augment_tokens, load_config_file
from cnnkit.base.errors import CnnkitError


def test_the_config_is_frozen_and_round_trips() -> None:
    cfg = TrainConfig("shapes", epochs=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 4  # type: ignore[misc]
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.replace(epochs=4).epochs == 4 and cfg.epochs == 3


@pytest.mark.parametrize("values, message", [
    ({"data": "x", "epoch": 3}, r"Unknown training option\(s\): epoch \(did you mean epochs\?\)"),
    # a config file with the flags' spelling got the 43 known names and no pointer
    ({"data": "x", "per-class": 20, "--lr": 1},
     r"option\(s\): --lr, per-class \(did you mean lr, per_class\?\)\. Known"),
    ({"data": "x", "colour": 1}, r"option\(s\): colour\. Known options"),
    ({"epochs": 3}, "needs 'data'"),
    ({"data": "x", "epochs": "three"}, r"epochs.*whole number.*'three'"),
    ({"data": "x", "lr": "fast"}, r"lr.*number.*'fast'"),
    ({"data": "x", "plots": "maybe"}, r"plots.*true or false.*'maybe'"),
    ({"data": "x", "model": ["a"]}, r"model takes text.*\['a'\]"),
    ({"data": "x", "epochs": 0}, "--epochs must be positive"),
    ({"data": "x", "val_fraction": 1.5}, r"--val-fraction must be in \[0, 1\)"),
    ({"data": "x", "augment": "flip+spin"}, "Unknown augmentation 'spin'"),
    # '+' and '' trained with no augmentation under the line "augmentation: ,"
    ({"data": "x", "augment": "+"}, "--augment '\\+' names no augmentation: use 'none'"),
    ({"data": "x", "augment": ""}, "--augment '' names no augmentation"),
    ({"data": "x", "channels": 2}, "--channels must be 1 or 3"),
    ({"data": "x", "unfreeze": "some"}, "--unfreeze takes 'all' or a number"),
    ({"data": "x", "patience": -1}, "--patience must be 0"),
    # torch raised 'Overflow when unpacking long long'; numpy refused -1 in multi-label splits
    ({"data": "x", "seed": 10**20}, r"--seed takes a whole number from 0 to 4,294,967,295"),
    ({"data": "x", "seed": -1}, r"--seed takes a whole number from 0 .*Received: -1"),
    ({"data": "x", "warmup_epochs": -1}, "--warmup-epochs takes the epochs of"),
    ({"data": "x", "warmup_epochs": float("inf")}, "--warmup-epochs takes the epochs of"),
    ({"data": "x", "weight_decay": float("nan")}, r"--weight-decay takes .*Received: nan"),
    ({"data": "x", "weight_decay": -1}, r"--weight-decay takes .*Received: -1"),
    ({"data": "x", "weight_decay": float("inf")}, r"--weight-decay takes .*Received: inf"),
    ({"data": "x", "lr": float("inf")}, r"--lr takes a positive number.*Received: inf"),
    ({"data": "x", "lr": float("nan")}, r"--lr takes a positive number.*Received: nan"),
    ({"data": "x", "lr_decay": 0}, r"--lr-decay takes .*Received: 0"),
    ({"data": "x", "lr_decay": float("nan")}, r"--lr-decay takes .*Received: nan"),
    ({"data": "x", "lr_decay": 1.5}, r"--lr-decay takes .*Received: 1.5"),
])
def test_bad_values_are_explained(values: dict, message: str) -> None:
    with pytest.raises(CnnkitError, match=message):
        TrainConfig.from_dict(values)


def test_numbers_are_accepted_in_their_natural_forms() -> None:
    cfg = TrainConfig.from_dict({"data": "x", "lr": 1, "epochs": 2.0, "label_smoothing": 0,
                                 "unfreeze": 2})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.epochs == 2 and isinstance(cfg.epochs, int)
    assert cfg.unfreeze == "2"


def test_augment_tokens() -> None:
    assert augment_tokens("flip+crop") == ("flip", "crop")
    assert augment_tokens("flip, erase") == ("flip", "erase")
    assert augment_tokens("none") == () == augment_tokens("auto")


def test_config_files_in_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("data: shapes\nepochs: 3\naugment: flip\n")
    assert load_config_file(tmp_path / "a.yaml") == {"data": "shapes", "epochs": 3,
                                                     "augment": "flip"}
    (tmp_path / "a.json").write_text('{"data": "digits", "lr": 0.01}')
    assert load_config_file(tmp_path / "a.json") == {"data": "digits", "lr": 0.01}


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", '{"epochs": 3,', r"bad\.json is not valid JSON"),
    ("bad.yaml", "epochs: [3\n", r"bad\.yaml is not valid YAML"),
    ("list.yaml", "- epochs\n- 3\n", "should hold a mapping"),
    ("list.json", "[1, 2]", "should hold a mapping"),
    ("empty.yaml", "", "should hold a mapping"),
    ("bin.yaml", b"\xff\xfe\x00epochs", r"bin\.yaml is not a text file"),
])
def test_bad_config_files_are_explained(tmp_path: Path, name: str, text, message: str) -> None:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(CnnkitError, match=message):
        load_config_file(path)


def _alias_bomb(levels: int = 9) -> str:
    """``levels`` of lists that each hold the previous one nine times, under ``epochs``:
    a few hundred bytes, 9**levels items once written out."""
    lines = ["data: digits", "epochs:", '  - &l0 ["lol","lol","lol","lol","lol","lol","lol",'
             '"lol","lol"]']
    lines += [f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    assert path.stat().st_size < 600
    with pytest.raises(CnnkitError, match=r"bomb\.yaml line 4: YAML aliases \('\*l0'\) are not "
                                          r"accepted; write the value out"):
        load_config_file(path)
    (tmp_path / "merge.yaml").write_text("base: &b {epochs: 3}\nrun:\n  <<: *b\n")
    with pytest.raises(CnnkitError, match="line 3: YAML aliases"):
        load_config_file(tmp_path / "merge.yaml")


def test_a_huge_value_is_quoted_cut_short(tmp_path: Path) -> None:
    nested = "[" * 50 + "1" + "]" * 50
    for text in (f"data: digits\nepochs: {'x' * 100_000}\n",
                 f"data: digits\nepochs: [{', '.join(['[1, 2, 3, 4, 5, 6, 7, 8]'] * 5000)}]\n",
                 f"data: digits\nepochs: {nested}\n"):
        (tmp_path / "big.yaml").write_text(text)
        with pytest.raises(CnnkitError, match="--epochs takes a whole number") as err:
            TrainConfig.from_dict(load_config_file(tmp_path / "big.yaml"))
        assert len(str(err.value)) < 200, str(err.value)
    keys = "\n".join(f"{'k' * 500}{i}: 1" for i in range(1000))
    (tmp_path / "keys.yaml").write_text(f"data: digits\n1: one\n{keys}\n")
    with pytest.raises(CnnkitError, match=r"Unknown training option\(s\): 1, k.* and 991 more"
                       ) as err:
        TrainConfig.from_dict(load_config_file(tmp_path / "keys.yaml"))
    assert len(str(err.value)) < 2000


def test_a_config_file_over_1_mib_is_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "huge.yaml").write_text("data: digits\n" + "#" * (2 << 20))
    with pytest.raises(CnnkitError, match=r"huge\.yaml is 2,097,165 bytes; .* at most 1024 KiB"):
        load_config_file(tmp_path / "huge.yaml")


def test_a_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="Config file not found"):
        load_config_file(tmp_path / "nope.yaml")


def test_an_absurd_img_size_names_the_largest_sensible_one() -> None:
    from cnnkit.base.config import MAX_IMG_SIZE

    for size in (20_000, 100_000):
        with pytest.raises(CnnkitError, match=f"largest sensible size is {MAX_IMG_SIZE}"):
            TrainConfig(data="x", img_size=size)
    TrainConfig(data="x", img_size=MAX_IMG_SIZE)


def test_memory_that_is_not_there_is_refused_before_allocating() -> None:
    from cnnkit.base.device import available_memory, require_memory

    free = available_memory()
    assert free is not None and free > 0
    require_memory(free // 100, "a little", "")
    with pytest.raises(CnnkitError, match=r"Decoding needs [\d,.]+ GB of memory and this "
                                          r"machine has [\d,.]+ GB free\. Use less"):
        require_memory(free * 10, "Decoding", "Use less.")


@pytest.mark.parametrize(("name", "text", "shown"), [
    ("a.yaml", "data: shapes\ntime: 90\n", "90"),
    ("a.yaml", "data: shapes\ntime: 1:30\n", "90"),  # YAML 1.1 reads it as 90 seconds
    ("a.yaml", "data: shapes\ntime: 1.5\n", "1.5"),
    ("a.json", '{"data": "shapes", "time": 90}', "90"),
])
def test_a_bare_number_of_time_in_a_file_is_refused_as_on_the_command_line(
        tmp_path: Path, name: str, text: str, shown: str) -> None:
    """time: 90 in a config file ran for 90 seconds, where --time 90 is refused (seconds or
    minutes?): one rule for both."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CnnkitError) as caught:
        load_config_file(path)
    assert str(caught.value) == (
        f"{path}: time takes a duration with units, as --time does, such as 90s, 10m, 1.5h or "
        f"1h30m ('{shown}m' for minutes, '{shown}s' for seconds). Received: {shown}")


def test_time_with_units_in_a_file_reads_as_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("data: shapes\ntime: 15m\n")
    assert TrainConfig.from_dict(load_config_file(tmp_path / "a.yaml")).time == 900.0


@pytest.mark.parametrize("seconds", [600.0, 5400.0, 3601.0, 6.0, 2.5, 90.5, 1 / 3, 1e-7])
def test_a_runs_time_is_written_back_with_units_exactly(seconds: float) -> None:
    from cnnkit.base.config import duration_text, parse_duration

    text = duration_text(seconds)
    assert text[-1] in "hms" and parse_duration(text) == seconds
    assert duration_text(5400.0) == "1h30m"
