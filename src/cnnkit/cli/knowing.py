"""``cnnkit check --labels / --near``: the checks that need codes of the images."""

from __future__ import annotations

import re
from pathlib import Path

from cnnkit.base import log
from cnnkit.data.audit import Audit

SHOWN = 10  # suspects listed in the text output (all are in the files)


def out_folder(data: str, out: str | None) -> Path:
    """``--out``, else ``./check-NAME`` for DATA."""
    if out:
        return Path(out)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data.rstrip("/\\")).stem or data).strip("-")
    return Path(f"check-{name or 'data'}")


def knowing_checks(result: Audit, data: str, *, labels: bool, near: bool, run: str | None,
                   folds: int, out: str | None, write_csv: str | None) -> None:
    """Add the label and near-copy findings to ``result``, their files in ``--out``."""
    from cnnkit.curate.findings import add_findings

    add_findings(result, data, labels=labels, near=near, folder=out_folder(data, out),
                 run=run, folds=folds, write_csv=write_csv)


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
