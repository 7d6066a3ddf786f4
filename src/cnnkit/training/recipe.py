"""Sensible defaults: fill every "decide for me" value of a config from data and model.

Two steps, each run once per training run: :func:`resolve_config` decides all it can
from the options (and the model, the device and what the data is), and
:func:`finalize` decides the rest once the data is loaded (small-data batch and
epochs, ``--keep auto``, a scratch model's mean/std, the features mode's taps).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from cnnkit import log
from cnnkit.config import TrainConfig, augment_tokens
from cnnkit.data.builtin import BuiltinSet
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.probe import ImageFacts, Peek, mirror_reason
from cnnkit.data.source import DataSource
from cnnkit.data.sources import Splits, describe
from cnnkit.device import pick_device
from cnnkit.errors import CnnkitError
from cnnkit.modelfile import ModelCard
from cnnkit.models.build import Architecture, resolve
from cnnkit.models.registry import ModelInfo
from cnnkit.training.distributed import SINGLE, Cluster, device_for

DEFAULT_PRETRAINED = "efficientnet_lite0"
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


def resolve_config(config: TrainConfig, card: ModelCard | None = None,
                   cluster: Cluster = SINGLE) -> Plan:
    """Everything the options decide, before any image is loaded.

    ``card``: a resumed run's (or an --init-from run's) saved model card, whose
    architecture and preprocessing (with the mean/std measured when it started) are
    kept as they were. ``cluster``:
    this process's place in a distributed run.
    """
    source = describe(config.data)
    builtin = source.builtin
    model = config.model or (builtin.default_model if builtin else DEFAULT_PRETRAINED)
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

    peek = source.peek() if card is None else Peek(())
    facts = peek.facts
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

    # a generated set's own size (shapes:size=16) wins over the defaults
    img_size = config.img_size or info.img_size or source.native_size or (
        builtin.default_img_size if builtin else own_size(facts))
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
    device = device_for(cluster, pick_device(config.device))
    if cluster.distributed and config.sync_bn and device.type != "cuda":
        raise CnnkitError("--sync-bn synchronises batch norm across GPUs, and this run's "
                          f"processes use the {device.type.upper()} (PyTorch's SyncBatchNorm "
                          "runs on GPUs only): drop --sync-bn; each process then normalises "
                          "by its own share of the batch.")
    sync_bn = cluster.distributed and device.type == "cuda" and config.sync_bn is not False
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"

    numbers = _numbers(config, mode, builtin, device, cluster.world)
    channels_last = config.channels_last == "on" or (
        config.channels_last == "auto" and device.type in ("cpu", "cuda"))
    resolved = config.replace(
        model=model, mode=mode, img_size=img_size, channels=channels, augment=augment,
        precision=precision, device=device.type if cluster.distributed else str(device),
        bn_stats=bn_stats, **numbers)
    if card is not None:
        pre = card.preprocess
    notes = () if card is not None else input_notes(resolved, config, info, facts, mirror)
    return Plan(resolved, config, source, arch, info, pre, augment_tokens(augment), device,
                channels_last, _compiles(resolved, device), find_lr=config.lr == "find",
                notes=notes, cluster=cluster, sync_bn=sync_bn)


def own_size(facts: ImageFacts | None) -> int:
    """A scratch model's input side for a folder's or CSV's images: their own, within
    bounds."""
    if facts is None or facts.side > FOLDER_SCRATCH_SIZE:
        return FOLDER_SCRATCH_SIZE
    return UPSIZE_TO if facts.side < MIN_OWN_SIZE else facts.side


def input_notes(cfg: TrainConfig, asked: TrainConfig, info: ModelInfo,
                facts: ImageFacts | None, mirror: str | None) -> tuple[str, ...]:
    """The run's first lines: input size and channels, augmentation, and when a larger
    input is likely to pay, the option for it."""
    size, channels = cfg.img_size, cfg.channels
    colour = "grey" if channels == 1 else "RGB"
    if asked.img_size is not None:
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
