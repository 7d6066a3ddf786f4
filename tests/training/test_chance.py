"""A run whose kept model scores chance on validation says so at its end, with the likely
causes; one that learnt, and a multi-label one, do not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cnnkit
from cnnkit.base.config import TrainConfig
from cnnkit.tasks.multi_label import MultiLabel
from cnnkit.tasks.single_label import SingleLabel
from cnnkit.training import events as ev
from cnnkit.training.chance import chance_line, near_chance

TINY = "shapes:size=12,count=240"  # 24 validation images
OPTIONS = {"model": "conv4k3-pool2-dense8", "batch_size": 16, "plots": False,
           "device": "cpu", "keep": "last"}


@pytest.mark.parametrize(("value", "chance", "near"), [
    (0.10, 0.10, True), (0.15, 0.10, True), (0.16, 0.10, False), (0.90, 0.10, False),
    (0.55, 0.50, True), (0.56, 0.50, False),  # two classes: five points at most
    (0.015, 0.01, True), (0.02, 0.01, False),  # 100 classes: half of chance
    (0.90, 0.90, True), (0.96, 0.90, False),  # one class is 90% of the images
    (0.92, 0.90, True), (0.93, 0.90, False),  # a third of the rest learnt is learning
])
def test_near_chance_is_within_half_of_it_at_most_five_points(value, chance, near) -> None:
    assert near_chance(value, chance, 100) is near


def test_a_handful_of_validation_images_tells_nothing() -> None:
    assert near_chance(1 / 3, 1 / 3, 20) and not near_chance(1 / 3, 1 / 3, 19)


def test_chance_is_the_most_common_class_share() -> None:
    assert SingleLabel().chance(torch.tensor([0, 1, 2, 3] * 5)) == 0.25
    assert SingleLabel().chance(torch.tensor([0, 0, 0, 1])) == 0.75
    assert SingleLabel().chance(torch.tensor([], dtype=torch.long)) is None
    # multi-label: exact match can stay near "no label" while the model learns
    assert MultiLabel().chance(torch.tensor([[0, 1], [0, 0], [0, 0]])) is None


def test_the_line_names_the_figure_and_the_likely_causes_first() -> None:
    cfg = TrainConfig(data="x", lr=10.0, mode="scratch")
    rose = [{"train_loss": 2.3}, {"train_loss": 7.5}]
    line = chance_line("accuracy", 0.1062, 0.1, 10, cfg, rose)
    assert line == ("the kept model's validation accuracy is 10.62%, at or near chance for "
                    "10 classes (one answer for every image scores 10.00%): it has learnt "
                    "nothing. Likely causes: a learning rate too high (--lr 10: try --lr "
                    "find, or a rate 10x smaller), or labels that do not match the images.")
    worse = [{"train_loss": 9.1}, {"train_loss": 7.5}]  # fell, but far above ln 10 = 2.3
    assert chance_line("accuracy", 0.1, 0.1, 10, cfg, worse) == line.replace("10.62%", "10.00%")
    fell = [{"train_loss": 1.10}, {"train_loss": 1.09}]  # barely moved: too little training
    assert "(1 epoch)" in chance_line("accuracy", 0.33, 1 / 3, 3, cfg, fell[:1])
    assert chance_line("accuracy", 0.33, 1 / 3, 3, cfg, fell).endswith(
        "Likely causes: too few epochs or images (2 epochs), a learning rate too high or too "
        "low (--lr 10: try --lr find), or labels that do not match the images.")
    features = chance_line("accuracy", 0.1, 0.1, 10, cfg.replace(mode="features"), rose)
    assert "features do not tell these classes apart (try --mode fine-tune)" in features
    assert "learning rate" not in features


def test_a_run_that_learnt_nothing_says_so_last(tmp_path: Path, monkeypatch, capsys) -> None:
    """--lr 10 on digits ended at 10% validation accuracy with 'done:' and nothing else."""
    from cnnkit.training import loop
    from cnnkit.training.step import TrainStep

    class Forgets(TrainStep):  # every step ends with zero weights: one answer for all
        def __call__(self, x, y, lr=None):
            out = super().__call__(x, y, lr)
            with torch.no_grad():
                for p in self.model.parameters():
                    p.zero_()
            return out

    monkeypatch.setattr(loop, "TrainStep", Forgets)
    seen: list[ev.Event] = []
    result = cnnkit.train(TINY, epochs=2, lr=0.5, out=str(tmp_path), name="r",
                          events=ev.Events(seen.append), **OPTIONS)
    err = capsys.readouterr().err.strip().splitlines()
    tested = next(e for e in seen if isinstance(e, ev.Tested))
    value = result.history[-1]["val_acc"]
    assert tested.at_chance.startswith(f"the kept model's validation accuracy is {value:.2%}, "
                                       "at or near chance for 3 classes (one answer for "
                                       "every image scores ")
    assert "Likely causes: too few epochs or images (2 epochs), a learning rate too high " \
        "or too low (--lr 0.5: try --lr find)" in tested.at_chance
    assert err[-1] == f"warning: {tested.at_chance}"  # said after "done:"
    assert (result.run_dir / "model.safetensors").is_file()  # the run itself is complete


@pytest.mark.parametrize(("keep", "start", "kept"), [
    ("last", None, 0.1), ("best", None, 0.8),  # the epoch the run keeps
    ("last", {"kept": "start", "val_acc": 0.7}, 0.7),  # a trained start it kept instead
])
def test_the_figure_judged_is_the_kept_models(tmp_path: Path, keep, start, kept) -> None:
    import json
    from types import SimpleNamespace

    from cnnkit.training.fit import _kept_figure

    history = [{"epoch": 1, "val_acc": 0.2, "val_loss": 2.0},
               {"epoch": 2, "val_acc": 0.8, "val_loss": 0.5},
               {"epoch": 3, "val_acc": 0.1, "val_loss": 9.0}]
    if start:
        (tmp_path / "kept.json").write_text(json.dumps(start))
    plan = SimpleNamespace(task=SingleLabel(), config=TrainConfig(data="x", keep=keep))
    run = SimpleNamespace(root=tmp_path)
    assert _kept_figure(plan, run, history, 100) == kept  # type: ignore[arg-type]
    assert _kept_figure(plan, run, [{"epoch": 1}], 0) is None  # no validation split
