"""After the last epoch: reload the kept model (best or last), let the task fit its
post-processing on the validation split (calibration, the unknown rule: kept in the model
card), then test it and save its metrics."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from cnnkit.artifacts.modelfile import ModelCard, load_model, update_card
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.data.imageset import ImageSet
from cnnkit.runtime.inference import log_probs
from cnnkit.tasks.base import Result
from cnnkit.training.calibrate import fit_on_validation
from cnnkit.training.recipe import Plan


def evaluate_test(plan: Plan, run: RunDir, test: ImageSet | None,
                  val: ImageSet | None = None, train: ImageSet | None = None
                  ) -> tuple[nn.Module, ModelCard, Result | None]:
    model, card = load_model(run.root, device=plan.device)
    cfg = plan.config
    # Fitted on the images alone, not on --tta's flipped pairs: every way of answering reads
    # single images unless asked (predict's default, the server, the page, Ray), and the
    # merged pair's energies are less spread, so its rule would flag more than it keeps.
    task = fit_on_validation(card.task, model, val, card.preprocess, plan.device, tta=False,
                             precision=cfg.precision, channels_last=plan.channels_last,
                             train=train, weights=run.model_path,
                             architecture=card.architecture.to_dict())
    if task != card.task:
        card = replace(card, task=task)
        update_card(run.root, card)
    if test is None:
        return model, card, None
    task = card.task
    scores = log_probs(model, test, card.preprocess, plan.device, task=task,
                       tta=plan.config.tta, precision=plan.config.precision,
                       channels_last=plan.channels_last)
    result = task.evaluate(scores, test.labels, card.classes)
    write_json(run.test_metrics_path, result.to_dict())
    how = f" (flip TTA: cnnkit evaluate {run.root} --tta)" if plan.config.tta else ""
    log.info(f"test{how}: {task.summary(result)}")
    return model, card, result
