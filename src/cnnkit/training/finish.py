"""After the last epoch: reload the kept model (best or last), test it, save its metrics."""

from __future__ import annotations

from torch import nn

from cnnkit.artifacts.modelfile import ModelCard, load_model
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.data.imageset import ImageSet
from cnnkit.runtime.inference import log_probs
from cnnkit.tasks.metrics import EvalResult, compute
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
    figures = [f"accuracy {result.accuracy:.2%}",
               *(f"top-{k} {v:.2%}" for k, v in result.top_k.items() if k > 1)]
    log.info(f"test: {' '.join(figures)} on {log.plural(result.n, 'image')} "
             f"(macro F1 {result.macro['f1']:.4f})")
    return model, card, result
