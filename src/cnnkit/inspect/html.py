"""The HTML of ``report.html``: one self-contained page, images embedded as base64.

Every value that comes from a run (class names, paths, config values) is escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from html import escape
from pathlib import Path
from typing import Any

from cnnkit._version import __version__
from cnnkit.artifacts.rundir import RunDir, human_size
from cnnkit.inspect.runs import Kept, kept_model
from cnnkit.inspect.summary import Summary
from cnnkit.tasks.threshold import Coverage

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0;
       color: #1d1d1f; background: #f6f7f9; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 1.7em; }
h2 { margin-top: 2.2em; border-bottom: 2px solid #e3e6ea; padding-bottom: 4px; }
.sub { color: #555; margin: 0 0 18px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: #f0f4fa; border-radius: 8px; padding: 10px 16px; min-width: 120px; }
.card b { display: block; font-size: 1.45em; }
.card span { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 10px 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e3e6ea; padding: 4px 10px; text-align: left; }
th { background: #f0f2f5; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; border-top: 2px solid #ccc; }
img.plot { max-width: 100%; border: 1px solid #e3e6ea; margin: 8px 0; }
code { background: #f0f2f5; padding: 1px 4px; border-radius: 3px; }
details summary { cursor: pointer; color: #245; margin: 8px 0; }
.note { color: #555; font-size: 0.92em; }
nav a { margin-right: 12px; }
"""


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<img class="plot" alt="{escape(alt)}" title="{escape(path.name)}" '
            f'src="data:image/png;base64,{data}">')


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None,
           total: list[Any] | None = None) -> str:
    numeric = numeric or set()
    cls = [' class="n"' if i in numeric else "" for i in range(len(header))]
    head = "".join(f"<th{cls[i]}>{escape(str(h))}</th>" for i, h in enumerate(header))
    body = []
    for row in rows + ([total] if total else []):
        cells = "".join(f"<td{cls[i]}>{escape(_fmt(v))}</td>" for i, v in enumerate(row))
        body.append(f'<tr{" class=total" if row is total else ""}>{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def _metrics_section(metrics: dict[str, Any] | None, eval_name: str,
                     rows: list[dict[str, Any]], kept: Kept) -> str:
    cards = []
    if metrics is not None:
        cards.append(_card(f"{metrics['accuracy']:.2%}", f"{eval_name} accuracy"))
        for k, v in (metrics.get("top_k_accuracy") or {}).items():
            if k != "1":
                cards.append(_card(f"{v:.2%}", f"top-{k} accuracy"))
        cards.append(_card(f"{metrics['macro']['f1']:.4f}", "macro F1"))
        cards.append(_card(f"{metrics['loss']:.4f}", f"{eval_name} loss"))
        cards.append(_card(f"{metrics['n']:,}", f"{eval_name} images"))
    which, epoch, val = kept
    if val is not None:
        cards.append(_card(f"{val:.2%}", "validation accuracy (the kept model: "
                           + ("its start)" if which == "start" else f"epoch {epoch})")))
    vals = [r for r in rows if _num(r.get("val_acc")) not in (None, "")]
    if vals:
        best = max(vals, key=lambda r: float(r["val_acc"]))
        if val is None or float(best["val_acc"]) > val:
            cards.append(_card(f"{float(best['val_acc']):.2%}", "best epoch's validation "
                               f"accuracy (epoch {best['epoch']}; not the kept model)"))
    if rows and rows[-1].get("elapsed_s"):
        cards.append(_card(f"{float(rows[-1]['elapsed_s']):.0f} s", "training time"))
    if not cards:
        return "<p>No metrics were recorded.</p>"
    return f'<div class="cards">{"".join(cards)}</div>'


def _class_counts(card: Any, splits: Any, metrics: dict[str, Any] | None) -> str:
    if splits is not None:
        parts = [(name, getattr(splits, name)) for name in ("train", "val", "test")
                 if getattr(splits, name) is not None]
        counts = {name: part.class_counts() for name, part in parts}
        header = ["class", *[{"val": "validation"}.get(n, n) for n, _ in parts]]
        rows = [[c, *[counts[n][i] for n, _ in parts]] for i, c in enumerate(card.classes)]
        total = ["total", *[sum(counts[n]) for n, _ in parts]]
        return _table(header, rows, set(range(1, len(header))), total)
    if metrics is not None:
        rows = [[r.get("class", r.get("label")), r["support"]]
                for r in metrics.get("per_class", metrics.get("per_label", []))]
        return ("<p class=note>The run's data could not be loaded; test images per class:</p>"
                + _table(["class", "test"], rows, {1}))
    return "<p class=note>The run's data could not be loaded.</p>"


