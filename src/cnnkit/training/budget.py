"""A run's cost before its first epoch, and ``--time``: rates measured here turn into
the estimate line, the faster choices of a long CPU run, a plan that fits the budget
(:func:`cnnkit.training.recipe.fit_budget` decides it) and the deadline the loop keeps.
"""

from __future__ import annotations

import time
from dataclasses import replace

from torch import nn

from cnnkit.base import log
from cnnkit.base.config import format_duration
from cnnkit.base.errors import CnnkitError
from cnnkit.data.sources import Splits
from cnnkit.models.build import create_model
from cnnkit.training import estimate
from cnnkit.training.clock import Deadline, duration
from cnnkit.training.estimate import Estimate, Rates
from cnnkit.training.events import Planned
from cnnkit.training.recipe import BUDGET_SIZES, Plan, at_size, faster_choices, fit_budget

EXIT_S = 2.0  # --time: the last files, the process's exit


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
        self.n = estimate.counts(plan, len(splits.train), _len(splits.val), _len(splits.test))
        self.n_train = len(splits.train)
        self._rates = {self._key(plan): estimate.measure(plan, model, self.classes,
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
            self._rates[key] = estimate.measure(plan, model, self.classes)
            return self._rates[key]
        sides = {k[1]: r for k, r in self._rates.items() if k[0] == key[0] and k[2:] == key[2:]}
        low = min(BUDGET_SIZES)
        if plan.pre.img_size > low and len(sides) < 2 and low not in sides:
            sides[low] = self.rates(at_size(plan, low))
        if len(sides) < 2 or not min(sides) <= plan.pre.img_size <= max(sides):
            self._rates[key] = estimate.measure(plan, self.model, self.classes)
        else:
            below = max(s for s in sides if s <= plan.pre.img_size)
            above = min(s for s in sides if s >= plan.pre.img_size)
            self._rates[key] = estimate.between(sides[below], below, sides[above], above,
                                                plan.pre.img_size)
        return self._rates[key]

    def estimate(self, plan: Plan, done: tuple[int, ...] = (), probe: bool = True) -> Estimate:
        return estimate.plan_seconds(plan, self.n, self.rates(plan), done, probe)

    def seconds(self, plan: Plan) -> float:
        return self.estimate(plan).seconds


def fit(plan: Plan, costs: Costs, started: float) -> tuple[Plan, str]:
    """--time: the plan that fits in the time left of the budget (which started at
    ``started`` on the monotonic clock), and the line that says so."""
    left = (plan.config.time or 0.0) - (time.monotonic() - started)
    return fit_budget(plan, left, costs.seconds)


def announce(plan: Plan, costs: Costs, est: Estimate, done: tuple[int, ...] = ()) -> Planned:
    """The plan's event: the estimate line and, on a CPU above LONG_S, the faster choices
    with their estimates."""
    line = estimate.describe(plan, costs.n, est, costs.rates(plan), done)
    cfg = plan.config
    left = [max(p.epochs - (done[i] if i < len(done) else 0), 0)
            for i, p in enumerate(plan.phases)] if cfg.mode != "features" else []
    event = Planned(line, est.seconds, cfg.mode, str(cfg.model), str(plan.device),
                    plan.pre.img_size, sum(left) if left else cfg.epochs,
                    dict(costs.sizes),
                    costs.class_names,
                    tuple((p.name, e) for p, e in zip(plan.phases, left))
                    if cfg.mode != "features" else ())
    if plan.device.type != "cpu" or est.seconds <= estimate.LONG_S or done:
        return event
    shown: list[tuple[str, float]] = []
    for variants in faster_choices(plan, costs.n_train):
        timed = [(flag, costs.seconds(p)) for flag, p in variants]
        quick = [t for t in timed if t[1] <= estimate.LONG_S]
        pick = quick[0] if quick else timed[-1]
        if pick[1] < est.seconds:
            shown.append(pick)
    if plan.config.time is None:
        budget = estimate.LONG_S
        try:
            fitted, _ = fit_budget(replace(plan, config=plan.config.replace(time=budget)),
                                   budget, costs.seconds)
            what = (f"{fitted.config.epochs} epochs at {fitted.pre.img_size} px"
                    if fitted.config.mode != "features" else f"{fitted.pre.img_size} px")
            shown.append((f"--time {format_duration(budget)}: {what}", costs.seconds(fitted)))
        except CnnkitError:
            pass
    if shown:
        return replace(event, faster=estimate.choices_line(sorted(shown, key=lambda t: -t[1])))
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
