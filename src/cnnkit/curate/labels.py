"""Images whose label is probably wrong (confident learning, by cleanlab).

Every image gets out-of-fold probabilities: the data is cut into ``folds`` stratified
parts, a linear head (the features mode's multinomial logistic regression) is fitted on
the codes of all parts but one and predicts the one left out. cleanlab's
``find_label_issues`` then flags the images whose given label the held-out heads find
unlikely, ranked by its label-quality score (the lowest first). A model never judges an
image it was fitted on: on its own training images a model agrees with the wrong labels
it has learned, so a run's model gives codes here, never its own probabilities.

cleanlab counts a held-out head's honest confusions (a shirt that looks like a T-shirt)
as label noise too, so of what it flags only the images whose given label is more likely
wrong than right are reported as *probably wrong*: under flips at the noise rate ``e``
cleanlab estimates, spread over the other ``K - 1`` classes, the label is more likely
wrong when its out-of-fold probability is under ``e / ((K - 1)(1 - e) + e)``. The rest
of cleanlab's flags are listed as *worth a look*.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.base.errors import CnnkitError
from cnnkit.curate.codes import Coded

FOLDS = 5
HEAD_ROUNDS = 4  # L-BFGS rounds of the features mode's head (converged on these codes)
HEAD_C = 100.0  # the heads' inverse L2 strength on unit-length codes (design-notes.md)
PROBABLY, WORTH_A_LOOK = "probably wrong", "worth a look"
# Held-out heads that agree with fewer labels than this cannot say which are wrong: the
# codes do not tell the classes apart (a run's model that has not learned, say).
MIN_AGREEMENT = 0.5


@dataclass(frozen=True)
class LabelIssue:
    index: int  # into the coded images
    name: str
    split: str
    given: str
    likely: str
    quality: float  # cleanlab's label-quality score of the given label (0..1, low: suspect)
    p_given: float  # out-of-fold probability of the given label
    p_likely: float  # ... and of the likely one
    verdict: str = PROBABLY  # or WORTH_A_LOOK

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.name, "split": self.split, "verdict": self.verdict,
                "given": self.given,
                "likely": self.likely, "quality": round(self.quality, 4),
                "p_given": round(self.p_given, 4), "p_likely": round(self.p_likely, 4)}


@dataclass
class LabelCheck:
    """What :func:`find_wrong_labels` found: cleanlab's flags, most suspect first."""

    issues: list[LabelIssue]
    images: int
    folds: int
    by: str  # the codes' network, in words
    accuracy: float  # of the out-of-fold predictions against the given labels
    noise_rate: float = 0.0  # cleanlab's estimate of the share of wrong labels
    cutoff: float = 0.0  # out-of-fold probability under which a label is probably wrong
    unreliable: str = ""  # why no label is called probably wrong, when the codes cannot tell
    seconds: float = 0.0
    probs: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def wrong(self) -> list[LabelIssue]:
        """The flagged images whose label is more likely wrong than right."""
        return [i for i in self.issues if i.verdict == PROBABLY]

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "probably_wrong": len(self.wrong),
                "worth_a_look": len(self.issues) - len(self.wrong), "folds": self.folds,
                "codes": self.by, "out_of_fold_accuracy": round(self.accuracy, 4),
                "noise_rate": round(self.noise_rate, 4), "cutoff": round(self.cutoff, 5),
                **({"unreliable": self.unreliable} if self.unreliable else {}),
                "seconds": round(self.seconds, 2),
                "issues": [i.to_dict() for i in self.issues]}


def check_fold_count(folds: int) -> None:
    """--folds below 2 cuts nothing out (checked before any image is read)."""
    if folds < 2:
        raise CnnkitError(f"--folds must be at least 2. Received: {folds}")


def check_folds(labels: np.ndarray, classes: tuple[str, ...], folds: int) -> None:
    """One clear line when the data cannot be cut into ``folds`` parts per class."""
    check_fold_count(folds)
    if len(labels) < folds:
        raise CnnkitError(f"{len(labels)} image(s) are fewer than the {folds} folds the "
                          "out-of-fold probabilities need. Add images, or pass a smaller "
                          "--folds (at least 2).")
    counts = np.bincount(labels, minlength=len(classes))
    small = [c for c, n in zip(classes, counts) if n < folds]
    if small:
        n = int(counts.min())
        raise CnnkitError(f"class(es) {', '.join(map(repr, small))} have fewer images than "
                          f"the {folds} folds (the smallest has {n}): each fold's head must "
                          "see every class. Add images to them, or pass --folds "
                          f"{max(2, n)}" + ("." if n >= 2 else " after adding some."))


def check_csv_name(path: str | os.PathLike, source: str) -> None:
    """One clear line when ``--write-csv`` cannot name the relabelled CSV: not a .csv
    name, or the data's own CSV (checked before any image is read)."""
    target = Path(path)
    if os.path.exists(source) and Path(source).is_file() \
            and Path(source).resolve() == target.resolve():
        raise CnnkitError(f"--write-csv {path} is the data's own CSV: cnnkit never changes "
                          "the source labels. Write the relabelled CSV to another file.")
    if target.suffix.lower() != ".csv":
        raise CnnkitError(f"--write-csv takes a .csv file name. Received: {str(path)!r}")