def _summary_section(s: Summary) -> str:
    frozen = s.frozen_params > 0
    header = ["layer", "type", "output shape", "parameters", "= formula"] + \
        (["frozen"] if frozen else []) + ["mult-adds"]
    rows = []
    for r in s.rows:
        row: list[Any] = [r.name, r.type, "x".join(map(str, r.output_shape)), r.params,
                          r.formula]
        if frozen:
            row.append(r.frozen or "")
        row.append(r.macs or "")
        rows.append(row)
    total: list[Any] = ["total", "", "", s.total_params, ""] + \
        ([s.frozen_params] if frozen else []) + [s.total_macs]
    numeric = {3, 5, 6} if frozen else {3, 5}
    shape = "x".join(map(str, s.input_shape))
    table = _table(header, rows, numeric, total)
    intro = (f"<p>Input {escape(shape)} (channels x height x width). {escape(s.totals_text())}."
             " Parameters follow the textbook formulas: a convolution has (F x F x C + 1) x K, "
             "a dense layer (N<sub>in</sub> + 1) x N<sub>out</sub>, pooling none. "
             "Multiply-adds count convolutions and dense layers for one image.</p>")
    if len(s.rows) > 40:
        return intro + f"<details><summary>{len(s.rows)} layers</summary>{table}</details>"
    return intro + table


_MODE_WORDS = {
    "fine-tune": "Fine-tuning: first the new head trains with the pretrained base frozen (its "
                 "batch norm in eval mode), then the base is unfrozen (all of it or its top "
                 "blocks) at learning rates that shrink block by block towards the input.",
    "features": "Features: the frozen pretrained backbone ran once over the images; a new "
                "linear head (logistic regression, L-BFGS) was fitted to its pooled codes. "
                "The backbone never trained.",
    "scratch": "From scratch: every parameter trained from random initial weights.",
}


def _phases_section(phases: list[dict[str, Any]] | None) -> str:
    if not phases:
        return ""
    mode = phases[0].get("mode", "")
    rows = []
    for p in phases:
        scales = p.get("lr_scales") or [1.0, 1.0]
        lr = p.get("lr")
        lr_text = "-" if lr is None else (f"{lr:.3g}" if scales[0] == scales[-1] else
                                          f"{lr * scales[0]:.3g} .. {lr:.3g}")
        rows.append([p.get("name"), p.get("epochs"), lr_text, f"{p.get('trainable_params'):,}",
                     f"{p.get('frozen_params'):,}", p.get("frozen"),
                     p.get("batch_norm", "-")])
    extra = ""
    if mode == "features" and "extract_s" in phases[0]:
        extra = (f" Feature size {phases[0].get('feature_dim')}; extraction "
                 + ("came from the cache." if phases[0].get("features_cached")
                    else f"took {phases[0]['extract_s']:.1f} s."))
    return (f"<h2 id=phases>Mode and phases: {escape(str(mode))}</h2>"
            f"<p>{escape(_MODE_WORDS.get(mode, ''))}{escape(extra)}</p>"
            + _table(["phase", "epochs", "peak learning rate", "trainable parameters",
                      "frozen parameters", "frozen", "batch norm"], rows, {1, 2, 3, 4}))


