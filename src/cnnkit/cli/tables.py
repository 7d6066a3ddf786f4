"""Rich tables for metrics and predictions."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnnkit.base import log
from cnnkit.runtime.predict import Prediction

if TYPE_CHECKING:
    from cnnkit.tasks.metrics import EvalResult
    from cnnkit.tasks.multi_label import LabelSet
    from cnnkit.tasks.multilabel_metrics import MultiLabelResult


def print_eval(result: EvalResult | MultiLabelResult) -> None:
    """A result's headline numbers and per-class (per-label) table."""
    if hasattr(result, "map_macro"):
        _print_multilabel_eval(result)
        return
    from cnnkit.tasks.metrics import class_cells

    con = log.console()
    tops = "  ".join(f"top-{k}: {v:.2%}" for k, v in result.top_k.items())
    con.print(f"{result.n:,} images   accuracy: {result.accuracy:.2%}   {tops}   "
              f"loss: {result.loss:.4f}", highlight=False)
    table = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in result.per_class:
        table.add_row(escape(row["class"]), *class_cells(row), str(row["support"]))
    for name, avg in (("macro avg", result.macro), ("weighted avg", result.weighted)):
        table.add_row(name, f"{avg['precision']:.4f}", f"{avg['recall']:.4f}",
                      f"{avg['f1']:.4f}", str(result.n), style="bold")
    con.print(table)
    absent = [row["class"] for row in result.per_class if not row["support"]]
    if absent and result.n:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5
                                         else "")
        log.info(f"No image of {shown} in this data: its recall is undefined ('-') and the "
                 "macro average leaves out a class with no image and no answer.")
    cm = Table(title="confusion matrix (rows: true class, columns: predicted class number)",
               title_justify="left")
    cm.add_column("true class")
    for i in range(len(result.classes)):
        cm.add_column(str(i), justify="right")
    for i, (name, row) in enumerate(zip(result.classes, result.confusion)):
        cm.add_row(f"{i} {escape(name)}", *(f"[bold]{v}[/]" if j == i else str(v)
                                    for j, v in enumerate(row)))
    con.print(cm)


def print_predictions(preds: list[Prediction], threshold: float | None = None, *,
                      errors: dict[str, str] | None = None,
                      order: list[str] | None = None) -> None:
    """One row per image; with a threshold or the model's unknown rule, a first column
    says the answer (a class or ``unknown``), and with the rule the next one the unknown
    score; ``errors`` (path -> why) get a row of their own, where ``order`` (every
    path, in input order) puts them. A path is never cut: where the table would not fit
    the terminal, and where stdout is not a terminal, each image is one plain
    tab-separated line."""
    con = log.console()
    k = len(preds[0].top)
    rule = any(getattr(p, "unknown_score", None) is not None for p in preds)
    answer = threshold is not None or rule
    what = f"answer (p >= {threshold:g})" if threshold is not None else "answer"
    heads = ["path"] + ([what] if answer else []) + (["unknown score"] if rule else []) \
        + [f"top-{i}" if k > 1 else "class" for i in range(1, k + 1)]
    by_path = {p.source: [log.quoted(p.source)] + ([p.label] if answer else [])
               + ([_score(p)] if rule else [])
               + [f"{c} {_pct(pr)}" for c, pr in p.top] for p in preds}
    for path, why in (errors or {}).items():
        by_path[path] = [log.quoted(path), f"error: {log.cut(why, 200)}"] + \
            [""] * (len(heads) - 2)
    rows = [by_path[path] for path in (order or [p.source for p in preds])]
    _print_rows(con, heads, rows)
    unknown = sum(p.unknown for p in preds)
    if rule:
        unlike = sum(bool(getattr(p, "unlike", False)) for p in preds)
        below = f"; {unknown - unlike} below {threshold:g}" if threshold is not None else ""
        log.info(f"{unknown} of {len(preds)} image(s) unknown ({unlike} unlike every class "
                 f"the model knows{below}).")
    elif threshold is not None:
        log.info(f"{unknown} of {len(preds)} image(s) below {threshold:g}: unknown.")


def _score(p: Prediction) -> str:
    """The unknown score as a share: how many known images are less strange."""
    s = getattr(p, "unknown_score", None)
    return "-" if s is None else f"{s:.3f}"


def _print_multilabel_eval(result: MultiLabelResult) -> None:
    con = log.console()
    none = f" ({result.unlabelled:,} with no label)" if result.unlabelled else ""
    con.print(f"{result.n:,} images{none}   mAP: {result.map_macro:.4f} (micro "
              f"{result.map_micro:.4f})   exact match: {result.exact_match:.2%}   Hamming "
              f"loss: {result.hamming_loss:.4f}   loss: {result.loss:.4f}", highlight=False)
    table = Table(title="per label (answers at each label's threshold)", title_justify="left")
    for col in ("label", "threshold", "precision", "recall", "f1", "AP", "support",
                "answered"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for row in result.per_label:
        table.add_row(escape(row["label"]), f"{row['threshold']:.3f}",
                      f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                      "-" if row["ap"] is None else f"{row['ap']:.4f}", str(row["support"]),
                      str(row["predicted"]))
    for name, avg, ap in (("micro avg", result.micro, result.map_micro),
                          ("macro avg", result.macro, result.map_macro)):
        table.add_row(name, "", f"{avg['precision']:.4f}", f"{avg['recall']:.4f}",
                      f"{avg['f1']:.4f}", f"{ap:.4f}", "", "", style="bold")
    con.print(table)


def print_label_sets(sets: list[LabelSet], threshold: float | None = None, *,
                     errors: dict[str, str] | None = None,
                     order: list[str] | None = None) -> None:
    """One row per image: its labels with their probabilities (at each label's threshold,
    or at ``threshold`` for all), and the top labels whether answered or not; ``errors``
    and ``order`` as :func:`print_predictions` has them. Plain tab-separated lines where
    the table would not fit or stdout is not a terminal."""
    con = log.console()
    cut = f"p >= {threshold:g}" if threshold is not None else "at each label's threshold"
    heads = ["path", f"labels ({cut})", "top"]
    by_path = {s.source: [log.quoted(s.source),
                          ", ".join(f"{c} {_pct(p)}" for c, p in s.labels) or "-",
                          ", ".join(f"{c} {_pct(p)}" for c, p in s.top)] for s in sets}
    for path, why in (errors or {}).items():
        by_path[path] = [log.quoted(path), f"error: {log.cut(why, 200)}", ""]
    rows = [by_path[path] for path in (order or [s.source for s in sets])]
    _print_rows(con, heads, rows)
    empty = sum(not s.labels for s in sets)
    if empty:
        log.info(f"{empty} of {len(sets)} image(s) have no label at or above the threshold.")


def _pct(p: float) -> str:
    return log.percent(p)


def _print_rows(con: Console, heads: list[str], rows: list[list[str]]) -> None:
    """A table with the first column never cut where it fits the terminal; otherwise (or
    when stdout is not a terminal) plain tab-separated lines, for scripts and pipes."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    if con.is_terminal and sum(widths) + 3 * len(widths) + 1 <= con.width:
        table = Table()
        for i, head in enumerate(heads):
            table.add_column(head, no_wrap=True, min_width=widths[i] if i == 0 else None)
        for row in rows:
            table.add_row(*(escape(v) for v in row))
        con.print(table)
        return
    print("\t".join(heads))
    for row in rows:
        print("\t".join(row))
    sys.stdout.flush()
