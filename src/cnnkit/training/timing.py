"""Timing a few real steps of a run's model on this machine, in seconds per image: a
training step of a phase (the loop's own :class:`~cnnkit.training.step.TrainStep` on the
loop's batches), an evaluation pass (as validation and testing run) and the features
mode's pass. :func:`cnnkit.training.estimate.measure` takes them on a copy of the model;
the plan's images, or :func:`synthetic` ones of its size (a step costs the same whatever
the pixels hold).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from cnnkit.data.imageset import ImageSet
from cnnkit.data.loader import BatchLoader
from cnnkit.runtime.inference import chunk_size, log_probs
from cnnkit.training.features import extract
from cnnkit.training.recipe import Plan
from cnnkit.training.step import TrainStep
from cnnkit.training.transfer import Phase

STEP_S = 0.5  # a timed step: a whole batch, or as many images as take about this long
TIMED_S = 1.0  # time steps (after one to warm up) until this much has passed ...
MAX_STEPS = 6  # ... or this many steps
FEATURE_IMAGES = 8  # the features mode's pass on its graph is timed on this many images


def synthetic(plan: Plan, classes: int, n: int = 256) -> ImageSet:
    """Made-up uint8 images stored as the plan stores its data (at the decode size)."""
    pre = plan.pre
    side = pre.decode_size
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, pre.channels, side, side), dtype=torch.uint8,
                           generator=gen)
    labels = torch.arange(n) % max(classes, 1)
    return ImageSet(images, labels, tuple(str(c) for c in range(max(classes, 1))),
                    crop_fraction=pre.img_size / side)


def train_rate(plan: Plan, model: nn.Module, phase: Phase, data: ImageSet
               ) -> tuple[float, int]:
    """Seconds per image of ``phase``'s steps: one step to warm up, then steps sized to
    take about STEP_S (whole batches when they are quicker), through the loop's own
    step (:class:`~cnnkit.training.step.TrainStep`)."""
    batches = _batches(plan, data)
    batch = max(1, plan.config.batch_size // plan.cluster.world)
    train = TrainStep(plan, model, phase)
    train.train()
    chunk = min(batch, train.chunk)

    def step(k: int) -> float:
        x, y = batches(k)
        start = time.perf_counter()
        train(x, y)
        _sync(plan.device)
        return time.perf_counter() - start

    first = min(batch, chunk)
    per_image = step(first) / first  # warm-up: the slowest step, a first guess
    size = _step_size(per_image, batch, chunk)
    spent, images, n = 0.0, 0, 0
    while n == 0 or (spent < TIMED_S and n < MAX_STEPS):
        spent += step(size)
        images += size
        n += 1
    train.optimizer.zero_grad(set_to_none=True)
    return spent / images, n


def _step_size(per_image: float, batch: int, chunk: int) -> int:
    """Images in a timed step: the batch, or whole chunks taking about STEP_S."""
    if per_image * batch <= STEP_S:
        return batch
    return max(chunk, min(batch, int(STEP_S / per_image) // chunk * chunk))


def _batches(plan: Plan, data: ImageSet
             ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """Augmented training batches of any size drawn from ``data``, as the loop makes
    them (the loop's loader, the run's augmentation)."""
    gen = torch.Generator().manual_seed(plan.config.seed + 7)

    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(data), (k,), generator=gen)
        part = data.subset(idx)
        loader = BatchLoader(part, plan.pre, k, plan.device, train=True, augment=plan.augment,
                             generator=gen, channels_last=plan.channels_last)
        return next(iter(loader))
    return draw


def infer_rate(plan: Plan, model: nn.Module, data: ImageSet) -> float:
    """Seconds per image evaluated, as validation and testing run."""
    model.eval()
    cfg = plan.config
    infer_chunk = chunk_size(plan.device, plan.pre.img_size, 256)
    gen = torch.Generator().manual_seed(plan.config.seed + 11)

    def run(k: int) -> float:
        part = data.subset(torch.randint(len(data), (k,), generator=gen))
        start = time.perf_counter()
        log_probs(model, part, plan.pre, plan.device, task=plan.task,
                  batch_size=max(256, cfg.batch_size), precision=cfg.precision,
                  channels_last=plan.channels_last)
        _sync(plan.device)
        return time.perf_counter() - start

    per_image = run(infer_chunk) / infer_chunk  # warm-up
    k = max(infer_chunk, min(1024, int(TIMED_S / 2 / max(per_image, 1e-9))
                             // infer_chunk * infer_chunk))
    spent, images, n = 0.0, 0, 0
    while n == 0 or (spent < TIMED_S and n < 3):
        spent += run(k)
        images += k
        n += 1
    return spent / images


def features_rate(plan: Plan, model: nn.Module, data: ImageSet) -> float | None:
    """Seconds per image of the features mode's pass on its onnxruntime graph (made now
    when it is not in the cache, so the run finds it); None where torch codes them (its
    rate is the evaluation's)."""
    from cnnkit.training.codes_onnx import runner

    graph = runner(model, plan.pre, plan.device, plan.arch.to_dict())
    if graph is None:
        return None
    gen = torch.Generator().manual_seed(plan.config.seed + 13)

    def run(k: int) -> float:
        part = data.subset(torch.randint(len(data), (k,), generator=gen))
        start = time.perf_counter()
        extract(model, part, plan.pre, plan.device, graph=graph)
        return time.perf_counter() - start

    run(2)  # warm-up
    k = FEATURE_IMAGES
    return (run(k) + run(k)) / (2 * k)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
