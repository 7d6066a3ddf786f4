"""Plans made from a plan, to cost them: the plan at another input side or with fewer
epochs, ``--time``'s plan (the one that fits the time left by a cost), what other
options would make of the same data, and the faster choices a long run is offered (a
smaller input, the features mode, the scratch model for small images), which
:mod:`cnnkit.training.estimate` costs and names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cnnkit.base.config import format_duration
from cnnkit.base.errors import CnnkitError
from cnnkit.training.clock import duration
from cnnkit.training.hyperparams import resolve_numbers, small_data_changes
from cnnkit.training.input_choice import FAR_SMALLER, SMALL_IMAGE_MODEL
from cnnkit.training.recipe import Plan, resolve_config

# --time: a pretrained model's input shrinks (through these sides) before its run gets
# fewer than MIN_EPOCHS epochs (or the plan's own, when fewer); docs/design-notes.md,
# "A plan that says what it costs".
BUDGET_SIZES = (192, 160, 128, 96, 64)
MIN_EPOCHS = 3
MARGIN = 0.9  # --time plans this share of the time left; the loop's clock absorbs the rest


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
