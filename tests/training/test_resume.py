"""Stopping and resuming: exact continuation, refusals, and crash-safe checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.training import checkpoint

# Dropout and flip+crop augmentation: resuming must restore both random generators.
OPTIONS = {"model": "conv4k3-pool2-drop0.3-dense8", "epochs": 3, "batch_size": 16,
           "augment": "flip+crop", "plots": False, "device": "cpu"}
DATA = "shapes:size=12,count=60"
METRICS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")


def _train(tmp_path: Path, name: str, **extra) -> cnnkit.TrainResult:
    return cnnkit.train(DATA, out=str(tmp_path / "runs"), name=name, **{**OPTIONS, **extra})


def _stop_after(epoch: int):
    def callback(trainer, row) -> None:
        if row["epoch"] == epoch:
            raise KeyboardInterrupt
    return callback


def _metrics(history: list[dict]) -> list[tuple]:
    return [tuple(row[k] for k in METRICS) for row in history]


def _weights_equal(a: Path, b: Path) -> bool:
    wa, wb = load_file(a), load_file(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_an_interrupted_run_resumes_exactly(tmp_path: Path) -> None:
    whole = _train(tmp_path, "whole", keep_checkpoint=True)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "stopped", callbacks=[_stop_after(1)], keep_checkpoint=True)
    run = tmp_path / "runs" / "stopped"
    # the finished epoch is kept: its metrics row and a checkpoint to continue from
    assert len((run / "metrics.csv").read_text().splitlines()) == 2
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert not (run / "test_metrics.json").exists()
    resumed = cnnkit.resume(run)
    assert resumed.run_dir == run
    assert _metrics(resumed.history) == _metrics(whole.history)
    assert resumed.test.to_dict() == whole.test.to_dict()
    assert _weights_equal(run / "model.safetensors", whole.run_dir / "model.safetensors")
    assert _weights_equal(run / "checkpoints" / "last.safetensors",
                          whole.run_dir / "checkpoints" / "last.safetensors")
    assert len((run / "metrics.csv").read_text().splitlines()) == 4  # no duplicated rows


def test_a_finished_run_is_not_resumed(tmp_path: Path) -> None:
    done = _train(tmp_path, "done", epochs=1)
    assert not (done.run_dir / "checkpoints").exists()  # dropped: nothing to resume
    with pytest.raises(CnnkitError, match=r"already finished its 1 epoch; nothing to resume "
                       r".*--init-from"):
        cnnkit.resume(done.run_dir)
    kept = _train(tmp_path, "kept", epochs=1, keep_checkpoint=True)
    with pytest.raises(CnnkitError, match="already finished its 1 epoch; nothing to resume"):
        cnnkit.resume(kept.run_dir)


def test_a_resumed_run_drops_its_training_state_when_it_ends(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "r", callbacks=[_stop_after(1)], epochs=2)
    run = tmp_path / "runs" / "r"
    assert (run / "checkpoints" / "last.safetensors").is_file()  # resumable: kept
    cnnkit.resume(run)
    assert not (run / "checkpoints").exists() and (run / "model.safetensors").is_file()


def test_an_early_stopped_run_is_not_resumed(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnkit.training.loop import Trainer

    monkeypatch.setattr(Trainer, "_is_better", lambda self, row: not self.best)
    stopped = _train(tmp_path, "early", epochs=6, patience=1)
    assert len(stopped.history) == 2
    with pytest.raises(CnnkitError, match="stopped early"):
        cnnkit.resume(stopped.run_dir)


def test_a_run_stopped_before_its_first_epoch_ended(tmp_path: Path, capsys) -> None:
    def stop_in_first_batch(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), pytest.MonkeyPatch.context() as mp:
        mp.setattr("cnnkit.training.loop.Trainer._epoch", stop_in_first_batch)
        _train(tmp_path, "early-stop")
    warning = capsys.readouterr().err  # the advice matches what is on disk
    assert "nothing is saved to resume; run the same command again" in warning
    assert "--resume" not in warning
    with pytest.raises(CnnkitError, match="stopped before its first epoch ended"):
        cnnkit.resume(tmp_path / "runs" / "early-stop")


def test_an_interrupted_run_names_the_epoch_it_saved(tmp_path: Path, capsys) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "r", callbacks=[_stop_after(2)])
    warning = capsys.readouterr().err
    assert (f"epoch 2 (the last finished) is saved; continue with: cnnkit train --resume "
            f"{tmp_path / 'runs' / 'r'}") in warning


def test_resume_needs_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="Run folder not found"):
        cnnkit.resume(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CnnkitError, match="is not a cnnkit run"):
        cnnkit.resume(tmp_path / "plain")


def test_a_crash_while_saving_keeps_the_last_good_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "crash", callbacks=[_stop_after(1)])
    run = tmp_path / "runs" / "crash"
    last = run / "checkpoints" / "last.safetensors"
    good = last.read_bytes()
    real_save = checkpoint.save_file

    def dying_save(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(Path(filename).read_bytes()[:100])  # half written...
        raise OSError("power cut")  # ...and the machine goes down

    monkeypatch.setattr(checkpoint, "save_file", dying_save)
    with pytest.raises(OSError, match="power cut"):
        cnnkit.resume(run)
    assert last.read_bytes() == good
    assert [p.name for p in last.parent.iterdir()] == ["last.safetensors"]  # no leftovers
    meta = json.loads(checkpoint.safe_open(str(last), "pt").metadata()["cnnkit"])
    assert meta["epoch_in_phase"] == 0
    monkeypatch.undo()
    assert len(cnnkit.resume(run).history) == 3


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "bad", callbacks=[_stop_after(1)])
    last = tmp_path / "runs" / "bad" / "checkpoints" / "last.safetensors"
    last.write_bytes(b"\0" * 64)
    with pytest.raises(CnnkitError, match="not a readable cnnkit checkpoint"):
        cnnkit.resume(last.parent.parent)


def test_checkpoints_hold_no_pickle(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "x", callbacks=[_stop_after(1)])
    last = tmp_path / "runs" / "x" / "checkpoints" / "last.safetensors"
    header_len = int.from_bytes(last.read_bytes()[:8], "little")
    header = json.loads(last.read_bytes()[8:8 + header_len])  # plain safetensors
    assert any(k.startswith("optim.") for k in header) and "rng.torch" in header
    assert b"\x80\x04" not in last.read_bytes()[:8 + header_len]  # no pickle protocol mark


def test_a_run_on_a_relative_folder_resumes_from_another_directory(
        make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "work" / "photos", per_class=10, size=16)
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(KeyboardInterrupt):
        cnnkit.train("photos", out=str(tmp_path / "runs"), name="rel",
                     callbacks=[_stop_after(1)], **{**OPTIONS, "img_size": 16})
    monkeypatch.chdir(tmp_path)  # "photos" means nothing here
    resumed = cnnkit.resume(tmp_path / "runs" / "rel")
    assert len(resumed.history) == 3


def test_an_interrupted_multilabel_run_resumes_exactly(tmp_path: Path) -> None:
    from tests.conftest import write_mosaics

    csv = write_mosaics(tmp_path / "mosaics", count=140)  # 35 validation images: enough
    # to choose thresholds on (tasks.ood.MIN_HELD_OUT)
    options = {**OPTIONS, "model": "conv6k3same-pool2-conv8k3-gap", "img_size": 16,
               "epochs": 2, "augment": "flip+mixup", "keep_checkpoint": True,
               "val_fraction": 0.25, "test_fraction": 0.25}
    whole = cnnkit.train(str(csv), out=str(tmp_path / "runs"), name="whole", **options)
    with pytest.raises(KeyboardInterrupt):
        cnnkit.train(str(csv), out=str(tmp_path / "runs"), name="stopped",
                     callbacks=[_stop_after(1)], **options)
    resumed = cnnkit.resume(tmp_path / "runs" / "stopped")
    keys = ("epoch", "train_loss", "train_exact", "val_loss", "val_exact")
    assert [tuple(r[k] for k in keys) for r in resumed.history] == [
        tuple(r[k] for k in keys) for r in whole.history]
    assert resumed.test.to_dict() == whole.test.to_dict()
    cards = [json.loads((run / "model.json").read_text())["task"]
             for run in (whole.run_dir, resumed.run_dir)]
    assert cards[0] == cards[1] and len(cards[0]["thresholds"]) == 10


def test_a_folder_that_changed_since_the_run_started_is_not_resumed(make_tree,
                                                                    tmp_path: Path) -> None:
    """Images added to the folder after Ctrl-C: --resume split it anew (140 train, 18 val,
    18 test against the 108/14/14 of split.json), so the test held images the first epochs
    trained on, and `cnnkit evaluate` (split.json's test) disagreed with the printed test."""
    tree = make_tree(tmp_path / "photos", per_class=10, size=12)
    with pytest.raises(KeyboardInterrupt):
        cnnkit.train(str(tree), out=str(tmp_path / "runs"), name="grown",
                     callbacks=[_stop_after(1)], **OPTIONS)
    make_tree(tmp_path / "more", per_class=4, size=12, seed=1)
    for image in (tmp_path / "more").rglob("*.png"):
        image.rename(tree / image.parent.name / f"new-{image.name}")
    run = tmp_path / "runs" / "grown"
    with pytest.raises(CnnkitError, match=r"changed since it started \(train: 24 -> \d+ "
                                          r"images.*or start a new run"):
        cnnkit.resume(run)
    assert (run / "checkpoints" / "last.safetensors").is_file()  # still resumable as it was


def test_other_images_under_the_same_names_are_not_resumed(make_tree, tmp_path: Path) -> None:
    """The folder refilled after Ctrl-C (another export into the same file names): the
    paths split as before, so the check by path resumed on images none of the splits
    had held, testing on ones the first epoch may have trained on."""
    tree = make_tree(tmp_path / "photos", per_class=10, size=12)
    with pytest.raises(KeyboardInterrupt):
        cnnkit.train(str(tree), out=str(tmp_path / "runs"), name="refilled",
                     callbacks=[_stop_after(1)], **OPTIONS)
    make_tree(tree, per_class=10, size=12, seed=1)  # the same names, other images
    with pytest.raises(CnnkitError, match=r"changed since it started \(train: \d+ other "
                                          r"files.*test: \d+ other files"):
        cnnkit.resume(tmp_path / "runs" / "refilled")


def test_the_same_images_at_other_paths_resume(make_tree, tmp_path: Path) -> None:
    """A CSV's images moved (and the CSV rewritten to match) split as they did, by their
    contents: the run resumes, where the check by path refused it."""
    tree = make_tree(tmp_path / "photos", per_class=10, size=12)
    files = sorted(tree.rglob("*.png"))
    csv = tmp_path / "photos.csv"
    csv.write_text("".join(f"{f},{f.parent.name}\n" for f in files))
    with pytest.raises(KeyboardInterrupt):
        cnnkit.train(str(csv), out=str(tmp_path / "runs"), name="moved",
                     callbacks=[_stop_after(1)], **OPTIONS)
    tree.rename(tmp_path / "moved")
    csv.write_text("".join(f"{tmp_path / 'moved' / f.relative_to(tree)},{f.parent.name}\n"
                           for f in files))
    resumed = cnnkit.resume(tmp_path / "runs" / "moved")
    assert len(resumed.history) == 3
