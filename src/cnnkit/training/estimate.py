"""What a run will cost on this machine, and what is done with it.

:class:`Costs` keeps seconds per image for each model, input side and mode asked about,
each measured once (:func:`measure`: a few real steps, :mod:`cnnkit.training.timing`,
on a copy of the model with the random number generators restored afterwards, so timing
a run changes nothing it trains; other plans, a smaller input or a scratch model, on
made-up images of their size). From them: the run's time, ``--time``'s plan that fits the
budget (fewer epochs, or a smaller input side) and the deadline the loop keeps, and the
estimate line with the faster choices a long CPU run is offered. The plans made from a
plan to cost them (another input side, fewer epochs, other options) are made here too:
costing is their only use.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from cnnkit.base import log
from cnnkit.base.config import format_duration
from cnnkit.base.errors import CnnkitError
from cnnkit.data.imageset import ImageSet
from cnnkit.data.sources import Splits
from cnnkit.models.build import create_model
from cnnkit.tasks.ood import MIN_HELD_OUT
from cnnkit.training.calibrate import stats_images
from cnnkit.training.clock import Deadline, duration
from cnnkit.training.events import Planned
from cnnkit.training.features import PROBE_LIMIT, cache_path, identity_of
from cnnkit.training.hyperparams import resolve_numbers, small_data_changes
from cnnkit.training.input_choice import FAR_SMALLER, SMALL_IMAGE_MODEL
from cnnkit.training.recipe import Plan, resolve_config
from cnnkit.training.timing import features_rate, infer_rate, synthetic, train_rate

REPORT_S = 5.0  # the end's plots and report.html, less their Grad-CAMs
GRAD_CAMS = 9  # the report's top losses, each a forward and a backward pass
LONG_S = 600.0  # on a CPU, a plan longer than this is shown its faster choices
EXIT_S = 2.0  # --time: the last files, the process's exit

# --time: a pretrained model's input shrinks (through these sides) before its run gets
# fewer than MIN_EPOCHS epochs (or the plan's own, when fewer); docs/design-notes.md,
# "A plan that says what it costs".
BUDGET_SIZES = (192, 160, 128, 96, 64)
MIN_EPOCHS = 3
MARGIN = 0.9  # --time plans this share of the time left; the loop's clock absorbs the rest


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
    cached: int = 0  # the features mode: training and validation images with cached codes


@dataclass(frozen=True)
class Estimate:
    """A plan's time: before the epochs (features, the probe), each phase's epochs with
    their validation, and the end (calibration, test, report)."""

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
        self._splits = splits
        self._cached: dict[str, int] = {}
        coded = self.counts(plan).cached < self.n.train + self.n.val
        self._rates = {self._key(plan): measure(plan, model, self.classes,
                                                         splits.train, splits.val, coded)}

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

    def counts(self, plan: Plan) -> Counts:
        """The images ``plan`` works on; for the features mode, with how many of them
        have their codes in the cache (:func:`~cnnkit.training.features.cache_path`:
        only a plan on the loaded images, as the run's own preprocessing made them, can
        find them there)."""
        if plan.config.mode != "features" or plan.pre != self.plan.pre:
            return self.n
        identity = identity_of(plan.arch.to_dict(), plan.config.weights)
        key = json.dumps(identity, sort_keys=True, default=str)
        if key not in self._cached:
            self._cached[key] = sum(len(part) for part in (self._splits.train,
                                                            self._splits.val)
                                    if part is not None and len(part)
                                    and cache_path(identity, part, plan.pre).is_file())
        return replace(self.n, cached=self._cached[key])

    def estimate(self, plan: Plan, done: tuple[int, ...] = (), probe: bool = True) -> Estimate:
        return plan_seconds(plan, self.counts(plan), self.rates(plan), done, probe)

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
    after = held_out_s(plan, n, rates) + n.test * rates.infer * (2 if cfg.tta else 1)
    if cfg.plots:
        after += REPORT_S + 3 * GRAD_CAMS * rates.infer
    if cfg.mode == "features":  # codes in the cache are read, not computed
        per_image = rates.features if rates.features is not None else rates.infer
        return Estimate((n.train + n.val - n.cached) * per_image, (), after, val_s)
    before = 0.0
    if cfg.mode == "fine-tune" and cfg.probe and probe:
        before = min(n.train, PROBE_LIMIT) * rates.infer
    left = [max(p.epochs - (done[i] if i < len(done) else 0), 0)
            for i, p in enumerate(plan.phases)]
    phase_s = tuple(e * (n.train * rates.train[p.name] + val_s)
                    for e, p in zip(left, plan.phases))
    return Estimate(before, phase_s, after, val_s)


def held_out_s(plan: Plan, n: Counts, rates: Rates) -> float:
    """The end's fit of the task's post-processing before the test
    (:func:`~cnnkit.training.calibrate.fit_on_validation`: calibration and the unknown
    rule): a pass over the validation images and, for a rule that reads feature
    distances, one over (a sample of) the training images; none with too few to fit on."""
    task = plan.task
    if not task.fits_held_out or n.val < MIN_HELD_OUT:
        return 0.0
    seconds = n.val * rates.infer
    if task.reads_distance and n.train:
        per_image = rates.features if rates.features is not None else rates.infer
        seconds += min(n.train, stats_images(plan.pre.img_size)) * per_image
    return seconds


def measure(plan: Plan, model: nn.Module, classes: int, data: ImageSet | None = None,
            val: ImageSet | None = None, coded: bool = True) -> Rates:
    """Time a few training steps of each phase and an evaluation pass of ``model`` under
    ``plan``, on ``data`` (made-up images at the plan's size when None); ``coded``: the
    features mode's pass too (when the cache holds all its codes, only if its graph is
    made: the run then makes none, and timing one would make it)."""
    data = data if data is not None else synthetic(plan, classes)
    val = val if val is not None and len(val) else data
    with torch.random.fork_rng(devices=_cuda(plan.device)):
        twin = copy.deepcopy(model).to(plan.device)
        if plan.channels_last:
            twin = twin.to(memory_format=torch.channels_last)
        train: dict[str, float] = {}
        steps = 0
        for phase in plan.phases if plan.config.mode != "features" else ():
            train[phase.name], n = train_rate(plan, twin, phase, data)
            steps += n
        infer = infer_rate(plan, twin, val)
        codes = None
        if plan.config.mode == "features" and (coded or _graph_made(plan, twin)):
            codes = features_rate(plan, twin, val)
    return Rates(train, infer, steps, codes)


def _graph_made(plan: Plan, model: nn.Module) -> bool:
    """Whether the features mode's codes graph is in the cache already: with every code
    cached too, the run still reads the feature statistics' training sample through it."""
    from cnnkit.training import codes_onnx

    return plan.device.type == "cpu" and codes_onnx.graph_path(
        model, plan.pre, plan.arch.to_dict()).is_file()


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


