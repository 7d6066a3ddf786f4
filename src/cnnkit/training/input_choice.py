"""The input a run's images get: the model for small images (:data:`SMALL_IMAGE_MODEL`
from scratch at their own size rather than the default pretrained one blown up), the
input side in pixels, and the run's first lines saying what was chosen and why.

:func:`cnnkit.training.recipe.resolve_config` asks these; ``cnnkit check`` asks
:func:`default_side` without planning a run.
"""

from __future__ import annotations

from cnnkit.base.config import TrainConfig, format_duration
from cnnkit.data.probe import ImageFacts
from cnnkit.data.source import DataSource
from cnnkit.models.build import resolve
from cnnkit.models.registry import ModelInfo

DEFAULT_PRETRAINED = "efficientnet_lite0"
# Images whose side is at most 1/FAR_SMALLER of the default pretrained model's input train
# from scratch at their own size with SMALL_IMAGE_MODEL unless a model or size is asked
# for: more accuracy per minute than blowing them up for the pretrained model
# (docs/design-notes.md, "Small images train from scratch at their own size").
SMALL_IMAGE_MODEL = "fast-cnn"
FAR_SMALLER = 4
# Scratch models train a folder's images at their own size up to this side, and larger
# images at it; images smaller than MIN_OWN_SIZE are upsized to UPSIZE_TO (as the
# built-in digits are), where a scratch stack's pooling still leaves a map.
FOLDER_SCRATCH_SIZE = 64
MIN_OWN_SIZE = 16
UPSIZE_TO = 28
# At or below this side a scratch model's last maps are a few pixels wide, so a larger
# input often buys accuracy: the run's first lines say so (docs/design-notes.md).
HINT_UPSIZE_BELOW = 32


def model_for(config: TrainConfig, source: DataSource, facts: ImageFacts | None
              ) -> tuple[str, str | None]:
    """The model a run trains, and why it is :data:`SMALL_IMAGE_MODEL` when it is."""
    builtin = source.builtin
    model = config.model or (builtin.default_model if builtin else DEFAULT_PRETRAINED)
    small = None if config.model or builtin else small_images(config, facts)
    return (model if small is None else SMALL_IMAGE_MODEL), small


def input_side(config: TrainConfig, source: DataSource, info: ModelInfo,
               facts: ImageFacts | None, budget_size: int | None = None) -> int:
    """The input side in pixels: --time's, asked for, the model's, a generated set's own
    (shapes:size=16), a built-in set's default, else the images' own within bounds."""
    builtin = source.builtin
    return budget_size or config.img_size or info.img_size or source.native_size or (
        builtin.default_img_size if builtin else own_size(facts))


def default_side(source: DataSource) -> int:
    """The input side ``cnnkit train DATA`` would use with its default model (for
    ``cnnkit check``, which measures images against it without planning a run)."""
    return train_side(TrainConfig(data=source.spec), source)


def train_side(config: TrainConfig, source: DataSource) -> int:
    """The input side a run with ``config`` on ``source`` trains at, its model picked as
    the run picks it (for a data check, which measures images against it without
    planning a run: ``cnnkit check``, the studio's check of the mode chosen)."""
    facts = source.peek().facts
    _, info = resolve(model_for(config, source, facts)[0])
    return input_side(config, source, info, facts)


def small_images(config: TrainConfig, facts: ImageFacts | None) -> str | None:
    """Why the default model is :data:`SMALL_IMAGE_MODEL` for these images (None: it is
    not): no model, input size, weights or pretrained-only mode asked for, and images far
    smaller than the default pretrained model's input."""
    if (facts is None or config.img_size is not None or config.weights is not None
            or config.init_from is not None or config.mode not in ("auto", "scratch")):
        return None
    _, pretrained = resolve(DEFAULT_PRETRAINED)
    side = pretrained.img_size or 0
    if not facts.side or facts.side * FAR_SMALLER > side:
        return None
    return (f"model: {SMALL_IMAGE_MODEL} from scratch at the images' own size - they are "
            f"{facts.size_text()}, far smaller than {DEFAULT_PRETRAINED}'s {side} px input, "
            "and a scratch model at their size gets more accuracy per minute than "
            f"fine-tuning on them blown up (--model {DEFAULT_PRETRAINED} to fine-tune it "
            "anyway)")


def own_size(facts: ImageFacts | None) -> int:
    """A scratch model's input side for a folder's or CSV's images: their own, within
    bounds."""
    if facts is None or facts.side > FOLDER_SCRATCH_SIZE:
        return FOLDER_SCRATCH_SIZE
    return UPSIZE_TO if facts.side < MIN_OWN_SIZE else facts.side


def input_notes(cfg: TrainConfig, asked: TrainConfig, info: ModelInfo,
                facts: ImageFacts | None, mirror: str | None, budgeted: bool = False
                ) -> tuple[str, ...]:
    """The run's first lines: input size and channels, augmentation, and when a larger
    input is likely to pay, the option for it."""
    size, channels = cfg.img_size, cfg.channels
    colour = "grey" if channels == 1 else "RGB"
    if budgeted:
        why = f"to fit --time {format_duration(cfg.time or 0)}"
    elif asked.img_size is not None:
        why = "--img-size"
    elif info.img_size is not None:
        why = f"{cfg.model}'s input"
    elif facts is None:
        why = "the data set's size"
    elif facts.uniform and facts.side == size:
        why = "the images' own size"
    else:
        why = f"images of {facts.size_text()}"
    if asked.channels is not None:
        why_c = f"{colour} (--channels)"
    elif info.channels is not None:
        why_c = f"RGB ({cfg.model}'s input)"
    elif facts is not None:
        why_c = f"{colour} like the images"
    else:
        why_c = f"{colour} like the data set"
    if facts is not None and facts.probed < facts.total and asked.channels is None:
        why_c += f" (by {facts.probed:,} of {facts.total:,} files)"
    lines = [f"input: {size}x{size}x{channels} - {why}, {why_c}"]
    if cfg.mode == "features":
        lines.append("augmentation: none (--mode features fits a head to fixed features)")
    else:
        aug = ", ".join(cfg.augments) or "none"  # as parsed: 'flip++crop' is flip, crop
        no_flip = f" - no flip: {mirror}" if mirror and asked.augment == "auto" else ""
        lines.append(f"augmentation: {aug}{no_flip} (--augment to change)")
    if (cfg.mode == "scratch" and asked.img_size is None and facts is not None
            and size <= HINT_UPSIZE_BELOW and info.img_size is None):
        larger = min(2 * size, FOLDER_SCRATCH_SIZE)
        lines.append(f"hint: small images can gain accuracy at a larger input, for time: "
                     f"--img-size {larger} is {(larger / size) ** 2:.0f}x the pixels per "
                     "image")
    return tuple(lines)
