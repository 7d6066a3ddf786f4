"""Findings that need codes of the images, added to a data audit: labels that are
probably wrong (``cnnkit check --labels``) and near-identical images (``--near``).
The command line and the studio's check both add them this way."""

from __future__ import annotations

from pathlib import Path

from cnnkit.curate.codes import Coded, load_data, pretrained_codes, run_codes
from cnnkit.data.audit import Audit


def add_findings(result: Audit, data: str, *, labels: bool, near: bool, folder: Path,
                 run: str | None = None, folds: int = 5, write_csv: str | None = None) -> None:
    """Code DATA's images once (by the pretrained network, or by ``run``'s model), then
    add the label and near-copy findings to ``result``; their files go to ``folder``."""
    if run:
        coded = run_codes(run, data)
    else:
        parts, pre = load_data(data)
        coded = pretrained_codes(parts, pre)
    if labels:
        _labels(result, coded, data, folds, folder, write_csv)
    if near:
        _near(result, coded, folder)


def _labels(result: Audit, coded: Coded, data: str, folds: int, folder: Path,
            write_csv: str | None) -> None:
    from cnnkit.curate.labels import find_wrong_labels, write_fixed_csv, write_label_files

    check = find_wrong_labels(coded, folds=folds)
    files = write_label_files(check, coded, folder)
    result.stats["label_issues"] = {**check.to_dict(),
                                    "files": {k: str(v) for k, v in files.items()}}
    wrong = check.wrong
    look = [] if check.unreliable else [i for i in check.issues if i not in wrong]
    how = (f"out-of-fold probabilities from {check.by}, {check.folds} folds; "
           f"{check.accuracy:.1%} of labels agree with them")
    if check.unreliable:
        result.add("warning", f"labels not judged: {check.unreliable}",
                   advice="Check the labels with the pretrained network's codes (drop --run) "
                          "or with a run that has learned the classes.")
    elif wrong:
        result.add("warning", f"{len(wrong)} of {check.images:,} image(s) probably carry the "
                   f"wrong label ({how})",
                   [f"{i.name}: {i.given} -> {i.likely} ({i.p_likely:.0%})" for i in wrong],
                   f"Look at {files['sheet']} and fix the labels (--write-csv FIXED.csv "
                   "writes a relabelled CSV to review).")
    else:
        result.add("note", f"no label of {check.images:,} images looks wrong ({how})")
    if look:
        result.add("note", f"{len(look)} more image(s) are worth a look: their label is "
                   "unlikely but may be right (an ambiguous image)",
                   [f"{i.name}: {i.given} or {i.likely}?" for i in look])
    if write_csv:
        path, changed = write_fixed_csv(check, coded, write_csv, data)
        result.stats["label_issues"].update(fixed_csv=str(path), changed=changed)


def _near(result: Audit, coded: Coded, folder: Path) -> None:
    from cnnkit.curate.near import MATCH, near_duplicates, write_near_files

    pairs = near_duplicates(coded)
    files = write_near_files(pairs, coded, folder) if pairs else {}
    rows = [p.to_dict(coded) for p in pairs]
    labels = [r for r in rows if r["label_a"] != r["label_b"]]
    splits = [r for r in rows if r["split_a"] != r["split_b"]]
    within = [r for r in rows if r["label_a"] == r["label_b"] and r["split_a"] == r["split_b"]]
    result.stats["near_duplicates"] = {
        "pairs": rows, "codes": coded.by, "match": MATCH, "across_classes": len(labels),
        "across_splits": len(splits), "within_class": len(within),
        "files": {k: str(v) for k, v in files.items()}}

    def names(group: list[dict[str, str]]) -> list[str]:
        return [f"{r['a']} ({r['label_a']}, {r['split_a']}) ~ {r['b']} ({r['label_b']}, "
                f"{r['split_b']})" for r in group]

    look = f"Look at {files['sheet']} and " if files else ""
    if splits:
        result.add("warning", f"{len(splits)} pair(s) of near-identical images (resized, "
                   "re-encoded, cropped or brightened copies) straddle train/val/test: the "
                   "test score is inflated (leakage)", names(splits),
                   f"{look}delete one of each pair.")
    if labels:
        result.add("warning", f"{len(labels)} pair(s) of near-identical images carry "
                   "different labels: one of each is wrong", names(labels),
                   f"{look}keep one copy under its right label.")
    if within:
        presplit = "train" in result.counts
        tail = ("" if presplit else ": a random split can put one copy in training and "
                "the other in the test set, inflating the test score")
        result.add("note" if presplit else "warning",
                   f"{len(within)} pair(s) of near-identical images within a class{tail}",
                   names(within), f"{look}delete the extra copies.")
    if not pairs:
        result.add("note", f"no near-identical images (codes from {coded.by}, then their "
                   "detail compared)")
