"""What a run will cost on this machine: seconds per image timed from a few real
training and evaluation steps of the run's model, and the run's time from them;
:class:`Costs` keeps what was measured, once per model, input side and mode. What the
run does with it is here too: the estimate line (with the faster choices of a long CPU
run), ``--time``'s plan that fits the budget
(:func:`cnnkit.training.plan_variants.fit_budget` decides it) and the deadline the loop
keeps.

The steps run on a copy of the model with the random number generators restored
afterwards, so timing a run changes nothing it trains. Other plans (a smaller input, a
scratch model) are timed on made-up images of their size: a step costs the same
whatever the pixels hold.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from cnnkit.base import log
from cnnkit.base.config import format_duration
from cnnkit.base.errors import CnnkitError
from cnnkit.data.imageset import ImageSet
from cnnkit.data.loader import BatchLoader
from cnnkit.data.sources import Splits
from cnnkit.models.build import create_model
from cnnkit.runtime.inference import chunk_size, log_probs
from cnnkit.training.clock import Deadline, duration
from cnnkit.training.events import Planned
from cnnkit.training.features import PROBE_LIMIT, extract
from cnnkit.training.plan_variants import BUDGET_SIZES, at_size, faster_choices, fit_budget
from cnnkit.training.recipe import Plan
from cnnkit.training.step import TrainStep
from cnnkit.training.transfer import Phase

STEP_S = 0.5  # a timed step: a whole batch, or as many images as take about this long
TIMED_S = 1.0  # time steps (after one to warm up) until this much has passed ...
MAX_STEPS = 6  # ... or this many steps
FEATURE_IMAGES = 8  # the features mode's pass on its graph is timed on this many images
REPORT_S = 5.0  # the end's plots and report.html, less their Grad-CAMs
GRAD_CAMS = 9  # the report's top losses, each a forward and a backward pass
LONG_S = 600.0  # on a CPU, a plan longer than this is shown its faster choices


@dataclass(frozen=True)
class Rates:
    """Seconds per image here, for one model at one input size."""

    train: dict[str, float]  # per phase by name: augmentation, forward, backward, step
    infer: float  # evaluation: validation, test, the linear probe, the features
    steps: int  # training steps timed (after one to warm up)
    features: float | None = None  # the features mode's pass (its onnxruntime graph)


@dataclass(frozen=True)
class Counts:
    """Images in each split (the training and validation shares of one process)."""

    train: int
    val: int
    test: int


@dataclass(frozen=True)
class Estimate:
    """A plan's time: before the epochs (features, the probe), each phase's epochs with
    their validation, and the end (test, report)."""

    before_s: float
    phase_s: tuple[float, ...]
    after_s: float
    val_s: float  # one validation pass, for the deadline of --time

    @property
    def seconds(self) -> float:
        return self.before_s + sum(self.phase_s) + self.after_s


class Costs:
    """Seconds per image for each (model, input side, mode) asked about, each measured
    once: the run's own plan on its loaded images, other plans on made-up ones."""

    def __init__(self, plan: Plan, model: nn.Module, splits: Splits) -> None:
        self.plan = plan
        self.model = model
        self.classes = len(splits.classes)
        self.class_names = tuple(splits.classes)
        self.sizes = {"train": len(splits.train), "val": _len(splits.val),
                      "test": _len(splits.test)}
        self.n = counts(plan, len(splits.train), _len(splits.val), _len(splits.test))
        self._rates = {self._key(plan): measure(plan, model, self.classes,
                                                         splits.train, splits.val)}

    @staticmethod
    def _key(plan: Plan) -> tuple:
        return plan.config.model, plan.pre.img_size, plan.config.mode

    def rates(self, plan: Plan) -> Rates:
        """Measured once per key; another side of the run's own model is read off the
        line through two measured sides (time per image against pixels), the run's own
        and the smallest of BUDGET_SIZES, so that a search over sides times two."""
        key = self._key(plan)
        if key in self._rates:
            return self._rates[key]
        same = plan.arch == self.plan.arch and plan.pre.channels == self.plan.pre.channels
        known = [r for k, r in self._rates.items() if k[:2] == key[:2]]
        if same and plan.config.mode == "features" and known:  # evaluation alone
            self._rates[key] = Rates({}, known[0].infer, 0, known[0].features)
            return self._rates[key]
        if not same:
            model = create_model(plan.arch, self.classes, plan.pre.channels, plan.pre.img_size)
            self._rates[key] = measure(plan, model, self.classes)
            return self._rates[key]
        sides = {k[1]: r for k, r in self._rates.items() if k[0] == key[0] and k[2:] == key[2:]}
        low = min(BUDGET_SIZES)
        if plan.pre.img_size > low and len(sides) < 2 and low not in sides:
            sides[low] = self.rates(at_size(plan, low))
        if len(sides) < 2 or not min(sides) <= plan.pre.img_size <= max(sides):
            self._rates[key] = measure(plan, self.model, self.classes)
        else:
            below = max(s for s in sides if s <= plan.pre.img_size)
            above = min(s for s in sides if s >= plan.pre.img_size)
            self._rates[key] = between(sides[below], below, sides[above], above,
                                                plan.pre.img_size)
        return self._rates[key]

    def estimate(self, plan: Plan, done: tuple[int, ...] = (), probe: bool = True) -> Estimate:
        return plan_seconds(plan, self.n, self.rates(plan), done, probe)

    def seconds(self, plan: Plan) -> float:
        return self.estimate(plan).seconds