def render_report(run: RunDir, config: dict[str, Any], rows: list[dict[str, Any]], card: Any,
                  metrics: dict[str, Any] | None, eval_name: str, splits: Any,
                  files: dict[str, Path], model_summary: Summary,
                  phases: list[dict[str, Any]] | None,
                  thresholds: list[Coverage] | None = None,
                  folder_bytes: int | None = None, knowing: Any = None,
                  sections: str | None = None) -> str:
    """The page. ``sections``: a multi-label run's metrics, per-label, co-occurrence and
    top-loss sections (:mod:`cnnkit.inspect.multilabel_report`), in place of the
    single-label metrics, confusion, confidence and top-loss sections."""
    name = run.root.name
    kept = kept_model(run, config, rows)
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    pre = card.preprocess
    sub = (f"{config.get('model')} on {config.get('data')} · {config.get('mode')} · "
           f"{len(rows)} epoch(s) · input {pre.img_size}x{pre.img_size}x{pre.channels} · "
           f"{len(card.classes)} classes · device {config.get('device')}")
    multi = sections is not None
    per_class = ""
    if metrics is not None and not multi:
        from cnnkit.tasks.metrics import class_cells

        per_class = _table(["class", "precision", "recall", "F1", "support"],
                           [[r["class"], *class_cells(r), r["support"]]
                            for r in metrics["per_class"]], {1, 2, 3, 4})
    fig = card.task.figure
    epochs_table = _table(
        ["epoch", "phase", "train loss", f"train {fig}", "val loss", f"val {fig}", "seconds"],
        [[r.get("epoch"), r.get("phase"), *(_num(r.get(k)) for k in
          ("train_loss", f"train_{fig}", "val_loss", f"val_{fig}", "train_time_s"))]
         for r in rows], {0, 2, 3, 4, 5, 6}) if rows else ""
    config_table = _table(["option", "value"], [[k, _fmt(v)] for k, v in config.items()])
    middle = ((("per-label", "per-label scores"), ("cooccurrence", "co-occurrence"))
              if multi else (("confusion", "confusion matrix"), ("confidence", "confidence")))
    nav = " ".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("metrics", "metrics"), ("curves", "curves"), ("data", "data"), *middle,
        *((("calibration", "calibration and unknown"),) if knowing is not None else ()),
        ("losses", "top losses"), ("model", "model"),
        ("config", "config")))
    parts = [
        f"<h1>Run {escape(name)}</h1>",
        f'<p class="sub">{escape(sub)}<br>report written {escape(when)} by cnnkit '
        f"{escape(__version__)} · <code>{escape(str(run.root))}</code></p>",
        f"<nav>{nav}</nav>",
        _init_note(config),
        sections if multi else
        f"<h2 id=metrics>Final metrics</h2>"
        f"{_metrics_section(metrics, eval_name, rows, kept)}",
        f"<p class=note>Metrics of {_kept(config, rows, kept)} on the held-out "
        f"{escape(eval_name)} set.</p>",
        _phases_section(phases),
        "<h2 id=curves>Training curves</h2>",
        _img(files.get("curves"), "training curves"),
        f"<details><summary>per-epoch numbers</summary>{epochs_table}</details>",
        "<h2 id=data>Data</h2>",
        f"<p>Source: <code>{escape(str(config.get('data')))}</code>; augmentation "
        f"<code>{escape(str(config.get('augment')))}</code>. Images per class and split:</p>",
        _class_counts(card, splits, metrics),
        _img(files.get("samples"), "sample training images"),
        _map_note(run),
        *(() if multi else (
            "<h2 id=confusion>Confusion matrix and per-class scores</h2>",
            "<p class=note>Rows are the true classes, columns the predicted ones; the "
            "diagonal holds the correct predictions.</p>",
            _img(files.get("confusion"), "confusion matrix"),
            _img(files.get("per_class"), "precision, recall and F1 per class"),
            per_class,
            _confidence_section(files.get("confidence"), thresholds, eval_name),
            _knowing_section(files.get("knowing"), knowing, eval_name),
            "<h2 id=losses>Top losses</h2>",
            "<p class=note>The images the model got most confidently wrong. Beside each, "
            "Grad-CAM shows where the model looked when it chose the wrong class (red: most "
            "important).</p>",
            _img(files.get("top_losses"), "top losses with Grad-CAM") or
            "<p>No top losses (no misclassified images, or the data could not be "
            "loaded).</p>")),
        f"<h2 id=model>Model: {escape(model_summary.model_name)}</h2>",
        _summary_section(model_summary),
        f"<h2 id=config>Configuration</h2>{config_table}",
        "<p class=note>Files: <code>model.safetensors</code> + <code>model.json</code>, "
        "<code>metrics.csv</code>, <code>config.json</code>, <code>plots/</code>"
        f"{_sizes(run, folder_bytes)}. Regenerate this page with "
        f"<code>cnnkit report {escape(str(run.root))}</code>.</p>",
    ]
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>cnnkit run {escape(name)}</title><style>{CSS}</style></head>"
            f"<body><main>\n{body}\n</main></body></html>\n")


