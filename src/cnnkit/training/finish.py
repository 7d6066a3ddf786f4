"""After the last epoch: reload the kept model (best or last), test it, leave the results."""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnkit import log
from cnnkit.atomic import write_json
from cnnkit.data.imageset import ImageSet
from cnnkit.inference import log_probs
from cnnkit.metrics import EvalResult, compute
from cnnkit.modelfile import ModelCard, load_model
from cnnkit.rundir import RunDir
from cnnkit.training.recipe import Plan


def evaluate_test(plan: Plan, run: RunDir, test: ImageSet | None
                  ) -> tuple[nn.Module, ModelCard, EvalResult | None]:
    model, card = load_model(run.root, device=plan.device)
    if test is None:
        return model, card, None
    scores = log_probs(model, test, card.preprocess, plan.device, tta=plan.config.tta,
                       precision=plan.config.precision, channels_last=plan.channels_last)
    result = compute(scores, test.labels, card.classes)
    write_json(run.test_metrics_path, result.to_dict())
    tk = " ".join(f"top-{k} {v:.2%}" for k, v in result.top_k.items() if k > 1)
    log.info(f"test: accuracy {result.accuracy:.2%} {tk} on {result.n:,} images "
             f"(macro F1 {result.macro['f1']:.4f})")
    return model, card, result


def write_plots(run: RunDir, model: nn.Module, card: ModelCard, splits: Any,
                test: EvalResult | None) -> None:
    """Plots and report.html from what training has in memory (a few seconds).

    The run's model and metrics are already saved; a failure here is reported as a
    warning with the command that retries it, rather than losing the finished run.
    """
    from cnnkit.inspect.report import write_run_report

    try:
        report = write_run_report(run, model=model, card=card, splits=splits, test=test)
    except Exception as exc:
        log.warn(f"could not write the plots and report ({type(exc).__name__}: {exc}); "
                 f"retry with: cnnkit report {run.root}")
        return
    log.info(f"report: {report.html} ({len(report.plots)} plots in {report.seconds:.1f}s)")
