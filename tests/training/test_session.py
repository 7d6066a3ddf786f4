"""Training runs: the run folder, reproducibility, resume, imbalance, early stopping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import cnnkit
from cnnkit.errors import CnnkitError
from cnnkit.training.checkpoint import load_checkpoint

TINY = {"model": "conv8k3-pool2-dense16", "plots": False, "device": "cpu", "seed": 0}
DATA = "shapes:count=90,size=16"


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_folder_holds_everything_to_repeat_and_use_the_run(tmp_path: Path) -> None:
    result = cnnkit.train(DATA, epochs=2, out=str(tmp_path), **TINY)
    run = result.run_dir
    for name in ("config.json", "classes.txt", "model.safetensors", "model.json",
                 "metrics.csv", "checkpoints/last.safetensors", "test_metrics.json",
                 "phases.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 2 and config["img_size"] == 16 and config["mode"] == "scratch"
    sidecar = json.loads((run / "model.json").read_text())
    assert sidecar["classes"] == ["circle", "square", "triangle"]
    assert sidecar["input"]["img_size"] == 16 and sidecar["input"]["channels"] == 3
    assert len(sidecar["input"]["mean"]) == 3 and sidecar["cnnkit_version"]
    assert sidecar["architecture"]["layers"][0]["filters"] == 8
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"} <= set(rows[0])
    assert (run / "classes.txt").read_text().split() == ["circle", "square", "triangle"]


def test_seeded_cpu_runs_are_reproducible(tmp_path: Path) -> None:
    a = cnnkit.train(DATA, epochs=2, out=str(tmp_path), name="a", **TINY)
    b = cnnkit.train(DATA, epochs=2, out=str(tmp_path), name="b", **TINY)
    keys = ("train_loss", "val_loss", "val_acc")
    assert [[r[k] for k in keys] for r in a.history] == [[r[k] for k in keys] for r in b.history]
    c = cnnkit.train(DATA, epochs=2, out=str(tmp_path), name="c", **{**TINY, "seed": 1})
    assert [r["train_loss"] for r in c.history] != [r["train_loss"] for r in a.history]


def test_resume_continues_exactly_where_the_run_stopped(tmp_path: Path) -> None:
    full = cnnkit.train(DATA, epochs=3, out=str(tmp_path), name="full", **TINY)

    def stop_after_first(trainer, row) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cnnkit.train(DATA, epochs=3, out=str(tmp_path), name="cut", callbacks=[stop_after_first],
                     **TINY)
    cut = tmp_path / "cut"
    assert len(_metrics(cut)) == 1 and (cut / "checkpoints" / "last.safetensors").is_file()
    resumed = cnnkit.resume(cut)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_acc"] == b["val_acc"]
    assert resumed.test_accuracy == full.test_accuracy
    with pytest.raises(CnnkitError, match="already finished"):
        cnnkit.resume(cut)


def test_a_crash_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from cnnkit.training import loop

    def crash_in_epoch_two(trainer, row) -> None:  # epoch 2's checkpoint write fails
        if row["epoch"] == 2:
            monkeypatch.setattr(loop, "save_checkpoint", _broken_save)

    with pytest.raises(OSError, match="disk"):
        cnnkit.train(DATA, epochs=3, out=str(tmp_path), name="crash",
                     callbacks=[crash_in_epoch_two], **TINY)
    ckpt = tmp_path / "crash" / "checkpoints" / "last.safetensors"
    _, _, meta, _ = load_checkpoint(ckpt)  # still whole, from epoch 1
    assert meta["epoch_in_phase"] == 0 and len(meta["history"]) == 1
    assert not list(ckpt.parent.glob("*.tmp*"))


def _broken_save(path, *args, **kwargs) -> None:
    from cnnkit.atomic import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(b"half a checkp")
        raise OSError("disk went away")


def test_imbalanced_classes_get_a_weighted_loss_and_say_so(tmp_path: Path, capsys) -> None:
    from PIL import Image

    root = tmp_path / "imb"
    for cls, n in (("many", 40), ("few", 8)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (16, 16), (i * 5, 0, 0) if cls == "many" else (0, 0, 200)).save(
                root / cls / f"{i}.png")
    cnnkit.train(str(root), epochs=1, img_size=16, out=str(tmp_path), **TINY)
    assert "class-weighted loss" in capsys.readouterr().out


def test_early_stopping_stops_and_resume_says_why(tmp_path: Path) -> None:
    def never_better(trainer, row) -> None:
        trainer.best["val_acc"] = 2.0  # nothing can beat this

    result = cnnkit.train(DATA, epochs=6, patience=2, out=str(tmp_path), name="es",
                          callbacks=[never_better], **TINY)
    assert len(result.history) == 3  # epoch 1 sets best; 2 and 3 do not improve -> stop
    with pytest.raises(CnnkitError, match="stopped early after epoch 3"):
        cnnkit.resume(result.run_dir)


def test_bad_model_leaves_no_empty_run_folder(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError):
        cnnkit.train(DATA, out=str(tmp_path), **{**TINY, "model": "conv8k99-dense4"})
    assert not any(tmp_path.iterdir())


def test_unknown_option_fails_loudly() -> None:
    with pytest.raises(CnnkitError, match="Unknown training option"):
        cnnkit.train(DATA, epochz=3)
    with pytest.raises(CnnkitError, match="--lr must be a positive number"):
        cnnkit.train(DATA, lr=-1.0)


def test_the_best_epochs_model_is_the_saved_one(tmp_path: Path) -> None:
    result = cnnkit.train(DATA, epochs=3, out=str(tmp_path), **TINY)
    best = max(result.history, key=lambda r: (r["val_acc"], -r["val_loss"]))
    clf = cnnkit.load(str(result.run_dir), device="cpu")
    _, _, meta, _ = load_checkpoint(result.run_dir / "checkpoints" / "last.safetensors")
    assert meta["best"]["epoch"] == best["epoch"]
    assert isinstance(clf.model, torch.nn.Module)
