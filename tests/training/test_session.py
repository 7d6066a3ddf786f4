"""Training runs end to end on tiny data: the run folder, reproducibility, options, imbalance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnkit
from cnnkit.artifacts.modelfile import read_card
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError

TINY = "shapes:size=12,count=60"
MODEL = "conv4k3-pool2-dense8"


def tiny(tmp_path: Path, data: str = TINY, **options) -> cnnkit.TrainResult:
    settings = {"model": MODEL, "epochs": 2, "batch_size": 16, "plots": False,
                "device": "cpu", "out": str(tmp_path / "runs"), **options}
    return cnnkit.train(data, **settings)


METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")


def _metrics(history: list[dict]) -> list[tuple]:
    return [tuple(row[k] for k in METRICS) for row in history]


def test_the_run_folder_holds_everything(make_tree, tmp_path: Path) -> None:
    data = make_tree(tmp_path / "photos", per_class=10, size=16)
    result = tiny(tmp_path, str(data), name="first")
    run = result.run_dir
    assert run == tmp_path / "runs" / "first"
    names = {p.relative_to(run).as_posix() for p in run.rglob("*")}
    assert {"config.json", "classes.txt", "model.safetensors", "model.json", "metrics.csv",
            "split.json", "test_metrics.json"} <= names
    assert not [n for n in names if n.startswith("checkpoints")]  # dropped once it ended
    assert not [n for n in names if n.endswith(".tmp")]
    # config.json: the resolved options, from which the run can be repeated
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert config.model == MODEL and config.epochs == 2 and config.img_size == 16  # their own size
    assert config.lr is not None and config.mode == "scratch"
    assert (run / "classes.txt").read_text() == "circle\nsquare\ntriangle\n"
    # the sidecar says how to feed the model
    card, weights = read_card(run)
    assert weights == run / "model.safetensors"
    assert card.classes == ("circle", "square", "triangle")
    assert card.preprocess.img_size == 16 and card.preprocess.channels == 3
    assert card.architecture.layers[0]["filters"] == 4
    sidecar = json.loads((run / "model.json").read_text())
    assert sidecar["cnnkit_version"] == cnnkit.__version__ and len(sidecar["sha256"]) == 64
    assert set(load_file(run / "model.safetensors")) == set(
        cnnkit.create_model(MODEL, 3, 3, 16).state_dict())
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "elapsed_s"} <= set(rows[0])
    # split.json: which file went where, disjoint, everything once
    split = json.loads((run / "split.json").read_text())
    files = [f for part in ("train", "val", "test") for f, _ in split[part]]
    assert len(files) == 30 == len(set(files))
    assert len(split["test"]) == 3 == result.test.n
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["accuracy"] == pytest.approx(result.test_accuracy)
    assert len(test["confusion_matrix"]) == 3


def test_a_seeded_cpu_run_is_reproducible(tmp_path: Path) -> None:
    a = tiny(tmp_path, name="a", epochs=3)
    b = tiny(tmp_path, name="b", epochs=3)
    assert _metrics(a.history) == _metrics(b.history)
    assert a.test.to_dict() == b.test.to_dict()
    wa, wb = load_file(a.run_dir / "model.safetensors"), load_file(b.run_dir / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = tiny(tmp_path, name="c", epochs=3, seed=1)
    assert _metrics(c.history) != _metrics(a.history)


def test_a_taken_run_name_gets_a_suffix(tmp_path: Path) -> None:
    first = tiny(tmp_path, epochs=1)
    second = tiny(tmp_path, epochs=1)
    assert first.run_dir.name == "shapes-conv4k3-pool2-dense8"
    assert second.run_dir.name == "shapes-conv4k3-pool2-dense8-2"


def test_a_builtin_sets_own_size_is_the_input_size(tmp_path: Path) -> None:
    result = tiny(tmp_path, "shapes:size=16,count=30", epochs=1)
    assert result.config.img_size == 16
    card, _ = read_card(result.run_dir)
    assert card.preprocess.img_size == 16
    assert tiny(tmp_path, "shapes:size=16,count=30", epochs=1, img_size=20).config.img_size == 20


@pytest.mark.parametrize("options", [
    {"schedule": "cosine", "label_smoothing": 0.0, "optimizer": "sgd"},
    {"schedule": "constant", "label_smoothing": 0.3, "warmup_epochs": 0.5},
    {"augment": "flip+crop+erase+color", "weight_decay": 0.0, "lr": 1e-3},
    {"imbalance": "balanced-sampling", "tta": True, "channels": 1},
    {"augment": "flip+mixup+cutmix", "imbalance": "weighted-loss"},  # soft targets
])
def test_training_options_are_accepted_and_recorded(tmp_path: Path, options: dict) -> None:
    result = tiny(tmp_path, epochs=1, **options)
    saved = json.loads((result.run_dir / "config.json").read_text())
    for key, value in options.items():
        assert saved[key] == value
    assert all(torch.isfinite(torch.tensor(v)) for v in _metrics(result.history)[0])


def test_bad_options_fail_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="--schedule must be one of"):
        tiny(tmp_path, schedule="linear")
    with pytest.raises(CnnkitError, match=r"Unknown training option\(s\): epoch"):
        cnnkit.train(TINY, epoch=3)
    with pytest.raises(CnnkitError, match="--label-smoothing must be in"):
        tiny(tmp_path, label_smoothing=1.0)
    assert not (tmp_path / "runs").exists()


def test_a_model_that_cannot_be_built_leaves_no_run_folder(tmp_path: Path) -> None:
    # Valid spec, but 12-px images shrink to nothing in it: known only when building.
    with pytest.raises(CnnkitError, match="shrink to nothing"):
        tiny(tmp_path, model="conv4k5-pool2-conv4k5-pool2", img_size=12)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_imbalance_is_handled_and_announced(make_tree, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = make_tree(tmp_path / "d", per_class=15, size=16)
    for f in sorted((data / "square").iterdir())[4:]:
        f.unlink()
    run = tiny(tmp_path, str(data), epochs=1, img_size=16, val_fraction=0.2,
               test_fraction=0.0).run_dir
    out = capsys.readouterr().out
    assert "imbalanced" in out and "class-weighted loss" in out
    # config.json records what trained (it said 'auto', which `cnnkit runs` and compare
    # showed), as it records --keep auto's choice
    assert json.loads((run / "config.json").read_text())["imbalance"] == "weighted-loss"
    tiny(tmp_path, str(data), epochs=1, img_size=16, imbalance="none")
    assert "imbalanced" not in capsys.readouterr().out
    run = tiny(tmp_path, TINY, epochs=1).run_dir  # balanced: nothing to say
    assert "imbalanced" not in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["imbalance"] == "none"


def test_the_weights_of_imbalance_handling() -> None:
    from types import SimpleNamespace

    from cnnkit.data.imageset import ImageSet
    from cnnkit.data.sources import Splits
    from cnnkit.tasks.single_label import SingleLabel
    from cnnkit.training.planner import imbalance

    labels = torch.tensor([0] * 12 + [1] * 3 + [2] * 3)
    train = ImageSet(torch.zeros(18, 1, 4, 4, dtype=torch.uint8), labels, ("a", "b", "c"))
    splits = Splits(None, train.classes, train, None, None)

    def plan(**options: str) -> SimpleNamespace:
        return SimpleNamespace(config=TrainConfig("x", **options), task=SingleLabel())

    class_w, sample_w = imbalance(plan(), splits)
    assert sample_w is None
    assert class_w.tolist() == pytest.approx([0.5, 2.0, 2.0])  # n / (k * n_c)
    class_w, sample_w = imbalance(plan(imbalance="balanced-sampling"), splits)
    assert class_w is None
    assert sample_w[0].item() == pytest.approx(1 / 12)
    assert sample_w[-1].item() == pytest.approx(1 / 3)


def test_early_stopping_stops_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from cnnkit.training.loop import Trainer

    # Validation never improves after the first epoch.
    monkeypatch.setattr(Trainer, "_is_better", lambda self, row: not self.best)
    result = tiny(tmp_path, epochs=8, patience=2)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert "early stopping" in capsys.readouterr().out
    assert len((result.run_dir / "metrics.csv").read_text().splitlines()) == 4
    assert result.test is not None  # the best model is still tested


def test_a_diverging_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="lower --lr"):
        tiny(tmp_path, lr=1e12, optimizer="sgd", schedule="constant", warmup_epochs=0)


def test_keeps_best_only_when_validation_can_tell_epochs_apart() -> None:
    from cnnkit.training.hyperparams import keeps_best

    assert not keeps_best("auto", 120, patience=0)  # 100 per class, 10% held out
    assert keeps_best("auto", 6000, patience=0)  # Fashion-MNIST's 10%
    assert keeps_best("auto", 120, patience=3)  # early stopping needs the best epoch
    assert not keeps_best("auto", 0, patience=0)  # no validation: the last epoch
    assert keeps_best("best", 120, patience=0) and not keeps_best("last", 6000, patience=0)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_the_kept_model_is_the_epoch_asked_for(tmp_path: Path, keep: str) -> None:
    saved = []

    def remember(trainer, row) -> None:  # each epoch's weights, as trained
        saved.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    result = tiny(tmp_path, epochs=4, keep=keep, lr=0.05, callbacks=[remember])
    accs = [row["val_acc"] for row in result.history]
    best = max(range(len(accs)), key=lambda i: (accs[i], -result.history[i]["val_loss"]))
    kept = load_file(result.run_dir / "model.safetensors")
    assert best != len(accs) - 1, accs  # else this data cannot tell the two apart
    expected = saved[best if keep == "best" else -1]
    assert all(torch.equal(kept[k], expected[k]) for k in kept)
    assert json.loads((result.run_dir / "config.json").read_text())["keep"] == keep


def test_auto_keep_is_resolved_and_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    result = tiny(tmp_path, epochs=1, plots=True)  # a handful of validation images
    assert json.loads((result.run_dir / "config.json").read_text())["keep"] == "last"
    assert "too few to pick the best epoch" in capsys.readouterr().out
    assert "Metrics of the last epoch's model" in (result.run_dir / "report.html").read_text()


def test_a_finished_run_drops_its_training_state_unless_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18: a one-epoch VGG16 run left 2.1 GB, 1.6 GB of it optimizer state."""
    from cnnkit.cli import main

    args = ["train", TINY, "--model", MODEL, "--epochs", "1", "--device", "cpu",
            "--out", str(tmp_path / "runs")]
    assert main([*args, "--name", "lean"]) == 0
    out = capsys.readouterr().out
    lean = tmp_path / "runs" / "lean"
    assert not (lean / "checkpoints").exists()
    assert "dropped the training state (" in out and "--keep-checkpoint keeps it" in out
    size = sum(p.stat().st_size for p in lean.rglob("*") if p.is_file())
    assert f"done: {lean} ({size / 1000:.1f} kB)" in out or f"({size / 1e6:.1f} MB)" in out
    html = (lean / "report.html").read_text()
    assert "the run folder holds" in html and "training state" not in html.split(
        "the run folder holds")[1][:80]
    assert main([*args, "--name", "kept", "--keep-checkpoint", "--no-plots"]) == 0
    kept = tmp_path / "runs" / "kept"
    assert (kept / "checkpoints" / "last.safetensors").is_file()
    assert "dropped" not in capsys.readouterr().out
