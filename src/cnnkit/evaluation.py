"""Evaluate a run: on given data, or on the held-out test split the run was made with."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.imageset import ImageSet
from cnnkit.data.seen import hashes_of, recorded
from cnnkit.data.source import DataSource
from cnnkit.data.sources import describe, load_eval_set, load_files, load_run_splits
from cnnkit.runtime.predict import Classifier
from cnnkit.tasks.base import Result


def evaluate_run(run: str | Path, data: str | None = None, *, tta: bool = False,
                 device: str = "auto", backend: str = "auto",
                 threshold: float | None = None, include_seen: bool = False) -> Result:
    """Metrics of a run's model on DATA.

    ``threshold``: a multi-label model's answers at this probability for every label,
    in place of its card's per-label thresholds.

    Without DATA, or when DATA is the data the run was trained on, the run's own
    held-out test split is used (split.json for folders and CSVs), never images that
    the model was trained or validated on. Other DATA is used without the images the
    run trained or validated on (known by their contents: a copy of its folder is the
    same images), unless ``include_seen``; either way a warning says how many.
    """
    clf = Classifier.load(run, device, backend)
    if threshold is not None:
        if clf.task.name == "single-label":
            raise CnnkitError(f"--threshold {threshold:g} sets a multi-label model's answers; "
                              f"{run} is single-label, and its metrics do not depend on one "
                              "(predict --threshold answers 'unknown' below it).")
        clf.card = replace(clf.card, task=clf.task.with_threshold(threshold))
    rundir = _run_folder(run)
    cfg = rundir.train_config() if rundir is not None else None
    given = describe(data) if data is not None else None
    if given is not None and (cfg is None or not same_source(given, cfg.data)):
        return _evaluate_on(clf, given, tta, rundir, include_seen)
    if cfg is None:
        raise CnnkitError(f"{run} is a model file outside a run folder, so it has no held-out "
                          "test split; pass DATA to evaluate on (a folder, a CSV or a built-in "
                          "set).")
    test = held_out_test(rundir, cfg, clf)
    if data is None:
        if test is None:
            raise CnnkitError(f"{rundir.root} was trained without a held-out test split; pass "
                              "DATA to evaluate on (a folder, a CSV or a built-in set).")
    elif test is None:
        log.warn(f"{rundir.root} has no held-out test split; evaluating on {data} as given")
        return _evaluate_on(clf, given, tta)
    else:
        log.info(f"{data} is what {rundir.root} was trained on: evaluating on its held-out "
                 f"test split ({len(test):,} images)")
    return clf.evaluate_set(test, tta=tta)


def _evaluate_on(clf: Classifier, source: DataSource, tta: bool, run: RunDir | None = None,
                 include_seen: bool = False) -> Result:
    """Metrics on ``source``; with ``run``, on the images of it the run has not seen."""
    imageset = load_eval_set(source, clf.card.preprocess, clf.classes)
    check_same_task(imageset, clf, source.spec)
    if run is not None:
        imageset = unseen(imageset, run, source, include_seen)
    return clf.evaluate_set(imageset, tta=tta)


def unseen(imageset: ImageSet, run: RunDir, source: DataSource, include_seen: bool
           ) -> ImageSet:
    """``imageset`` without the images ``run`` trained or validated on (split.json's files,
    known by their contents wherever they lie), said in a warning; with ``include_seen``
    all of it, said too. None left is an error: such figures are not held out."""
    doc = run.read_split()
    if doc is None or imageset.paths is None:
        return imageset
    learnt = recorded(doc, ("train", "val"))
    data = source.spec
    gone = learnt.unknown(("train", "val"))
    if gone:
        log.warn(f"{run.root}'s split.json records no content hashes (an older run) and "
                 f"{gone:,} of the files it lists are gone: images of {data} it trained on "
                 "cannot be recognised, so the metrics may count them")
    where = learnt.where(hashes_of(imageset.paths, source), ("train", "val"))
    trained, validated = where.count("train"), where.count("val")
    seen, n = trained + validated, len(imageset)
    if not seen:
        return imageset
    how = " or ".join(filter(None, (f"trained on ({trained:,})" if trained else "",
                                    f"validated on ({validated:,})" if validated else "")))
    what = f"images {run.root} {how}: the same file contents as its split.json lists"
    if include_seen:
        log.warn(f"{seen:,} of the {n:,} images of {data} are {what}. They are counted "
                 "(--include-seen): the metrics mix in images it learnt, so they do not "
                 "measure how it does on new ones.")
        return imageset
    if seen == n:
        raise CnnkitError(f"All {n:,} images of {data} are {what}, so their metrics would "
                          f"not be held out. Evaluate on its held-out test split (cnnkit "
                          f"evaluate {run.root}) or on images it has not seen; "
                          "--include-seen measures these anyway.")
    log.warn(f"{seen:,} of the {n:,} images of {data} are {what}. The metrics are on the "
             f"other {n - seen:,}, which it has not seen (--include-seen counts them all).")
    return imageset.subset([i for i, w in enumerate(where) if w is None])


def check_same_task(imageset: ImageSet, clf: Classifier, data: str) -> None:
    """Refuse multi-label data for a single-label model (and the other way round)."""
    multi = clf.card.task.name == "multi-label"
    if imageset.multilabel and not multi:
        raise CnnkitError(f"{data} is multi-label data (a set of labels per image) and the "
                          "model is single-label: it answers one class per image. Evaluate "
                          "it on single-label data (one class per image), or train a "
                          f"multi-label model on {data}.")
    if multi and not imageset.multilabel:
        raise CnnkitError(f"{data} gives one class per image and the model is multi-label; "
                          "evaluate it on multi-label data (a CSV of 'path,labels' rows, "
                          "labels separated by '|').")


def _run_folder(run: str | Path) -> RunDir | None:
    """The run folder of a run folder, its model.json or its model.safetensors."""
    path = Path(run)
    folder = path if path.is_dir() else path.parent
    return RunDir(folder) if (folder / "config.json").is_file() else None


def same_source(data: str | DataSource, trained_on: str) -> bool:
    """Whether DATA names the same built-in set (with the same options), folder or CSV."""
    given = data if isinstance(data, DataSource) else describe(data)
    try:
        original = describe(trained_on)
    except CnnkitError:  # the training data is gone or moved
        return False
    return given.same_data(original)


def held_out_test(rundir: RunDir, cfg: TrainConfig, clf: Classifier) -> ImageSet | None:
    """The test split recorded in split.json, or a built-in set's (deterministic) test split.

    None when the run was trained without one.
    """
    split = rundir.read_split()
    if split is not None:
        rows = split.get("test") or []
        if not rows:
            return None
        paths, labels, multilabel = rundir.split_files(split, rows, clf.classes)
        return load_files(paths, labels, clf.classes, clf.card.preprocess,
                          multilabel=multilabel)
    return load_run_splits(cfg, clf.card.preprocess).test
