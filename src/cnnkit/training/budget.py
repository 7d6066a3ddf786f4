"""``--time`` and the estimate line: the rates :class:`~cnnkit.training.estimate.Costs`
measured here turn into the estimate line, the faster choices of a long CPU run, a plan
that fits the budget (:func:`cnnkit.training.recipe.fit_budget` decides it) and the
deadline the loop keeps.
"""

from __future__ import annotations

import time
from dataclasses import replace

from cnnkit.base import log
from cnnkit.base.config import format_duration
from cnnkit.base.errors import CnnkitError
from cnnkit.training import estimate
from cnnkit.training.clock import Deadline, duration
from cnnkit.training.estimate import Costs, Estimate
from cnnkit.training.events import Planned
from cnnkit.training.recipe import Plan, faster_choices, fit_budget

EXIT_S = 2.0  # --time: the last files, the process's exit


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
    for variants in faster_choices(plan, costs.sizes["train"]):
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

