"""The multi-label part of ``report.html``: mAP and the other figures, per-label scores
and precision-recall curves, label co-occurrence, and each label's top losses with the
Grad-CAM of that label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.inspect import multilabel_plots as mp
from cnnkit.inspect.html import _card, _img, _table
from cnnkit.tasks.multilabel_metrics import MultiLabelResult

LOSSES_PER_LABEL = 3


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def label_top_losses(model: nn.Module, card: Any, imageset: Any, result: MultiLabelResult,
                     per_label: int = LOSSES_PER_LABEL) -> list[list[mp.LabelLoss]]:
    """For the labels with the lowest AP (at most :data:`MAX_LOSS_LABELS`), the images
    whose answer for the label was worst, with Grad-CAM for the label."""
    from cnnkit.data.pipeline import eval_batch
    from cnnkit.inspect.figures import to_display
    from cnnkit.inspect.gradcam import grad_cam

    worst = result.top_losses(per_label)
    order = sorted(range(len(result.classes)),
                   key=lambda k: (result.per_label[k]["ap"] is None,
                                  result.per_label[k]["ap"] or 0.0))[:mp.MAX_LOSS_LABELS]
    pre = card.preprocess
    rows = []
    for k in sorted(order):
        name = result.classes[k]
        items = worst[name]
        if not items:
            continue
        idx = [it["index"] for it in items]
        x = eval_batch(imageset.images[torch.as_tensor(idx)].cpu(), pre,
                       imageset.crop_fraction)
        cam = grad_cam(model, x.to(_device_of(model)), [k] * len(idx),
                       to_probs=lambda z: card.task.scores(z).exp())
        rows.append([mp.LabelLoss(name, to_display(x[j], pre.mean, pre.std), cam.cams[j],
                                  it["truth"], it["probability"], it["loss"])
                     for j, it in enumerate(items)])
    return rows


def write_plots(model: nn.Module | None, card: Any, eval_set: Any, result: MultiLabelResult |
                None, metrics: dict[str, Any] | None, splits: Any, out: Path,
                eval_name: str, seed: int, top_losses: bool = True) -> dict[str, Path]:
    """The multi-label PNGs of a run folder's ``plots/``."""
    files: dict[str, Path] = {}
    if result is not None:
        curves = {}
        for k, name in enumerate(result.classes):
            precision, recall, _ = result.pr_curve(k)
            row = result.per_label[k]
            if len(precision):
                curves[name] = (precision, recall, row["ap"], row["support"])
        if curves:
            files["pr_curves"] = mp.plot_pr_curves(
                curves, out / "pr_curves.png",
                f"Precision-recall per label ({eval_name} set, mAP {result.map_macro:.4f})")
    if metrics is not None:
        files["cooccurrence"] = mp.plot_cooccurrence(
            metrics["cooccurrence"], metrics["classes"], out / "cooccurrence.png",
            f"Labels that occur together ({eval_name} set, {metrics['n']:,} images)")
        from cnnkit.inspect.plots import plot_per_class

        rows = [{"class": r["label"], "precision": r["precision"], "recall": r["recall"],
                 "f1": r["f1"], "support": r["support"], "predicted": r.get("predicted", 0)}
                for r in metrics["per_label"]]
        files["per_label"] = plot_per_class(
            rows, out / "per_label.png",
            f"Precision, recall and F1 per label at its threshold ({eval_name} set)")
    if splits is not None:
        files["samples"] = mp.plot_label_samples(splits.train.images, splits.train.labels,
                                                 card.classes, out / "samples.png", seed=seed)
    if model is not None and result is not None and eval_set is not None and top_losses:
        rows = label_top_losses(model, card, eval_set, result)
        files["top_losses"] = mp.plot_label_top_losses(
            rows, out / "top_losses.png",
            f"Top losses per label ({eval_name} set), each beside the label's Grad-CAM")
    return files


def sections(metrics: dict[str, Any] | None, files: dict[str, Path], eval_name: str) -> str:
    """The report's metrics, per-label, co-occurrence and top-loss sections."""
    if metrics is None:
        return "<h2 id=metrics>Final metrics</h2><p>No metrics were recorded.</p>"
    cards = [
        _card(f"{metrics['mAP']['macro']:.4f}", f"{eval_name} mAP (macro)"),
        _card(f"{metrics['mAP']['micro']:.4f}", "mAP (micro)"),
        _card(f"{metrics['exact_match']:.2%}", "exact match"),
        _card(f"{metrics['hamming_loss']:.4f}", "Hamming loss"),
        _card(f"{metrics['micro']['f1']:.4f}", "micro F1"),
        _card(f"{metrics['n']:,}", f"{eval_name} images"),
    ]
    if metrics.get("unlabelled"):
        cards.append(_card(f"{metrics['unlabelled']:,}", "of them with no label"))
    per_label = _table(
        ["label", "threshold", "precision", "recall", "F1", "AP", "images", "answered"],
        [[r["label"], f"{r['threshold']:.3f}", f"{r['precision']:.4f}", f"{r['recall']:.4f}",
          f"{r['f1']:.4f}", "-" if r["ap"] is None else f"{r['ap']:.4f}", r["support"],
          r["predicted"]] for r in metrics["per_label"]], {1, 2, 3, 4, 5, 6, 7})
    return "\n".join(p for p in (
        "<h2 id=metrics>Final metrics</h2>",
        f'<div class="cards">{"".join(cards)}</div>',
        "<p class=note>mAP ranks the images by each label's probability (macro: the mean "
        "of the labels' average precisions; micro: one over every image-label pair); "
        "exact match and Hamming loss count the answers at each label's threshold, chosen "
        "on the validation images for the best F1 and kept in <code>model.json</code> "
        "(<code>--threshold</code> overrides them).</p>",
        "<h2 id=per-label>Per-label scores and precision-recall curves</h2>",
        _img(files.get("pr_curves"), "precision-recall curve per label"),
        _img(files.get("per_label"), "precision, recall and F1 per label"),
        per_label,
        "<h2 id=cooccurrence>Label co-occurrence</h2>",
        "<p class=note>Of the images with the row's label, the share that also have the "
        "column's.</p>",
        _img(files.get("cooccurrence"), "label co-occurrence"),
        "<h2 id=losses>Top losses per label</h2>",
        "<p class=note>For the labels with the lowest AP, the images whose answer for the "
        "label was worst (yes: the image has the label; p: the model's probability), beside "
        "the Grad-CAM of the label (red: most important).</p>",
        _img(files.get("top_losses"), "top losses per label with Grad-CAM")
        or "<p>No top losses (the data could not be loaded).</p>",
    ) if p)
