"""Evaluate a run: on given data, or on the held-out test split the run was made with."""

from __future__ import annotations

from pathlib import Path

from cnnkit.config import TrainConfig
from cnnkit.data.sources import load_splits
from cnnkit.errors import CnnkitError
from cnnkit.metrics import EvalResult
from cnnkit.predict import Classifier
from cnnkit.rundir import RunDir


def evaluate_run(run: str | Path, data: str | None = None, *, tta: bool = False,
                 device: str = "auto") -> EvalResult:
    clf = Classifier.load(run, device)
    if data is not None:
        return clf.evaluate(data, tta=tta)
    rundir = RunDir.open(run)
    cfg = TrainConfig.from_dict(rundir.read_config())
    splits = load_splits(cfg.data, clf.card.preprocess, val_fraction=cfg.val_fraction,
                         test_fraction=cfg.test_fraction, seed=cfg.seed,
                         per_class=cfg.per_class)
    if splits.test is None:
        raise CnnkitError(f"{run} was trained without a held-out test split; pass DATA to "
                          "evaluate on (a folder, a CSV or a built-in set).")
    return clf.evaluate_set(splits.test, tta=tta)