def _knowing_section(plot: Path | None, k: Any, eval_name: str) -> str:
    """Calibration (the temperature, ECE before and after) and the unknown rule."""
    if k is None:
        return ""
    text = (f"<p class=note>At the end of training a temperature ({k.temperature:.3g}) was "
            f"fitted on the {k.fitted_on:,} validation images: it divides the logits before "
            "the softmax, so that a printed probability means what it says (of the images "
            "shown 90%, about 90% are right). It never changes the predicted class. On the "
            f"{escape(eval_name)} images, which it never saw, the expected calibration error "
            f"went from {k.ece_before:.3f} to {k.ece_after:.3f}.</p>")
    if k.scores is not None:
        reads = ("the energy of the logits (-logsumexp: low for images like the training "
                 "images)")
        if k.reads != "energy":
            reads += (" and the distance of the image's penultimate features to the nearest "
                      "class mean (Mahalanobis, on statistics of the training images): each "
                      "as the share of validation images less strange, the larger kept")
        text += ("<p class=note>Images unlike every class are answered <code>unknown</code>"
                 " (with their <code>unknown_score</code>: the share of known images less "
                 "strange) by <code>cnnkit predict</code>, the Python API and the server. The "
                 f"rule reads {reads}, and answers unknown above the line that keeps "
                 f"{k.kept:.0%} of the validation images, chosen there (never on the "
                 "training images).</p>")
    rows = k.rows()
    return ("<h2 id=calibration>Calibration and unknown inputs</h2>" + text
            + _img(plot, "reliability before and after calibration; unknown scores against "
                         "the rule's line")
            + (_table(["images", "count", "answered unknown", "accuracy of the answered",
                       "accuracy of the unknown"], rows, {1, 2, 3, 4}) if rows else ""))


def _map_note(run: RunDir) -> str:
    """A link to the map of the data (``cnnkit data map RUN`` draws it)."""
    made = (run.root / "datamap.html").is_file()
    return ('<p><a href="datamap.html">Map of the data</a>: the images in 2-D by this '
            "model's codes, suspected label errors, outliers and near-duplicates marked"
            + ("" if made else f" (not drawn yet: <code>cnnkit data map "
                                f"{escape(str(run.root))}</code>)") + ".</p>")


def _confidence_section(plot: Path | None, thresholds: list[Coverage] | None,
                        eval_name: str) -> str:
    if not thresholds:
        return ""
    rows = [[f"{c.threshold:g}", f"{c.answered:.1%}", f"{c.count:,}",
             "-" if math.isnan(c.accuracy) else f"{c.accuracy:.2%}"] for c in thresholds]
    return ("<h2 id=confidence>Confidence and --threshold</h2>"
            "<p class=note>A classifier names one of its classes even for an image of none "
            "of them. <code>cnnkit predict RUN IMAGES --threshold P</code> (or "
            "<code>predict(..., threshold=P)</code>) answers <code>unknown</code> when the "
            f"top probability is below P. On the {escape(eval_name)} images: the share "
            "that would still get an answer at each P, and how often that answer is "
            "right. Images of unknown kinds are not among them: try a few to see how sure "
            "the model is about them.</p>"
            + _img(plot, "confidence histogram and reliability diagram")
            + _table(["threshold P", "answered", "images answered", "accuracy of answers"],
                     rows, {0, 1, 2, 3}))


def _init_note(config: dict[str, Any]) -> str:
    first = config.get("init_from")
    if not first:
        return ""
    usual = "ImageNet" if config.get("mode") == "fine-tune" else "random"
    return (f"<p>Started from the weights of the run <code>{escape(str(first))}</code> "
            f"(<code>--init-from</code>), not from {usual} weights: its report holds the "
            "first step.</p>")


def _sizes(run: RunDir, folder_bytes: int | None) -> str:
    """How large the run folder is, and what of it is the model and the training state."""
    if folder_bytes is None:
        return ""
    parts = []
    if run.model_path.is_file():
        parts.append(f"model {human_size(run.model_path.stat().st_size)}")
    if run.checkpoint_path.is_file():
        parts.append(f"training state for --resume "
                     f"{human_size(run.checkpoint_path.stat().st_size)}")
    detail = f" ({', '.join(parts)})" if parts else ""
    return escape(f"; the run folder holds {human_size(folder_bytes)}{detail}")


def _num(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _kept(config: dict[str, Any], rows: list[dict[str, Any]], kept: Kept) -> str:
    """Which epoch's model the run kept (``--keep``, resolved when training started, or
    its trained start when training did not beat it)."""
    if config.get("mode") == "features":
        return "the fitted head"
    if kept[0] == "start":
        return "the starting weights (training did not beat them on validation)"
    if config.get("keep") == "last" or not any(r.get("val_acc") not in (None, "") for r in rows):
        return "the last epoch's model"
    return "the best epoch's model (by validation accuracy)"