def counts(plan: Plan, train: int, val: int, test: int) -> Counts:
    world = plan.cluster.world
    return Counts(-(-train // world), -(-val // world), test)


def plan_seconds(plan: Plan, n: Counts, rates: Rates, done: tuple[int, ...] = (),
                 probe: bool = True) -> Estimate:
    """The time of ``plan`` at ``rates``; ``done``: epochs already trained per phase (a
    resumed run); ``probe``: whether a fine-tune still fits its linear probe first."""
    cfg = plan.config
    val_s = n.val * rates.infer
    after = n.test * rates.infer * (2 if cfg.tta else 1)
    if cfg.plots:
        after += REPORT_S + 3 * GRAD_CAMS * rates.infer
    if cfg.mode == "features":
        per_image = rates.features if rates.features is not None else rates.infer
        return Estimate((n.train + n.val) * per_image, (), after, val_s)
    before = 0.0
    if cfg.mode == "fine-tune" and cfg.probe and probe:
        before = min(n.train, PROBE_LIMIT) * rates.infer
    left = [max(p.epochs - (done[i] if i < len(done) else 0), 0)
            for i, p in enumerate(plan.phases)]
    phase_s = tuple(e * (n.train * rates.train[p.name] + val_s)
                    for e, p in zip(left, plan.phases))
    return Estimate(before, phase_s, after, val_s)


def measure(plan: Plan, model: nn.Module, classes: int, data: ImageSet | None = None,
            val: ImageSet | None = None) -> Rates:
    """Time a few training steps of each phase and an evaluation pass of ``model`` under
    ``plan``, on ``data`` (made-up images at the plan's size when None)."""
    data = data if data is not None else synthetic(plan, classes)
    val = val if val is not None and len(val) else data
    with torch.random.fork_rng(devices=_cuda(plan.device)):
        twin = copy.deepcopy(model).to(plan.device)
        if plan.channels_last:
            twin = twin.to(memory_format=torch.channels_last)
        train: dict[str, float] = {}
        steps = 0
        for phase in plan.phases if plan.config.mode != "features" else ():
            train[phase.name], n = _train_rate(plan, twin, phase, data)
            steps += n
        infer = _infer_rate(plan, twin, val)
        coded = _features_rate(plan, twin, val) if plan.config.mode == "features" else None
    return Rates(train, infer, steps, coded)


def between(low: Rates, low_side: int, high: Rates, high_side: int, side: int) -> Rates:
    """Rates at ``side`` on the line through two measured sides, time per image against
    pixels per image."""
    if high_side == low_side:
        return low
    w = (side ** 2 - low_side ** 2) / (high_side ** 2 - low_side ** 2)

    def mix(a: float, b: float) -> float:
        return a + (b - a) * w
    return Rates({k: mix(low.train[k], high.train[k]) for k in low.train if k in high.train},
                 mix(low.infer, high.infer), 0,
                 mix(low.features, high.features) if low.features is not None
                 and high.features is not None else None)


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


def _train_rate(plan: Plan, model: nn.Module, phase: Phase, data: ImageSet
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


def _infer_rate(plan: Plan, model: nn.Module, data: ImageSet) -> float:
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


def _features_rate(plan: Plan, model: nn.Module, data: ImageSet) -> float | None:
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


def _cuda(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def where(device: torch.device) -> str:
    if device.type == "cpu":
        return f"on the CPU ({torch.get_num_threads()} threads)"
    return f"on the {'GPU' if device.type == 'cuda' else device.type.upper()}"


def describe(plan: Plan, n: Counts, est: Estimate, rates: Rates,
             done: tuple[int, ...] = ()) -> str:
    """The estimate line: ``estimate: about 2 h 20 min - 10 epochs x 8,000 images at 224 px
    on the CPU (2 threads), timed from 4 steps here``."""
    cfg = plan.config
    size = f"{plan.pre.img_size} px"
    if cfg.mode == "features":
        what = (f"features of {n.train + n.val:,} images at {size} and a linear head "
                f"{where(plan.device)}")
    else:
        epochs = sum(max(p.epochs - (done[i] if i < len(done) else 0), 0)
                     for i, p in enumerate(plan.phases))
        probe = "a linear probe, then " if est.before_s else ""
        left = " more" if done else ""
        what = (f"{probe}{epochs} epoch{'s' if epochs != 1 else ''}{left} x {n.train:,} "
                f"images at {size} {where(plan.device)}")
    timed = (f"timed from {rates.steps} step{'s' if rates.steps != 1 else ''} here"
             if rates.steps else "timed from an evaluation pass here")
    return f"estimate: {duration(est.seconds)} - {what}, {timed}"


def choices_line(choices: list[tuple[str, float]]) -> str:
    """``faster: --img-size 96 (about 9 min), --mode features (about 3 min)``."""
    return "faster: " + ", ".join(f"{flag} ({duration(s)})" for flag, s in choices)


EXIT_S = 2.0  # --time: the last files, the process's exit


def fit_time(plan: Plan, costs: Costs, started: float) -> tuple[Plan, str]:
    """--time: the plan that fits in the time left of the budget (which started at
    ``started`` on the monotonic clock), and the line that says so."""
    left = (plan.config.time or 0.0) - (time.monotonic() - started)
    return fit_budget(plan, left, costs.seconds)


def announce(plan: Plan, costs: Costs, est: Estimate, done: tuple[int, ...] = ()) -> Planned:
    """The plan's event: the estimate line and, on a CPU above LONG_S, the faster choices
    with their estimates."""
    line = describe(plan, costs.n, est, costs.rates(plan), done)
    cfg = plan.config
    left = [max(p.epochs - (done[i] if i < len(done) else 0), 0)
            for i, p in enumerate(plan.phases)] if cfg.mode != "features" else []
    event = Planned(line, est.seconds, cfg.mode, str(cfg.model), str(plan.device),
                    plan.pre.img_size, sum(left) if left else cfg.epochs,
                    dict(costs.sizes),
                    costs.class_names,
                    tuple((p.name, e) for p, e in zip(plan.phases, left))
                    if cfg.mode != "features" else ())
    if plan.device.type != "cpu" or est.seconds <= LONG_S or done:
        return event
    shown: list[tuple[str, float]] = []
    for variants in faster_choices(plan, costs.sizes["train"]):
        timed = [(flag, costs.seconds(p)) for flag, p in variants]
        quick = [t for t in timed if t[1] <= LONG_S]
        pick = quick[0] if quick else timed[-1]
        if pick[1] < est.seconds:
            shown.append(pick)
    if plan.config.time is None:
        budget = LONG_S
        try:
            fitted, _ = fit_budget(replace(plan, config=plan.config.replace(time=budget)),
                                   budget, costs.seconds)
            what = (f"{fitted.config.epochs} epochs at {fitted.pre.img_size} px"
                    if fitted.config.mode != "features" else f"{fitted.pre.img_size} px")
            shown.append((f"--time {format_duration(budget)}: {what}", costs.seconds(fitted)))
        except CnnkitError:
            pass
    if shown:
        return replace(event, faster=choices_line(sorted(shown, key=lambda t: -t[1])))
    return event


def deadline(plan: Plan, est: Estimate, started: float, spent: float = 0.0) -> Deadline:
    """When the last training step must be done for the run to end within --time: the
    budget's end less the test, the report, one validation pass and the process's exit;
    ``spent``: seconds of the budget used by earlier processes (a resumed run)."""
    budget = (plan.config.time or 0.0) - spent
    end = started + budget - est.after_s - est.val_s - EXIT_S
    return Deadline(end, est.phase_s)


def resume_budget(plan: Plan, history: list[dict], started: float, est: Estimate) -> Plan:
    """--time on --resume: the time its earlier processes trained is spent; the rest is
    this one's, or one line when nothing is left."""
    if plan.config.time is None:
        return plan
    spent = sum(float(r.get("train_time_s", 0) or 0) + float(r.get("eval_time_s", 0) or 0)
                for r in history)
    left = plan.config.time - spent - (time.monotonic() - started) - est.after_s - est.val_s
    if left <= 0:
        raise CnnkitError(f"This run has used its --time budget of "
                          f"{format_duration(plan.config.time)} ({duration(spent)} of "
                          "training); nothing to resume. Its model is the best so far; start "
                          "a new run from it with --init-from to train longer.")
    log.info(f"--time {format_duration(plan.config.time)}: {duration(left)} left for "
             "training")
    return replace(plan, deadline=deadline(plan, est, started, spent))


def _len(part: object) -> int:
    return len(part) if part is not None else 0  # type: ignore[arg-type]