def out_of_fold(codes: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = FOLDS,
                seed: int = 0) -> np.ndarray:
    """Each image's class probabilities from a head fitted on the other folds."""
    from sklearn.model_selection import StratifiedKFold

    from cnnkit.tasks.registry import DEFAULT, get_task
    from cnnkit.training.features import fit_head

    x = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    probs = np.zeros((len(labels), num_classes), dtype=np.float64)
    task = get_task(DEFAULT)  # single-label
    cut = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held in cut.split(codes, labels):
        fi, hi = torch.from_numpy(fit_idx), torch.from_numpy(held)
        head = fit_head(x[fi], y[fi], num_classes, task, rounds=HEAD_ROUNDS, c=HEAD_C)
        with torch.no_grad():
            probs[held] = torch.softmax(head(x[hi]), 1).double().numpy()
    return probs


def find_wrong_labels(coded: Coded, folds: int = FOLDS, seed: int = 0) -> LabelCheck:
    """The images whose label is probably wrong, most suspect first."""
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    check_folds(coded.labels, coded.classes, folds)
    start = time.perf_counter()
    probs = out_of_fold(coded.codes, coded.labels, len(coded.classes), folds, seed)
    # n_jobs=1: no worker pool. cleanlab's is forked from this process, whose torch and
    # UMAP (numba) threads may hold a lock at that moment: a worker then waited on it for
    # ever (cnnkit data map hung); one process gives the same flags in milliseconds here.
    order = find_label_issues(coded.labels, probs, return_indices_ranked_by="self_confidence",
                              n_jobs=1)
    quality = get_label_quality_scores(coded.labels, probs, method="self_confidence")
    k = len(coded.classes)
    noise = num_label_issues(coded.labels, probs) / len(coded)
    cutoff = noise / ((k - 1) * (1 - noise) + noise) if noise < 1 else 1.0
    likely = probs.argmax(1)
    issues = [LabelIssue(int(i), coded.names[i], coded.splits[i],
                         coded.classes[coded.labels[i]], coded.classes[likely[i]],
                         float(quality[i]), float(probs[i, coded.labels[i]]),
                         float(probs[i, likely[i]]),
                         PROBABLY if probs[i, coded.labels[i]] < cutoff else WORTH_A_LOOK)
              for i in order]
    accuracy = float((likely == coded.labels).mean())
    unreliable = ""
    if accuracy < MIN_AGREEMENT:
        unreliable = (f"the held-out heads agree with only {accuracy:.0%} of the labels (chance "
                      f"is {1 / k:.0%}): the codes from {coded.by} do not tell the classes "
                      "apart, so no label can be called wrong")
        issues = [replace(i, verdict=WORTH_A_LOOK) for i in issues]
    return LabelCheck(issues, len(coded), folds, coded.by, accuracy, noise, cutoff,
                      unreliable, time.perf_counter() - start, probs)


SHEET_LIMIT = 64  # suspects shown on the contact sheet (all are in the CSV and JSON)


def write_label_files(check: LabelCheck, coded: Coded, out: str | os.PathLike
                      ) -> dict[str, Path]:
    """``labels.csv``, ``labels.json`` and the contact sheet ``labels.png`` in ``out``."""
    from cnnkit.base.atomic import atomic_path, write_json
    from cnnkit.curate.sheet import contact_sheet

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "labels.csv", "json": folder / "labels.json",
             "sheet": folder / "labels.png"}
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "file", "split", "verdict", "given", "likely", "quality",
                    "p_given", "p_likely"])
        for rank, i in enumerate(check.issues, 1):
            d = i.to_dict()
            w.writerow([rank, d["file"], d["split"], d["verdict"], d["given"], d["likely"],
                        d["quality"], d["p_given"], d["p_likely"]])
    write_json(paths["json"], check.to_dict())
    shown = check.issues[:SHEET_LIMIT]
    title = (f"{len(check.wrong)} label(s) probably wrong, {len(check.issues) - len(check.wrong)}"
             f" worth a look, of {check.images} images; most suspect first (given -> likely)")
    contact_sheet([coded.images[i.index] for i in shown],
                  [[f"{r}. {Path(i.name).name}", f"{i.given} ->",
                    f"{i.likely} {i.p_likely:.0%}" + ("" if i.verdict == PROBABLY else " ?")]
                   for r, i in enumerate(shown, 1)],
                  paths["sheet"], title=title)
    return paths


def write_fixed_csv(check: LabelCheck, coded: Coded, path: str | os.PathLike,
                    source: str) -> tuple[Path, int]:
    """A ``path,label`` CSV of every image, the likely label in place of each probably
    wrong one (the given one beside it), for the user to review and train on. Paths are
    relative to the CSV's folder. Returns the CSV and how many labels changed."""
    from cnnkit.base.atomic import atomic_path

    target = Path(path)
    if any("#" in n and not os.path.exists(n) for n in coded.names[:1]):
        raise CnnkitError(f"{source} is a built-in set: its images are not files a CSV can "
                          "list. Write it out first (cnnkit data export NAME FOLDER) and "
                          "check the folder.")
    check_csv_name(path, source)
    fixed = {i.index: i.likely for i in check.wrong}
    base = target.resolve().parent
    with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "given_label", "changed"])
        for k, name in enumerate(coded.names):
            given = coded.classes[coded.labels[k]]
            rel = os.path.relpath(os.path.abspath(name), base)
            label = fixed.get(k, given)
            w.writerow([rel, label, given, "yes" if label != given else ""])
    return target, sum(1 for i in check.wrong if i.likely != i.given)
