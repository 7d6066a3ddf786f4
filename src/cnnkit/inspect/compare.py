"""``cnnkit compare``: one self-contained HTML page for several runs: their summaries,
their training curves overlaid, and their configs side by side with the differences
highlighted."""

from __future__ import annotations

import base64
import io
import json
import math
import os
from html import escape
from pathlib import Path
from typing import Any

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.atomic import write_text
from cnnkit.base.errors import CnnkitError
from cnnkit.data.seen import ALGORITHM, recorded
from cnnkit.inspect.figures import new_figure
from cnnkit.inspect.html import CSS
from cnnkit.inspect.runs import RunSummary, human_size, human_time, kept_label, summarize

EXTRA_CSS = """
td.diff { background: #fff3c4; font-weight: 600; }
tr.differs th { background: #ffe8a3; }
td.best { font-weight: 700; color: #0a6b2d; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
          margin-right: 6px; vertical-align: middle; }
"""
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
PANELS = (("train_loss", "training loss"), ("val_loss", "validation loss"),
          ("train_acc", "training accuracy"), ("val_acc", "validation accuracy"))
# options that say where a run wrote or how it printed, not how it trained
NOT_TRAINING = {"out", "name", "plots", "track"}


def _labels(runs: list[RunSummary]) -> list[str]:
    """Run names, with the parent folder where two runs share a name."""
    names = [r.name for r in runs]
    return [f"{Path(r.path).parent.name}/{r.name}" if names.count(r.name) > 1 else r.name
            for r in runs]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _panels(figure: str) -> tuple[tuple[str, str], ...]:
    """The four panels: losses, and accuracy (or multi-label runs' exact match)."""
    if figure == "acc":
        return PANELS
    return (*PANELS[:2], (f"train_{figure}", "training exact match"),
            (f"val_{figure}", "validation exact match"))


def _curves_png(histories: list[list[dict[str, str]]], labels: list[str],
                figure: str = "acc") -> str:
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(12, 7.5)
    axes = fig.subplots(2, 2)
    for ax, (key, title) in zip(axes.flat, _panels(figure)):
        drawn = False
        for i, (rows, label) in enumerate(zip(histories, labels)):
            xs = [_number(r.get("epoch")) for r in rows]
            ys = [_number(r.get(key)) for r in rows]
            if any(not math.isnan(y) for y in ys):
                ax.plot(xs, ys, "o-", ms=3, color=COLOURS[i % len(COLOURS)], label=label)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key.endswith("acc"):
            from matplotlib.ticker import PercentFormatter

            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _config_table(configs: list[dict[str, Any]], labels: list[str]) -> tuple[str, int]:
    """Options as rows, runs as columns; rows where runs differ come first and cells
    that differ from the first run are highlighted. Returns the HTML and how many rows
    differ."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    rows_diff, rows_same = [], []
    for key in keys:
        values = [_value(c.get(key)) for c in configs]
        differs = len(set(values)) > 1
        cells = "".join(
            f'<td class="diff">{escape(v)}</td>' if differs and v != values[0] and i
            else f"<td>{escape(v)}</td>" for i, v in enumerate(values))
        row = (f'<tr class="{"differs" if differs else "same"}"><th>{escape(key)}'
               f"</th>{cells}</tr>")
        (rows_diff if differs else rows_same).append(row)
    head = "<tr><th>option</th>" + "".join(f"<th>{escape(n)}</th>" for n in labels) + "</tr>"
    same = (f"<tr><td colspan={len(labels) + 1} class=note>{len(rows_same)} options are the "
            "same in every run:</td></tr>" if rows_same else "")
    return (f"<table><thead>{head}</thead><tbody>{''.join(rows_diff)}{same}"
            f"{''.join(rows_same)}</tbody></table>", len(rows_diff))


def _figure_name(runs: list[RunSummary]) -> str:
    """What the runs' headline figures are: accuracy, exact match (multi-label runs), or
    both where single- and multi-label runs are compared."""
    kinds = {r.figure for r in runs}
    return "acc" if kinds == {"acc"} else "exact" if kinds == {"exact"} else \
        "acc / exact"


# options that decide which images a run validates and tests on
SPLIT_OPTIONS = ("data", "seed", "val_fraction", "test_fraction", "per_class")


def held_out_apart(dirs: list[RunDir], configs: list[dict[str, Any]]) -> dict[str, str | None]:
    """Per held-out split ("test", "val"): why the runs' figures on it are no ranking
    (they were measured on other images), or None where every run used the same images.
    The runs' split.json lists decide where every run has one; built-in sets (none) are
    compared by the options that split them."""
    docs = []
    for d in dirs:
        try:
            docs.append(d.read_split())
        except CnnkitError:  # a damaged split.json: judged by the options instead
            docs.append(None)
    apart: dict[str, str | None] = {}
    for part in ("test", "val"):
        if all(doc is not None for doc in docs):
            present = [doc for doc in docs if doc is not None]
            sizes = ", ".join(f"{len(doc.get(part) or ()):,}" for doc in present)
            apart[part] = None if all(_same_images(present[0], doc, part)
                                      for doc in present[1:]) else (
                f"other files in each run's split.json: {sizes} images")
            continue
        apart[part] = None
        for key in SPLIT_OPTIONS:
            values = [c.get(key) for c in configs]
            if any(v != values[0] for v in values):
                shown = ", ".join("-" if v is None else str(v) for v in values)
                apart[part] = f"{key.replace('_', ' ')} differs: {shown}"
                break
    return apart


def _same_images(a: dict[str, Any], b: dict[str, Any], part: str) -> bool:
    """Whether two split.json documents list the same images in split ``part``: by the
    content hashes where both record every file's (runs on copies of one folder are the
    same images), else by path."""
    ha, hb = _hashes(a, part), _hashes(b, part)
    if ha is not None and hb is not None:
        return ha == hb
    return (sorted(str(row[0]) for row in a.get(part) or ())
            == sorted(str(row[0]) for row in b.get(part) or ()))


def _hashes(doc: dict[str, Any], part: str) -> list[str] | None:
    """The sorted content hashes split.json ``doc`` records for ``part``; None where it
    records none (written before it did) or not every file's."""
    kept = doc.get("hashes")
    if not isinstance(kept, dict) or kept.get("algorithm") != ALGORITHM:
        return None
    found = list(recorded(doc, (part,)).hashes.get(part, ()))
    if len(found) != len(doc.get(part) or ()) or not all(found):
        return None
    return sorted(found)


