"""A run that ends at chance: its kept model scores on validation what answering the same
class for every image would, so it has learnt nothing, though every file was written.

The end of such a run says so in one line with the likely causes (the run itself is
kept: its files are valid, its answers are not). Near is within half of chance, at most
five points: 10 balanced classes at or below 15%, 3 at or below 38.3%, 2 at or below 55%;
and within a quarter of the majority's error, so that on data one class fills 90% of,
a model right on 93% (which has learnt a third of what was left) is not called one that
learnt nothing.
A model that learnt nothing answers one class, so it scores chance exactly; the margin
takes in one that barely moved from it, and stays below what a model that learnt scores.
Fewer than :data:`MIN_IMAGES` validation images tell chance from learning too poorly
to say either.
"""

from __future__ import annotations

import math
from typing import Any

from cnnkit.base import log
from cnnkit.base.config import TrainConfig

MIN_IMAGES = 20


def near_chance(value: float, chance: float, images: int) -> bool:
    """Whether a validation figure ``value`` on ``images`` images is at or near
    ``chance``."""
    return images >= MIN_IMAGES and value <= chance + min(chance / 2, 0.05,
                                                          (1 - chance) / 4)


def chance_line(figure_name: str, value: float, chance: float, classes: int,
                config: TrainConfig, history: list[dict[str, Any]]) -> str:
    """The warning that ends a run at chance, with what most likely caused it: a rate
    too high first when the training loss rose or went well above a uniform guess's
    (ln K: training made the model worse than knowing nothing), else too little
    training."""
    lr = config.lr if isinstance(config.lr, (int, float)) else None
    rate = f"--lr {lr:g}: " if lr is not None else ""
    losses = [row["train_loss"] for row in history if "train_loss" in row]
    if config.mode == "features":
        causes = ("the frozen backbone's features do not tell these classes apart (try "
                  "--mode fine-tune), too few images per class, or labels that do not "
                  "match the images")
    elif losses and (losses[-1] > losses[0] or max(losses) > 1.5 * math.log(max(classes, 2))):
        causes = (f"a learning rate too high ({rate}try --lr find, or a rate 10x smaller), "
                  "or labels that do not match the images")
    else:
        causes = (f"too few epochs or images ({log.plural(len(losses), 'epoch')}), a "
                  f"learning rate too high or too low ({rate}try --lr find), or labels that "
                  "do not match the images")
    return (f"the kept model's validation {figure_name} is {value:.2%}, at or near chance "
            f"for {classes} classes (one answer for every image scores {chance:.2%}): it "
            f"has learnt nothing. Likely causes: {causes}.")
