"""``cnnkit check DATA``: audit a data set before training; exit 0 if it can be trained on."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

import typer

from cnnkit.base.errors import CnnkitError
from cnnkit.cli.app import app

if TYPE_CHECKING:
    from cnnkit.data.audit import Audit
    from cnnkit.data.source import DataSource

MARKS = {"problem": "x", "warning": "!", "note": "-"}


@app.command("check")
def check(data: str = typer.Argument(..., help="Folder, CSV or built-in set."),
          near: bool = typer.Option(False, "--near",
                                    help="Also find near-copies (resized, re-encoded, "
                                         "cropped or brightened) by the images' codes and "
                                         "detail."),
          img_size: Optional[int] = typer.Option(
              None, help="The model's input size, to flag images far smaller "
                         "[default: the size `cnnkit train` would use]"),
          labels: bool = typer.Option(False, "--labels",
                                      help="Also find images whose label is probably wrong "
                                           "(out-of-fold probabilities, cleanlab)."),
          run: Optional[str] = typer.Option(None, "--run",
                                            help="With --labels/--near: codes from this run's "
                                                 "model [default: the pretrained "
                                                 "EfficientNet-Lite0]"),
          folds: int = typer.Option(5, help="With --labels: folds of the out-of-fold "
                                            "probabilities."),
          out: Optional[str] = typer.Option(None, help="With --labels/--near: folder for the "
                                                       "CSV, JSON and contact sheet "
                                                       "[default: ./check-NAME]"),
          write_csv: Optional[str] = typer.Option(
              None, "--write-csv", help="With --labels: write a relabelled 'path,label' CSV "
                                        "here for you to review (the data is not changed)."),
          fmt: str = typer.Option("text", "--format", help="text or json."),
          strict: bool = typer.Option(False, help="Exit 2 on warnings too, not only "
                                                  "on problems."),
          examples: int = typer.Option(5, help="File names shown per finding (text).")) -> None:
    """Audit DATA: counts, unreadable files, duplicates and leakage, sizes, imbalance.

    Exit 0 when the data can be trained on, 2 when it cannot (or, with --strict, when
    anything is worth fixing).
    """
    from cnnkit.base import log
    from cnnkit.data.audit import audit
    from cnnkit.data.sources import describe

    if fmt not in ("text", "json"):
        raise CnnkitError(f"--format must be text or json. Received: {fmt!r}")
    if examples < 0:
        raise CnnkitError(f"--examples is how many file names to show per finding (0 or "
                          f"more; --format json lists all). Received: {examples}")
    source = describe(data)
    size = img_size or _default_size(source)
    if write_csv and not labels:
        raise CnnkitError("--write-csv writes the labels --labels finds: add --labels.")
    if run and not (labels or near):
        raise CnnkitError("--run gives the codes --labels and --near use: add one of them.")
    if write_csv and source.kind == "builtin":
        raise CnnkitError(f"{data} is a built-in set: its images are not files a CSV can "
                          "list. Write it out first (cnnkit data export NAME FOLDER) and "
                          "check the folder.")
    if (labels or near) and _multilabel(source):
        flag = "--labels" if labels else "--near"
        raise CnnkitError(f"{data} is multi-label data (a set of labels per image); {flag} "
                          "takes one class per image. Run cnnkit check without it for the "
                          "audit.")
    if labels:
        from cnnkit.curate.labels import check_csv_name, check_fold_count

        check_fold_count(folds)
        if write_csv:
            check_csv_name(write_csv, data)
    result = audit(source, img_size=size, progress=fmt == "text")
    if (labels or near) and result.trainable:
        from cnnkit.cli.knowing import knowing_checks

        knowing_checks(result, data, labels=labels, near=near, run=run, folds=folds,
                       out=out, write_csv=write_csv)
    if fmt == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print(result, examples)
        if labels or near:
            from cnnkit.cli.knowing import print_details

            print_details(result)
    if not result.trainable or (strict and result.warnings):
        if fmt == "text" and result.trainable:
            log.info("--strict: exiting 2 because of the warnings above")
        raise typer.Exit(2)


def _multilabel(source: DataSource) -> bool:
    """Whether DATA gives each image a set of labels, from its listing (nothing decoded)."""
    if source.builtin is not None:
        return source.builtin.multilabel
    try:
        return any(listing.multilabel for listing in source.listings().values())
    except CnnkitError:  # the audit says what is wrong with the data
        return False


def _default_size(source: DataSource) -> int:
    """The input size `cnnkit train DATA` would use with its default model."""
    from cnnkit.training.input_choice import default_side

    try:
        return default_side(source)
    except CnnkitError:
        return 224


def _print(result: Audit, examples: int) -> None:
    from rich.table import Table

    from cnnkit.base import log

    kind = "labels (multi-label)" if result.multilabel else "classes"
    log.info(f"{result.data}: {result.kind}, {len(result.classes)} {kind}")
    if result.counts:
        table = Table()
        table.add_column("label" if result.multilabel else "class")
        splits = list(result.counts)
        for s in splits:
            table.add_column("images" if s == "all" else s, justify="right")
        for i, cls in enumerate(result.classes):
            table.add_row(log.quoted(cls), *(f"{result.counts[s][i]:,}" for s in splits))
        if result.multilabel:
            table.add_row("(no label)", *(f"{result.unlabelled.get(s, 0):,}" for s in splits),
                          style="dim")
            table.add_row("images", *(f"{result.images.get(s, 0):,}" for s in splits),
                          style="bold")
        else:
            table.add_row("total", *(f"{sum(result.counts[s]):,}" for s in splits),
                          style="bold")
        log.console().print(table)
    for f in sorted(result.findings, key=lambda f: ("problem", "warning", "note").index(f.level)):
        log.info(f"{MARKS[f.level]} {f.level}: {f.what}")
        for name in f.files[:examples]:
            log.info(f"    {log.quoted(name)}")
        if len(f.files) > examples:
            log.info(f"    ... and {len(f.files) - examples} more (--format json lists all)")
    log.info(f"verdict: {result.verdict}")
    advice = [f.advice for f in result.findings if f.advice and f.level != "note"]
    for line in dict.fromkeys(advice):
        log.info(f"  - {line}")