def _summary_table(runs: list[RunSummary], labels: list[str],
                   apart: dict[str, str | None] | None = None) -> str:
    """``apart``: :func:`held_out_apart`'s reasons; a split with one is not ranked."""
    def best_of(values: list[float | None], larger: bool) -> float | None:
        known = [v for v in values if v is not None]
        if len(set(known)) < 2:  # nothing to single out
            return None
        return max(known) if larger else min(known)

    # Accuracy and a multi-label run's exact match are not one scale: runs of both kinds
    # are shown side by side and not ranked.
    ranked = True if len({r.figure for r in runs}) == 1 else None
    figure = _figure_name(runs)
    columns = [
        ("data", [r.data for r in runs], None),
        ("model", [r.model for r in runs], None),
        ("mode", [r.mode for r in runs], None),
        ("epochs", [r.epochs_done for r in runs], None),
        ("kept model", [kept_label(r) for r in runs], None),
        (f"test {figure} (kept)", [r.test_acc for r in runs],
         None if (apart or {}).get("test") else ranked),
        (f"val {figure} (kept)", [r.val_acc for r in runs],
         None if (apart or {}).get("val") else ranked),
        ("time", [r.seconds for r in runs], False),
        ("size", [r.size_bytes for r in runs], False),
    ]
    head = "<tr><th>run</th>" + "".join(f"<th>{escape(c)}</th>" for c, _, _ in columns) + \
        "</tr>"
    body = []
    for i, label in enumerate(labels):
        cells = [f'<td><span class="swatch" style="background:{COLOURS[i % len(COLOURS)]}">'
                 f"</span>{escape(label)}</td>"]
        for name, values, larger in columns:
            v = values[i]
            best = best_of(values, larger) if larger is not None else None
            text = (f"{v:.2%}" if isinstance(v, float) and figure in name else
                    human_time(v) if name == "time" else human_size(v) if name == "size"
                    else "-" if v is None else str(v))
            cls = ' class="best"' if best is not None and v == best else ""
            cells.append(f"<td{cls}>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def compare_runs(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write the comparison page of ``paths`` (two or more run folders) to ``out``."""
    if len(paths) < 2:
        raise CnnkitError("cnnkit compare needs two or more run folders.")
    dirs = [RunDir.open(p) for p in paths]
    runs = [summarize(d.root) for d in dirs]
    labels = _labels(runs)
    configs = [{k: v for k, v in d.read_config().items() if k not in NOT_TRAINING}
               for d in dirs]
    histories = [d.read_metrics() for d in dirs]
    table, differing = _config_table(configs, labels)
    apart = held_out_apart(dirs, configs)
    unranked = "".join(
        f" {name} figures are not ranked: they were measured on other images ({why})."
        for name, why in (("Test", apart["test"]), ("Validation", apart["val"]))
        if why)
    kinds = {r.figure for r in runs}
    curves = _curves_png(histories, labels, kinds.pop() if len(kinds) == 1 else "acc")
    title = "cnnkit: " + " vs ".join(labels)
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{CSS}{EXTRA_CSS}</style></head><body><main>"
        f"<h1>Comparing {len(runs)} runs</h1>"
        f"<p class=sub>{escape(', '.join(r.path for r in runs))}</p>"
        f"<h2>Results</h2>{_summary_table(runs, labels, apart)}"
        "<p class=note>Accuracies (exact match for a multi-label run) are the kept model's "
        "(the run's model.safetensors): test on the run's own test split, validation of the "
        "epoch it kept (or its start). Best value per column in green; accuracy and exact "
        f"match are not ranked against each other.{escape(unranked)} Time: training and "
        "validation.</p>"
        "<h2>Training curves</h2>"
        f'<img class="plot" alt="training curves of every run, overlaid" '
        f'src="data:image/png;base64,{curves}">'
        f"<h2>Configs</h2><p class=note>{differing} option(s) differ; highlighted cells "
        f"differ from the first run ({escape(labels[0])}).</p>{table}"
        "</main></body></html>")
    path = Path(out)
    write_text(path, html)
    return path