def _cuda(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def resizable(plan: Plan) -> bool:
    """Whether the run's input side is ours to change: a pretrained model (it takes any
    size) whose size was not asked for and whose weights do not fix it (--init-from)."""
    return (plan.info.is_pretrained and plan.asked.img_size is None
            and plan.asked.init_from is None)


def at_size(plan: Plan, size: int) -> Plan:
    """``plan`` at another input side, for costing it (the run itself resolves anew)."""
    return replace(plan, config=plan.config.replace(img_size=size),
                   pre=replace(plan.pre, img_size=size))


def with_epochs(plan: Plan, epochs: int) -> Plan:
    """``plan`` with ``epochs`` in all; a fine-tune's head-only epochs follow them unless
    asked for."""
    cfg = plan.config
    head = cfg.head_epochs
    if cfg.mode == "fine-tune" and plan.asked.head_epochs is None:
        head = 0 if cfg.probe or epochs < 2 else max(1, min(3, epochs // 4))
    return replace(plan, config=cfg.replace(epochs=epochs, head_epochs=head))


def variant(plan: Plan, n_train: int, **changes: Any) -> Plan:
    """The plan that the same options with ``changes`` would make for the same data
    (few-image defaults included), for costing it."""
    asked = plan.asked.replace(**changes)
    other = resolve_config(asked, cluster=plan.cluster)
    extra = small_data_changes(asked, other.config, n_train)
    if extra:
        numbers = resolve_numbers(asked.replace(**extra), other.config.mode,
                                  other.source.builtin, other.device, plan.cluster.world)
        other = replace(other, config=other.config.replace(**numbers))
    return other


def fit_time(plan: Plan, costs: Costs, started: float) -> tuple[Plan, str]:
    """--time: the plan that fits in the time left of the budget (which started at
    ``started`` on the monotonic clock), and the line that says so."""
    left = (plan.config.time or 0.0) - (time.monotonic() - started)
    return fit_budget(plan, left, costs.seconds)


def fit_budget(plan: Plan, left: float, cost: Callable[[Plan], float]) -> tuple[Plan, str]:
    """--time: the plan that fits in MARGIN of the ``left`` seconds of the budget by
    ``cost``, and a line saying what was chosen. The most epochs up to the plan's at its
    input size; when fewer than MIN_EPOCHS fit there and the size is ours to change, the
    largest smaller side where they do. Nothing that fits: one line saying what would."""
    total = plan.config.time or left
    budget = format_duration(total)
    spent = total - left
    seconds = left * MARGIN
    want = plan.config.epochs
    sizes = (plan.pre.img_size, *(s for s in BUDGET_SIZES
                                  if resizable(plan) and s < plan.pre.img_size))
    if plan.config.mode == "features":
        for size in sizes:
            candidate = at_size(plan, size) if size != plan.pre.img_size else plan
            if cost(candidate) <= seconds:
                return candidate, _fitted(budget, candidate, plan, cost(candidate))
        raise _too_short(budget, plan, sizes[-1], cost(at_size(plan, sizes[-1])), spent)
    floor = min(want, MIN_EPOCHS)
    fallback: Plan | None = None
    for size in sizes:
        sized = at_size(plan, size) if size != plan.pre.img_size else plan
        most = _most_epochs(sized, want, seconds, cost)
        if not most:
            continue
        chosen = with_epochs(sized, most)
        if most >= floor:
            return chosen, _fitted(budget, chosen, plan, cost(chosen))
        fallback = fallback or chosen
    if fallback is not None:
        return fallback, _fitted(budget, fallback, plan, cost(fallback))
    smallest = with_epochs(at_size(plan, sizes[-1]) if len(sizes) > 1 else plan, 1)
    raise _too_short(budget, plan, sizes[-1], cost(smallest), spent)


def _most_epochs(plan: Plan, most: int, seconds: float, cost: Callable[[Plan], float]) -> int:
    """The most epochs, up to ``most``, whose cost is within ``seconds`` (0: not one);
    the cost grows with the epochs."""
    low, high = 0, most
    while low < high:
        mid = (low + high + 1) // 2
        if cost(with_epochs(plan, mid)) <= seconds:
            low = mid
        else:
            high = mid - 1
    return low


def _fitted(budget: str, chosen: Plan, planned: Plan, seconds: float) -> str:
    what = (f"{chosen.config.epochs} epoch{'s' if chosen.config.epochs != 1 else ''} at "
            f"{chosen.pre.img_size} px" if chosen.config.mode != "features"
            else f"features at {chosen.pre.img_size} px")
    if (chosen.config.epochs, chosen.pre.img_size) == (planned.config.epochs,
                                                       planned.pre.img_size):
        return f"--time {budget}: the plan fits ({what}, {duration(seconds)})"
    was = (f"{planned.config.epochs} at {planned.pre.img_size} px"
           if planned.config.mode != "features" else f"{planned.pre.img_size} px")
    return f"--time {budget}: {what} ({duration(seconds)}) instead of {was}, to fit"


def _too_short(budget: str, plan: Plan, size: int, seconds: float, spent: float
               ) -> CnnkitError:
    what = "the features mode" if plan.config.mode == "features" else "one epoch"
    need = spent + seconds / MARGIN
    step = 60 if need > 120 else 10
    after = f", after {duration(spent)} of loading and timing" if spent >= 1 else ""
    return CnnkitError(f"--time {budget} is too short for this run: {what} at {size} px "
                       f"takes {duration(seconds)} here{after}. Allow --time "
                       f"{format_duration(-(-need // step) * step)} or more, or train on "
                       "fewer images (--per-class N).")


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
        what = (f"features of {n.train + n.val:,} images at {size}{_in_cache(n)} and a "
                f"linear head {where(plan.device)}")
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


def _in_cache(n: Counts) -> str:
    """How many of the features mode's codes the cache holds, as the line says it."""
    if not n.cached:
        return ""
    if n.cached >= n.train + n.val:
        return " (cached by an earlier run: read, not computed)"
    return f" ({n.cached:,} of them cached by an earlier run)"


def choices_line(choices: list[tuple[str, float]]) -> str:
    """``faster: --img-size 96 (about 9 min), --mode features (about 3 min)``."""
    return "faster: " + ", ".join(f"{flag} ({duration(s)})" for flag, s in choices)


def announce(plan: Plan, costs: Costs, est: Estimate, done: tuple[int, ...] = ()) -> Planned:
    """The plan's event: the estimate line and, on a CPU above LONG_S, the faster choices
    with their estimates."""
    line = describe(plan, costs.counts(plan), est, costs.rates(plan), done)
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


def faster_choices(plan: Plan, n_train: int) -> list[list[tuple[str, Plan]]]:
    """What a long run could do instead, each choice as its variants from the largest
    change down (the caller shows the first that is quick enough, else the last), with
    the option that asks for it: a smaller input, the features mode, and for small
    images the scratch model at their own size."""
    cfg = plan.config
    choices: list[list[tuple[str, Plan]]] = []
    if plan.info.is_pretrained and plan.asked.init_from is None:
        sizes = [s for s in BUDGET_SIZES if s < plan.pre.img_size]
        if sizes:
            choices.append([(f"--img-size {s}", at_size(plan, s)) for s in sizes])
    if cfg.mode == "fine-tune" and plan.asked.init_from is None and not plan.cluster.distributed:
        choices.append([("--mode features", replace(plan, config=cfg.replace(mode="features")))])
    facts = plan.facts
    if (plan.info.is_pretrained and facts is not None and facts.side
            and facts.side * FAR_SMALLER <= (plan.info.img_size or 0)):
        scratch = variant(plan, n_train, model=SMALL_IMAGE_MODEL, mode="auto", img_size=None,
                          weights=None, init_from=None)
        choices.append([(f"--model {SMALL_IMAGE_MODEL} at {scratch.pre.img_size} px",
                         scratch)])
    return choices


def _len(part: object) -> int:
    return len(part) if part is not None else 0  # type: ignore[arg-type]
