"""``cnnkit check --labels / --near``: the checks that need codes of the images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.base import log
from cnnkit.data.audit import Audit

if TYPE_CHECKING:
    from cnnkit.curate.codes import Coded

SHOWN = 10  # suspects listed in the text output (all are in the files)


def out_folder(data: str, out: str | None) -> Path:
    """``--out``, else ``./check-NAME`` for DATA."""
    if out:
        return Path(out)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data.rstrip("/\\")).stem or data).strip("-")
    return Path(f"check-{name or 'data'}")


def knowing_checks(result: Audit, data: str, *, labels: bool, near: bool, run: str | None,
                   folds: int, out: str | None, write_csv: str | None, text: bool) -> None:
    """Code the images once, then add the label and near-copy findings to ``result``."""
    from cnnkit.curate.codes import load_data, pretrained_codes, run_codes

    if run:
        coded = run_codes(run, data)
    else:
        parts, pre = load_data(data)
        coded = pretrained_codes(parts, pre)
    folder = out_folder(data, out)
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


def print_details(result: Audit) -> None:
    """The suspects' table and where the files are (text output, after the audit)."""
    from rich.table import Table

    near = result.stats.get("near_duplicates")
    if near and near["files"]:
        log.info(f"near-duplicates: {near['files']['csv']}, contact sheet "
                 f"{near['files']['sheet']}")
    found = result.stats.get("label_issues")
    if not found:
        return
    issues = found["issues"]
    if issues:
        table = Table(title=f"suspect labels, most suspect first ({found['probably_wrong']} "
                            f"probably wrong, {found['worth_a_look']} worth a look)")
        for col in ("#", "file", "verdict", "given", "likely", "p(likely)", "quality"):
            table.add_column(col, justify="right" if col in ("#", "p(likely)", "quality")
                             else "left")
        for r, i in enumerate(issues[:SHOWN], 1):
            table.add_row(str(r), log.quoted(i["file"]), i["verdict"], i["given"], i["likely"],
                          f"{i['p_likely']:.0%}", f"{i['quality']:.3f}")
        log.console().print(table)
        if len(issues) > SHOWN:
            log.info(f"... and {len(issues) - SHOWN} more in {found['files']['csv']}")
    files = found["files"]
    log.info(f"labels: {files['csv']}, {files['json']}, contact sheet {files['sheet']}")
    if "fixed_csv" in found:
        log.info(f"wrote {found['fixed_csv']}: every image, {found['changed']} with the "
                 "likely label in place of the given one (column given_label keeps it); "
                 f"review it, then train on it (cnnkit train {found['fixed_csv']})")
