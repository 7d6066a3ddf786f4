"""A run's plan: :class:`Plan`, and the two steps that fill every "decide for me" value
of a config from the data and the model.

Two steps, each run once per training run: :func:`resolve_config` decides all it can
from the options (and the model, the device and what the data is), and
:func:`finalize` decides the rest once the data is loaded (small-data batch and
epochs, ``--keep auto``, a scratch model's mean/std, the features mode's taps). The
numbers they fill in (epochs, batch size, learning rate) are
:mod:`cnnkit.training.hyperparams`'s, the model and input side for the images
:mod:`cnnkit.training.input_choice`'s; ``--time``'s plan and the other plans made from
a plan to cost them are :mod:`cnnkit.training.estimate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import torch

from cnnkit.artifacts.modelfile import ModelCard
from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.device import pick_device, settle_precision
from cnnkit.base.errors import CnnkitError
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.probe import ImageFacts, Peek, default_augment, mirror_reason
from cnnkit.data.source import DataSource
from cnnkit.data.sources import Splits, describe
from cnnkit.models.build import Architecture, resolve
from cnnkit.models.registry import ModelInfo
from cnnkit.tasks.base import Task
from cnnkit.tasks.registry import get_task
from cnnkit.tasks.single_label import SingleLabel
from cnnkit.training.clock import Deadline
from cnnkit.training.distributed import SINGLE, Cluster
from cnnkit.training.hyperparams import (
    keeps_best,
    resolve_numbers,
    small_data_changes,
    trained_start_rate,
)
from cnnkit.training.input_choice import input_notes, input_side, model_for
from cnnkit.training.quick_checks import check_weights_file
from cnnkit.training.transfer import Phase, phases


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
    if card is None:  # a resumed run's options were checked when it started
        _fine_tune_only(config, mode, arch.name)
        if mode == "features":
            _no_steps(config)

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
    # A pretrained model's centre crop (timm's crop_pct) for files decoded larger; a
    # built-in set's images are whole items at their own size, trained and tested uncropped,
    # so its card says so and predict does not crop them either.
    crop_pct = info.crop_pct if info.is_pretrained and builtin is None else 1.0
    data_channels = builtin.channels if builtin is not None else (
        facts.channels if facts is not None else 3)
    pre = Preprocess(img_size, channels, tuple(mean), tuple(std), info.interpolation, crop_pct,
                     grey=channels == 3 and data_channels == 1)

    augment = config.augment
    mirror = mirror_reason(peek.classes)
    if augment == "auto":
        augment = default_augment(peek.classes, builtin.augment if builtin else None,
                                  fine_tune=mode == "fine-tune")
    if mirror and card is None and budget_size is None:
        _warn_mirrored(config, mirror)
    # The run's first lines, said where its input is decided.
    notes = () if card is not None else (
        *((small,) if small else ()),
        *input_notes(config.replace(model=model, mode=mode, img_size=img_size,
                                    channels=channels, augment=augment),
                     config, info, facts, mirror, budget_size is not None))
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

    numbers = resolve_numbers(config, mode, builtin, device, cluster.world)
    channels_last = config.channels_last == "on" or (
        config.channels_last == "auto" and device.type in ("cpu", "cuda"))
    resolved = config.replace(
        model=model, mode=mode, img_size=img_size, channels=channels, augment=augment,
        precision=precision, device=device.type if cluster.distributed else str(device),
        bn_stats=bn_stats, **numbers)
    if card is not None:
        pre = card.preprocess
    task = card.task if card is not None else get_task(source.task)
    return Plan(resolved, config, source, arch, info, pre, resolved.augments, device,
                channels_last, _compiles(resolved, device), find_lr=config.lr == "find",
                notes=notes, cluster=cluster, sync_bn=sync_bn, facts=facts, task=task)


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
        cfg = cfg.replace(**resolve_numbers(plan.asked.replace(**changes), cfg.mode,
                                            plan.source.builtin, plan.device,
                                            plan.cluster.world))
    cfg = trained_start_rate(plan.asked, cfg, len(splits.train))
    val_images = len(splits.val) if splits.val is not None else 0
    if not val_images and cfg.mode != "features":
        _need_validation(cfg)
    if cfg.keep == "auto" and cfg.mode != "features":
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


def _warn_mirrored(config: TrainConfig, mirror: str) -> None:
    """Mirrors asked for, by name, where the class names say a mirror is another class:
    said, not refused, since the names are only a hint (auto leaves flips out)."""
    if "flip" in config.augments:
        log.warn(f"--augment flip mirrors training images, and {mirror}: a mirrored image "
                 "may show another class; leave flip out unless mirrors keep the class")
    if config.tta:
        log.warn(f"--tta averages each test image's scores with its mirror's, and {mirror}: "
                 "a mirrored image may show another class, so the test figures may be "
                 "lower than without --tta")


def _no_steps(config: TrainConfig) -> None:
    """--mode features fits its head in one full-batch L-BFGS solve with a fixed L2 (as
    scikit-learn's LogisticRegression), so the options of stepped training would be
    dropped without a word."""
    defaults = {f: TrainConfig.__dataclass_fields__[f].default
                for f in ("optimizer", "schedule", "label_smoothing")}
    given = [f"--{name.replace('_', '-')}" for name, value in (
        ("lr", isinstance(config.lr, (int, float))), ("weight_decay", config.weight_decay
                                                      is not None),
        ("warmup_epochs", config.warmup_epochs is not None), ("patience", config.patience),
        *((name, getattr(config, name) != value) for name, value in defaults.items()))
        if value]
    if given:
        named = " and ".join(given) if len(given) < 3 else \
            ", ".join(given[:-1]) + f" and {given[-1]}"
        raise CnnkitError(f"{named} shape{'s' if len(given) == 1 else ''} training by steps, "
                          "and --mode features fits its head in one L-BFGS solve with a fixed "
                          "L2 strength (no learning rate, schedule or early stopping). Drop "
                          f"{named}, or use --mode fine-tune.")


def _fine_tune_only(config: TrainConfig, mode: str, model: str) -> None:
    """--unfreeze, --head-epochs and --lr-decay shape a fine-tune's phases; any other mode
    would drop them without a word."""
    default = TrainConfig.__dataclass_fields__["lr_decay"].default
    given = [flag for flag, value in (("--unfreeze", config.unfreeze != "all"),
                                      ("--head-epochs", bool(config.head_epochs)),
                                      ("--lr-decay", config.lr_decay != default)) if value]
    if mode == "fine-tune" or not given:
        return
    start = "its --weights" if config.weights else "random weights"
    how = ("its head is fitted to a base that never trains" if mode == "features" else
           f"{model} trains every layer from {start}")
    auto = " (auto: the model has no pretrained weights)" if config.mode == "auto" else ""
    named = " and ".join(given) if len(given) < 3 else f"{given[0]}, {given[1]} and {given[2]}"
    raise CnnkitError(f"{named} shape{'s' if len(given) == 1 else ''} the "
                      f"phases of --mode fine-tune, and this run is --mode {mode}{auto}: "
                      f"{how}. Drop {named}, or fine-tune a pretrained model.")


def _need_validation(cfg: TrainConfig) -> None:
    """--keep best and --patience read validation; without it every epoch counted as
    better, so they did nothing and said nothing."""
    asked = [flag for flag, on in (("--keep best", cfg.keep == "best"),
                                   (f"--patience {cfg.patience}", cfg.patience > 0)) if on]
    if asked:
        why = " (--val-fraction 0)" if cfg.val_fraction == 0 else ""
        raise CnnkitError(f"{' and '.join(asked)} read{'s' if len(asked) == 1 else ''} "
                          f"validation accuracy, and this run has no validation split{why}: "
                          f"give it one (--val-fraction 0.1), or drop {' and '.join(asked)} "
                          "(the last epoch is kept).")


def _compiles(config: TrainConfig, device: torch.device) -> bool:
    return config.compile == "on" or (config.compile == "auto" and device.type == "cuda"
                                      and config.epochs >= 10)


def data_stats(images: torch.Tensor, limit: int = 20_000) -> tuple[tuple[float, ...],
                                                                    tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in 0..1 units (a seeded sample)."""
    n = len(images)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit]
    x = images[idx].float() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
