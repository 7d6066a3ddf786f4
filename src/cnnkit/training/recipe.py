"""Sensible defaults: fill every "decide for me" value of a config from data and model.

Two steps, each run once per training run: :func:`resolve_config` decides all it can
from the options (and the model, the device and what the data is), and
:func:`finalize` decides the rest once the data is loaded (small-data batch and
epochs, ``--keep auto``, a scratch model's mean/std, the features mode's taps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch

from cnnkit.artifacts.modelfile import ModelCard
from cnnkit.base import log
from cnnkit.base.config import TrainConfig, augment_tokens, format_duration
from cnnkit.base.device import pick_device, settle_precision
from cnnkit.base.errors import CnnkitError
from cnnkit.data.builtin import BuiltinSet
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.probe import ImageFacts, Peek, mirror_reason
from cnnkit.data.source import DataSource
from cnnkit.data.sources import Splits, describe
from cnnkit.models.build import Architecture, resolve
from cnnkit.models.registry import ModelInfo
from cnnkit.tasks.base import Task
from cnnkit.tasks.registry import get_task
from cnnkit.tasks.single_label import SingleLabel
from cnnkit.training.clock import Deadline, duration
from cnnkit.training.distributed import SINGLE, Cluster
from cnnkit.training.optim import trained_start_share
from cnnkit.training.quick_checks import check_weights_file
from cnnkit.training.transfer import Phase, phases

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
# Peak learning rates for a batch of 256, scaled linearly with the batch size.
PEAK_LR = {"adamw": 8e-3, "sgd": 0.1}
WEIGHT_DECAY = {"adamw": 0.05, "sgd": 5e-4}
# AdamW fine-tuning rate, the same at every batch size: the batch-scaled rates
# under-trained the base at small batches (the sweeps are in docs/design-notes.md,
# "Fine-tuning runs at AdamW 2e-3"). SGD keeps the batch-scaled rate divided by 8.
FINE_TUNE_LR = {"adamw": 2e-3}
# Picking the best of several epochs by fewer validation images than this selects noise:
# the accuracy of 120 images has a standard error of about 3 points (the measurement
# is in docs/design-notes.md, "--keep auto").
MIN_VAL_TO_PICK = 1000


@dataclass(frozen=True)
class Plan:
    """A resolved config and the objects it implies."""

    config: TrainConfig
    asked: TrainConfig  # the options as given: what is None or "auto" there is ours to pick
    source: DataSource
    arch: Architecture
    info: ModelInfo
    pre: Preprocess  # mean/std are provisional for scratch models until finalize()
    augment: tuple[str, ...]
    device: torch.device
    channels_last: bool
    compile: bool
    find_lr: bool = False  # --lr find: the range test picks the rate once the data is loaded
    notes: tuple[str, ...] = ()  # what the run chose about its input, said first
    cluster: Cluster = SINGLE  # who this process is: rank 0 writes, all train
    sync_bn: bool = False  # batch norm statistics over the whole global batch
    deadline: Deadline | None = None  # --time: when the last training step must be done
    facts: ImageFacts | None = None  # what the files' headers said (folders and CSVs)
    task: Task = field(default_factory=SingleLabel)  # what the labels ask of the model

    @cached_property
    def phases(self) -> tuple[Phase, ...]:
        """The phases the run trains in, each decided once per plan (a changed plan,
        such as --time's fewer epochs, is a new plan with its own)."""
        return phases(self.config)


def resolve_config(config: TrainConfig, card: ModelCard | None = None,
                   cluster: Cluster = SINGLE, budget_size: int | None = None) -> Plan:
    """Everything the options decide, before any image is loaded.

    ``card``: a resumed run's (or an --init-from run's) saved model card, whose
    architecture and preprocessing (with the mean/std measured when it started) are
    kept as they were. ``cluster``:
    this process's place in a distributed run. ``budget_size``: the input side that
    :func:`fit_budget` chose for --time.
    """
    if card is None:
        check_weights_file(config.weights)  # first, as the command's quick check: before the data
    source = describe(config.data)
    builtin = source.builtin
    peek = source.peek() if card is None else Peek(())
    facts = peek.facts
    model, small = model_for(config, source, facts)
    arch, info = resolve(model)
    if card is not None:
        arch = card.architecture

    mode = config.mode
    if mode == "auto":
        mode = "fine-tune" if info.is_pretrained else "scratch"
    if mode in ("fine-tune", "features") and not info.is_pretrained and not config.weights:
        raise CnnkitError(f"--mode {mode} needs a pretrained model, and {arch.name!r} trains "
                          "from scratch. Pick a pretrained one (e.g. --model efficientnet_lite0; "
                          "`cnnkit models` lists them) or pass --weights FILE.")
    if mode == "features" and cluster.distributed:
        raise CnnkitError(f"--mode features fits its head in one solve on one process, so it "
                          f"cannot use {cluster.world} processes: run it without --devices or "
                          "torchrun (or use --mode fine-tune).")
    if mode == "features" and config.lr == "find":
        raise CnnkitError("--lr find picks a rate for epochs of training, and --mode features "
                          "fits its head in one solve. Drop --lr find, or use --mode "
                          "fine-tune.")
    if mode == "features" and config.ema:
        raise CnnkitError("--ema averages the weights over training steps, and --mode features "
                          "has none (it fits its head to fixed features in one solve). Drop "
                          "--ema, or use --mode fine-tune.")
    if mode != "scratch" and not config.weights and card is None:
        from cnnkit.models.hub import check_weights

        check_weights(arch.name, info.weights_from)  # offline: one line now, not after the data
    bn_stats = config.bn_stats
    if bn_stats == "auto":
        bn_stats = "update" if mode == "scratch" else "keep"
    if mode == "scratch" and bn_stats == "keep":
        raise CnnkitError("--bn-stats keep holds batch norm at pretrained statistics, and "
                          "--mode scratch starts from random weights, which have none. Drop "
                          "--bn-stats, or use --mode fine-tune.")
    if mode == "features" and config.drop_path:
        raise CnnkitError("--drop-path regularises a base while it trains, and --mode features "
                          "never trains the base. Drop --drop-path, or use --mode fine-tune.")
    if mode == "features" and bn_stats == "update":
        raise CnnkitError("--bn-stats update re-estimates batch norm while the base trains, "
                          "and --mode features never trains the base. Drop --bn-stats, or "
                          "use --mode fine-tune.")

    if info.channels is not None:
        channels = info.channels
    elif config.channels is not None:
        channels = config.channels
    elif builtin is not None:
        channels = builtin.channels
    else:  # grey files stay grey; colour or unknown ones are RGB
        channels = facts.channels if facts is not None else 3
    if info.channels is not None and config.channels not in (None, info.channels):
        raise CnnkitError(f"{arch.name} takes {info.channels}-channel images; drop --channels "
                          "(grey images are turned into 3 channels for it).")

    img_size = input_side(config, source, info, facts, budget_size)
    mean = info.mean or (0.5,) * channels
    std = info.std or (0.5,) * channels
    crop_pct = info.crop_pct if info.is_pretrained else 1.0
    pre = Preprocess(img_size, channels, tuple(mean), tuple(std), info.interpolation, crop_pct)

    augment = config.augment
    mirror = mirror_reason(peek.classes)
    if augment == "auto":
        if mode == "fine-tune":  # random crops and flips, as timm fine-tunes
            augment = "flip+crop"
        else:
            augment = builtin.augment if builtin else "flip+crop"
        if mirror:  # a mirrored 2 or "left" is another class
            augment = "+".join(t for t in augment.split("+") if t != "flip") or "none"
    device = pick_device(config.device, cluster.local_rank if cluster.distributed else None)
    if cluster.distributed and config.sync_bn and device.type != "cuda":
        raise CnnkitError("--sync-bn synchronises batch norm across GPUs, and this run's "
                          f"processes use the {device.type.upper()} (PyTorch's SyncBatchNorm "
                          "runs on GPUs only): drop --sync-bn; each process then normalises "
                          "by its own share of the batch.")
    sync_bn = cluster.distributed and device.type == "cuda" and config.sync_bn is not False
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    precision = settle_precision(precision, device.type)  # fp16 on a CPU: bf16, said

    numbers = _numbers(config, mode, builtin, device, cluster.world)
    channels_last = config.channels_last == "on" or (
        config.channels_last == "auto" and device.type in ("cpu", "cuda"))
    resolved = config.replace(
        model=model, mode=mode, img_size=img_size, channels=channels, augment=augment,
        precision=precision, device=device.type if cluster.distributed else str(device),
        bn_stats=bn_stats, **numbers)
    if card is not None:
        pre = card.preprocess
    notes = () if card is not None else (
        *((small,) if small else ()),
        *input_notes(resolved, config, info, facts, mirror, budget_size is not None))
    task = card.task if card is not None else get_task(source.task)
    return Plan(resolved, config, source, arch, info, pre, augment_tokens(augment), device,
                channels_last, _compiles(resolved, device), find_lr=config.lr == "find",
                notes=notes, cluster=cluster, sync_bn=sync_bn, facts=facts, task=task)


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
    config = TrainConfig(data=source.spec)
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
        aug = cfg.augment.replace("+", ", ")
        no_flip = f" - no flip: {mirror}" if mirror and asked.augment == "auto" else ""
        lines.append(f"augmentation: {aug}{no_flip} (--augment to change)")
    if (cfg.mode == "scratch" and asked.img_size is None and facts is not None
            and size <= HINT_UPSIZE_BELOW and info.img_size is None):
        larger = min(2 * size, FOLDER_SCRATCH_SIZE)
        lines.append(f"hint: small images can gain accuracy at a larger input, for time: "
                     f"--img-size {larger} is {(larger / size) ** 2:.0f}x the pixels per "
                     "image")
    return tuple(lines)


def finalize(plan: Plan, splits: Splits) -> Plan:
    """What needs the loaded data, decided once: defaults for few images, which epoch's
    model to keep, a scratch model's mean/std and the features mode's taps."""
    cfg = plan.config
    changes = small_data_changes(plan.asked, cfg, len(splits.train))
    world = plan.cluster.world
    if changes.get("batch_size", 0) % world:  # the global batch splits evenly
        changes["batch_size"] = max(world, int(changes["batch_size"]) // world * world)
    if changes:
        log.info(f"{len(splits.train):,} training images: "
                 + ", ".join(f"{k.replace('_', ' ')} {v} (not {getattr(cfg, k)})"
                             for k, v in changes.items())
                 + " for a small data set ("
                 + " or ".join(f"--{k.replace('_', '-')}" for k in changes) + " to choose)")
        cfg = cfg.replace(**_numbers(plan.asked.replace(**changes), cfg.mode, plan.source.builtin,
                                     plan.device, plan.cluster.world))
    cfg = _trained_start_rate(plan.asked, cfg, len(splits.train))
    if cfg.keep == "auto" and cfg.mode != "features":
        val_images = len(splits.val) if splits.val is not None else 0
        keep = "best" if keeps_best("auto", val_images, cfg.patience) else "last"
        if val_images and keep == "last":
            log.info(f"{val_images} validation images are too few to pick the best epoch by: "
                     "keeping the last epoch's model (--keep best to pick anyway)")
        cfg = cfg.replace(keep=keep)
    pre = plan.pre
    if not plan.info.is_pretrained and cfg.weights is None and cfg.init_from is None:
        mean, std = data_stats(splits.train.images)
        if pre.channels != splits.train.channels:
            mean, std = (mean[0],) * pre.channels, (std[0],) * pre.channels
        pre = replace(pre, mean=mean, std=std)
    arch = plan.arch
    if cfg.mode == "features":
        from cnnkit.models.pretrained import feature_kwargs

        extra = feature_kwargs(arch.name, plan.info)
        if extra:
            arch = replace(arch, kwargs=extra)
    return replace(plan, config=cfg, pre=pre, arch=arch, compile=_compiles(cfg, plan.device))


def _trained_start_rate(asked: TrainConfig, cfg: TrainConfig, n_train: int) -> TrainConfig:
    """A default rate from a trained start (an --init-from run, or fine-tuning after the
    linear probe) shrinks for a short run (:func:`trained_start_share`)."""
    trained = cfg.init_from is not None or (cfg.mode == "fine-tune" and cfg.probe)
    if not trained or asked.lr not in (None, "find") or cfg.mode == "features":
        return cfg
    steps = math.ceil(n_train / cfg.batch_size) * (cfg.epochs - (cfg.head_epochs or 0))
    share = trained_start_share(steps)
    if share == 1.0:
        return cfg
    lr = float(f"{cfg.lr * share:.3g}")
    start = "--init-from" if cfg.init_from else "the linear probe"
    log.info(f"a trained start ({start}) and {steps:,} steps: peak rate {lr:g}, "
             f"{share:.2g} of {cfg.lr:g}, so a short run does not shake off what the start "
             "knows (--lr to choose)")
    return cfg.replace(lr=lr)


def _numbers(config: TrainConfig, mode: str, builtin: BuiltinSet | None,
             device: torch.device, world: int = 1) -> dict[str, Any]:
    """Epochs, batch size, learning rate, weight decay and head epochs.

    The batch size is the global batch of all ``world`` processes together, so the
    learning rate and the results do not depend on how many processes share it.
    """
    if config.epochs is not None:
        epochs = config.epochs
    elif builtin is not None:
        epochs = builtin_epochs(builtin.name, mode)
    else:
        epochs = 10 if mode == "fine-tune" else 5 if mode == "features" else 30
    batch_size = config.batch_size or (256 if device.type == "cuda" else 128)
    if batch_size % world:
        if config.batch_size is not None:
            low = max(world, batch_size - batch_size % world)
            raise CnnkitError(f"--batch-size is the global batch, shared evenly by the {world} "
                              f"processes, so it must be a multiple of {world}: use {low} or "
                              f"{low + world}. Received: {batch_size}")
        batch_size = max(world, batch_size - batch_size % world)
    given_lr = None if config.lr == "find" else config.lr  # the finder runs after loading
    lr = given_lr or PEAK_LR[config.optimizer] * batch_size / 256
    if mode == "fine-tune" and given_lr is None:
        lr = FINE_TUNE_LR.get(config.optimizer, lr / 8)
    weight_decay = WEIGHT_DECAY[config.optimizer] if config.weight_decay is None \
        else config.weight_decay
    head_epochs = config.head_epochs
    if mode == "fine-tune" and head_epochs is None:
        # With the linear probe the head starts fitted; without it, train it a while.
        head_epochs = 0 if config.probe else max(1, min(3, epochs // 4))
    if mode == "fine-tune" and head_epochs >= epochs:
        raise CnnkitError(f"--head-epochs ({head_epochs}) must be fewer than --epochs ({epochs}) "
                          "so that fine-tuning gets at least one epoch.")
    return {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "head_epochs": head_epochs if mode == "fine-tune" else None}


def _compiles(config: TrainConfig, device: torch.device) -> bool:
    return config.compile == "on" or (config.compile == "auto" and device.type == "cuda"
                                      and config.epochs >= 10)


def keeps_best(keep: str, val_images: int, patience: int) -> bool:
    """Whether model.safetensors is the best epoch by validation accuracy (else the last)."""
    if keep != "auto":
        return keep == "best"
    return val_images > 0 and (patience > 0 or val_images >= MIN_VAL_TO_PICK)


def small_data_batch(n_train: int, batch_size: int, min_steps: int = 25) -> int:
    """Halve the default batch until an epoch has ``min_steps`` steps (few-image runs)."""
    while batch_size > 16 and n_train / batch_size < min_steps:
        batch_size //= 2
    return batch_size


SMALL_FINE_TUNE = 5_000  # fine-tuning on fewer images gets more epochs (they are cheap)


def small_data_changes(config: TrainConfig, resolved: TrainConfig, n_train: int
                       ) -> dict[str, float]:
    """Defaults that depend on how many images there are, for options the user left open."""
    changes: dict[str, float] = {}
    if config.batch_size is None and resolved.mode != "features":  # features: no batches
        batch = small_data_batch(n_train, resolved.batch_size)
        if batch != resolved.batch_size:
            changes["batch_size"] = batch
    if config.epochs is None and resolved.mode == "fine-tune" and n_train < SMALL_FINE_TUNE \
            and resolved.epochs < 10:
        changes["epochs"] = 10  # few images fit better in more epochs (design-notes.md)
    return changes


def builtin_epochs(name: str, mode: str) -> int:
    if mode == "features":
        return 5
    if mode == "fine-tune":
        return 6
    return {"fashion-mnist": 10, "digits": 30, "shapes": 15}.get(name, 20)


def data_stats(images: torch.Tensor, limit: int = 20_000) -> tuple[tuple[float, ...],
                                                                    tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in 0..1 units (a seeded sample)."""
    n = len(images)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit]
    x = images[idx].float() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


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
        numbers = _numbers(asked.replace(**extra), other.config.mode, other.source.builtin,
                           other.device, plan.cluster.world)
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
