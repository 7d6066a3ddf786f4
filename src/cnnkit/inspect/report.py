"""Plots and ``report.html`` for a run folder, at the end of training or on demand.

``write_run_report`` takes what training already has in memory (the best model, the
data splits, the test metrics) so that the report costs seconds; given only a run
folder (``cnnkit report RUN``) it reloads them. The HTML embeds its images, so the one
file can be mailed or opened offline; the PNGs are also kept in ``plots/``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.atomic import write_text
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.tasks.metrics import EvalResult

REPORT_ADVICE = "restore it or delete it, then run `cnnkit report RUN` again"

TOP_LOSSES = 9


@dataclass(frozen=True)
class RunReport:
    """What :func:`write_run_report` wrote."""

    html: Path
    plots: dict[str, Path]
    eval_split: str  # which split the metrics, confusion matrix and top losses are from
    seconds: float


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _load_splits(config: dict[str, Any], pre: Any) -> Any:
    from cnnkit.data.sources import load_run_splits

    try:
        return load_run_splits(TrainConfig.from_dict(config), pre)
    except CnnkitError as exc:
        log.warn(f"the run's data cannot be loaded ({exc}); the report leaves out sample "
                 "images, class counts and top losses.")
        return None


def _evaluate(model: nn.Module, card: Any, imageset: Any) -> EvalResult:
    from cnnkit.runtime.inference import log_probs

    scores = log_probs(model, imageset, card.preprocess, _device_of(model), task=card.task)
    return card.task.evaluate(scores, imageset.labels, card.classes)


def top_losses(model: nn.Module, card: Any, imageset: Any, result: EvalResult,
               count: int = TOP_LOSSES) -> list[Any]:
    """The ``count`` misclassified images with the highest loss, with Grad-CAM."""
    from cnnkit.data.pipeline import eval_batch
    from cnnkit.inspect.figures import to_display
    from cnnkit.inspect.gradcam import grad_cam
    from cnnkit.inspect.plots import TopLoss

    labels = np.asarray(result.labels)
    p_true = result.probs[np.arange(len(labels)), labels]
    loss = -np.log(np.clip(p_true, 1e-12, 1.0))
    wrong = np.flatnonzero(result.predicted != labels)
    idx = wrong[np.argsort(-loss[wrong], kind="stable")][:count]
    if len(idx) == 0:
        return []
    pre = card.preprocess
    x = eval_batch(imageset.images[torch.as_tensor(idx)].cpu(), pre, imageset.crop_fraction)
    preds = result.predicted[idx]
    cam = grad_cam(model, x.to(_device_of(model)), [int(p) for p in preds])
    return [TopLoss(to_display(x[k], pre.mean, pre.std), cam.cams[k],
                    card.classes[int(labels[i])], card.classes[int(preds[k])],
                    float(p_true[i]), float(result.probs[i, preds[k]]), float(loss[i]),
                    int(i))
            for k, i in enumerate(idx)]


def write_run_report(run: RunDir | str | os.PathLike, *, model: nn.Module | None = None,
                     card: Any = None, splits: Any = None, test: EvalResult | None = None,
                     device: str = "cpu", top_loss_count: int = TOP_LOSSES) -> RunReport:
    """Write ``plots/*.png`` and ``report.html`` into a finished run folder.

    ``model``/``card`` default to the run's saved model, ``splits`` to the run's data
    loaded again, ``test`` to the model's metrics on the held-out test split (or on
    the validation split when the run has no test split).
    """
    from cnnkit.artifacts.modelfile import load_model
    from cnnkit.inspect import plots
    from cnnkit.inspect.html import render_report
    from cnnkit.inspect.summary import summary

    start = time.perf_counter()
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    config = run.read_config()
    rows = run.read_metrics()
    phases_path = run.root / "phases.json"
    phases = run.read_json(phases_path, REPORT_ADVICE) if phases_path.is_file() else None
    if model is None or card is None:
        from cnnkit.base.device import pick_device

        model, card = load_model(run.root, pick_device(device))
    if splits is None:
        splits = _load_splits(config, card.preprocess)
    eval_set, eval_name = None, "test"
    if splits is not None:
        eval_set = splits.test if splits.test is not None else splits.val
        eval_name = "test" if splits.test is not None else "validation"
    if test is None and eval_set is not None:
        test = _evaluate(model, card, eval_set)
    saved = _saved_metrics(run)
    out = run.plots_dir
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if rows:
        files["curves"] = plots.plot_curves(rows, config, out / "curves.png", phases,
                                            card.task.figure, card.task.figure_name)
    metrics = test.to_dict() if test is not None else saved
    multi = card.task.name == "multi-label"
    if multi:
        from cnnkit.inspect import multilabel_report

        files.update(multilabel_report.write_plots(
            model, card, eval_set, test, metrics, splits, out, eval_name,
            int(config.get("seed", 0)), top_losses=top_loss_count > 0))
    elif metrics is not None:
        n = metrics["n"]
        files["confusion"] = plots.plot_confusion(
            metrics["confusion_matrix"], metrics["classes"], out / "confusion_matrix.png",
            f"Confusion matrix on the {eval_name} set ({n:,} images, accuracy "
            f"{metrics['accuracy']:.2%})")
        files["per_class"] = plots.plot_per_class(
            metrics["per_class"], out / "per_class.png",
            f"Precision, recall and F1 per class ({eval_name} set)")
    if not multi and test is not None and test.n:
        confidence, correct = _confidence(test)
        files["confidence"] = plots.plot_confidence(
            confidence, correct, out / "confidence.png",
            f"How confident the model is on its {eval_name} images ({test.n:,}): choose "
            "`cnnkit predict --threshold P` from these")
    known = None
    if not multi and test is not None and test.n and eval_set is not None:
        from cnnkit.inspect.knowing import knowing, plot_knowing
        from cnnkit.runtime.exports import stats_beside

        known = knowing(model, card, eval_set, test.probs, np.asarray(test.labels),
                        stats_beside(card, run.root, say=False))
        if known is not None:
            files["knowing"] = plot_knowing(known, out / "calibration.png", eval_name)
    if not multi and splits is not None:
        files["samples"] = plots.plot_samples(splits.train.images, splits.train.labels,
                                              card.classes, out / "samples.png",
                                              seed=int(config.get("seed", 0)))
    if not multi and test is not None and eval_set is not None and top_loss_count > 0:
        items = top_losses(model, card, eval_set, test, top_loss_count)
        files["top_losses"] = plots.plot_top_losses(
            items, out / "top_losses.png",
            f"Top losses: the {len(items)} most confidently wrong {eval_name} images, each "
            "beside the Grad-CAM of the class it was taken for")
    pre = card.preprocess
    model_summary = summary(model, (pre.channels, pre.img_size, pre.img_size),
                            model_name=card.architecture.name)
    thresholds = None
    if not multi and test is not None and test.n:
        from cnnkit.tasks.threshold import coverage

        thresholds = coverage(*_confidence(test))
    sections = multilabel_report.sections(metrics, files, eval_name) if multi else None
    old = run.report_path.stat().st_size if run.report_path.is_file() else 0
    others = run.size_bytes() - old

    def render(total: int) -> str:
        return render_report(run, config, rows, card, metrics, eval_name, splits, files,
                             model_summary, phases, thresholds, folder_bytes=total,
                             knowing=known, sections=sections)

    html = render(others)
    html = render(others + len(html.encode()))  # the folder's size with this page in it

    write_text(run.report_path, html)
    return RunReport(run.report_path, files, eval_name, time.perf_counter() - start)


def _confidence(test: EvalResult) -> tuple[np.ndarray, np.ndarray]:
    """Each image's top probability and whether its top class is the true one."""
    return test.probs.max(1), np.asarray(test.predicted) == np.asarray(test.labels)


def _saved_metrics(run: RunDir) -> dict[str, Any] | None:
    if run.test_metrics_path.is_file():
        return run.read_json(run.test_metrics_path, REPORT_ADVICE)
    return None
