"""Training a multi-label model: the task comes from the data, per-label thresholds are
chosen on the validation images and kept in the card, and the test metrics are mAP's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cnnkit
from cnnkit.artifacts.modelcard import read_card
from cnnkit.base.errors import CnnkitError
from cnnkit.tasks.label_thresholds import choose_thresholds
from cnnkit.tasks.multi_label import MultiLabel


def test_a_multilabel_run_keeps_thresholds_chosen_on_validation(trained_multilabel) -> None:
    run, _ = trained_multilabel
    card, _ = read_card(run)
    assert isinstance(card.task, MultiLabel) and len(card.task.thresholds) == 10
    doc = json.loads((run / "model.json").read_text())
    assert doc["task"]["name"] == "multi-label"
    assert doc["task"]["thresholds"] == list(card.task.thresholds)
    # the thresholds are those of the best F1 on the run's own validation images
    from cnnkit.base.config import TrainConfig
    from cnnkit.data.sources import load_run_splits
    from cnnkit.runtime.predict import Classifier

    clf = Classifier.load(run, "cpu")
    splits = load_run_splits(TrainConfig.from_dict(json.loads((run / "config.json")
                                                               .read_text())), card.preprocess)
    probs = clf.log_probs(splits.val).exp().numpy()
    expected, _ = choose_thresholds(probs, splits.val.labels.numpy())
    assert list(card.task.thresholds) == pytest.approx(expected, abs=1e-5)
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert {"mAP", "exact_match", "hamming_loss", "per_label"} <= set(metrics)
    assert [r["threshold"] for r in metrics["per_label"]] == pytest.approx(
        card.task.thresholds, abs=1e-6)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert "val_exact" in rows[0] and "val_acc" not in rows[0]


def test_init_from_must_be_of_the_same_task(trained, trained_multilabel,
                                            tmp_path: Path) -> None:
    single, shapes = trained
    multi, csv = trained_multilabel
    with pytest.raises(CnnkitError, match=r"is multi-label data .* single-label model"):
        cnnkit.train(str(csv), init_from=str(single), epochs=1, device="cpu",
                     out=str(tmp_path), plots=False)
    with pytest.raises(CnnkitError, match=r"one class per image and --init-from .* multi-label"):
        cnnkit.train(str(shapes), init_from=str(multi), epochs=1, device="cpu",
                     out=str(tmp_path), plots=False)
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_the_features_mode_trains_a_multilabel_head(trained_multilabel, tmp_path: Path) -> None:
    """Frozen Lite0 codes and a sigmoid head: the same task, thresholds and metrics as a
    fine-tune, and the head beats always answering each label's base rate."""
    from cnnkit.runtime.predict import Classifier

    csv = trained_multilabel[1]
    result = cnnkit.train(str(csv), model="efficientnet_lite0", mode="features", img_size=64,
                          val_fraction=0.25, test_fraction=0.25, plots=False, device="cpu",
                          out=str(tmp_path), name="features")
    card, _ = read_card(result.run_dir)
    assert isinstance(card.task, MultiLabel) and len(card.task.thresholds) == 10
    metrics = json.loads((result.run_dir / "test_metrics.json").read_text())
    assert {"mAP", "exact_match", "hamming_loss", "per_label"} <= set(metrics)
    clf = Classifier.load(result.run_dir, "cpu")
    split = json.loads((result.run_dir / "split.json").read_text())
    test = [path for path, _ in split["test"]]
    answers = clf.predict(test, top_k=3)
    assert len(answers) == len(test) and all(hasattr(a, "labels") for a in answers)
    # a label's AP by chance is its share of the test images (about 0.3 here)
    chance = sum(len(labels) for _, labels in split["test"]) / (10 * len(test))
    assert metrics["mAP"]["macro"] > chance + 0.15, (metrics["mAP"], chance)


def test_a_multilabel_run_of_one_label_saves_loads_and_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 'path,labels' rows naming one label (a yes/no question) trained every epoch, then
    # stopped at its own model.json: "classes must list 2 to 100,000 names"
    from tests.conftest import write_mosaics

    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    csv = write_mosaics(tmp_path / "m", count=60)
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join([rows[0]] + [f"{r.split(',')[0]},{'Bag' if 'Bag' in r else ''}"
                                          for r in rows[1:]]) + "\n")
    result = cnnkit.train(str(csv), model="conv6k3same-pool2-conv8k3-gap", img_size=16,
                          epochs=1, batch_size=8, device="cpu", plots=False,
                          out=str(tmp_path / "runs"), name="one")
    card, _ = read_card(result.run_dir)
    assert card.classes == ("Bag",) and isinstance(card.task, MultiLabel)
    (answer,) = cnnkit.load(str(result.run_dir)).predict([str(csv.parent / "m000.png")])
    assert [name for name, _ in answer.top] == ["Bag"]
    metrics = cnnkit.evaluate(str(result.run_dir), threshold=0.0)
    (bag,) = metrics.per_label
    assert bag["recall"] == 1.0 and bag["predicted"] == metrics.n  # all answered at 0
