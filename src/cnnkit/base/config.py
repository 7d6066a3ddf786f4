"""One frozen configuration for a training run.

Defaults live here and nowhere else. ``None`` means "decide from the data and the
model"; :func:`cnnkit.training.recipe.resolve` fills those in, and the resolved config is
saved with every run so that it can be read, repeated and resumed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, fields
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

from cnnkit.base.errors import CnnkitError
from cnnkit.base.log import cut, shown

MODES = ("auto", "fine-tune", "features", "scratch")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")
IMBALANCE = ("auto", "weighted-loss", "balanced-sampling", "none")
KEEP = ("auto", "best", "last")
AUGMENTS = ("flip", "vflip", "crop", "erase", "color", "mixup", "cutmix")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SWITCHES = ("auto", "on", "off")
BN_STATS = ("auto", "keep", "update")
# The largest sensible input side: ImageNet models are trained at 224-600 px, and one
# batch of 32 RGB float images at 2048 px is already 1.6 GB before any activation.
MAX_IMG_SIZE = 2048


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on."""

    data: str
    model: str | None = None
    mode: str = "auto"
    weights: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str = "adamw"
    lr: float | str | None = None  # "find": the learning-rate finder picks it
    weight_decay: float | None = None
    schedule: str = "onecycle"
    warmup_epochs: float | None = None  # None: the schedule's own warm-up
    label_smoothing: float = 0.1
    ema: float = 0.0
    drop_path: float = 0.0
    augment: str = "auto"
    img_size: int | None = None
    channels: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    per_class: int | None = None
    seed: int = 0
    patience: int = 0
    keep: str = "auto"
    imbalance: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    channels_last: str = "auto"
    compile: str = "auto"
    sync_bn: bool | None = None  # None: on for a distributed run on GPUs
    tta: bool = False
    head_epochs: int | None = None
    probe: bool = True
    unfreeze: str = "all"
    lr_decay: float = 0.7
    bn_stats: str = "auto"
    out: str = "runs"
    name: str | None = None
    plots: bool = True
    check: bool = True  # the short data check at the start (cnnkit check, without decoding)
    track: str = "none"  # mlflow, tensorboard, or both joined by '+'
    keep_checkpoint: bool = False  # keep the training state of a finished run
    init_from: str | None = None  # a run whose weights (and architecture) this one starts from
    time: float | None = None  # a budget in seconds for the whole run (--time 10m)

    def __post_init__(self) -> None:
        _choice("mode", self.mode, MODES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("imbalance", self.imbalance, IMBALANCE)
        _choice("keep", self.keep, KEEP)
        _choice("precision", self.precision, PRECISIONS)
        _choice("channels_last", self.channels_last, SWITCHES)
        _choice("compile", self.compile, SWITCHES)
        _choice("bn_stats", self.bn_stats, BN_STATS)
        # --augment and --track are parsed here, once (a bad spec fails as the config is
        # made); what reads them later reads the parsed tokens
        _ = self.augments, self.trackers
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        check_img_size(self.img_size)
        _positive("per_class", self.per_class)
        if self.channels is not None and self.channels not in (1, 3):
            raise CnnkitError(f"--channels must be 1 or 3. Received: {self.channels}")
        if self.lr is not None and self.lr != "find" and not (
                isinstance(self.lr, (int, float)) and 0 < self.lr < math.inf):
            raise CnnkitError(f"--lr takes a positive number or 'find' (run the learning-rate "
                              f"finder first). Received: {self.lr!r}")
        if self.weight_decay is not None and not 0 <= self.weight_decay < math.inf:
            raise CnnkitError("--weight-decay takes 0 (none) or a positive number (leave it "
                              f"out for the optimizer's default). Received: {self.weight_decay!r}")
        if not 0 < self.lr_decay <= 1:
            raise CnnkitError("--lr-decay takes the factor by which each block's learning "
                              "rate shrinks going down the network, in (0, 1]: 1 is none. "
                              f"Received: {self.lr_decay!r}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                flag = name.replace("_", "-")
                raise CnnkitError(f"--{flag} must be in [0, 1). Received: {value}")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < math.inf:
            raise CnnkitError("--warmup-epochs takes the epochs of learning-rate warm-up at the "
                              "start of each phase (0: none; default: the schedule's own). "
                              f"Received: {self.warmup_epochs}")
        if not 0 <= self.label_smoothing < 1:
            raise CnnkitError("--label-smoothing must be in [0, 1). "
                              f"Received: {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise CnnkitError("--ema takes the decay of the weight average per step, in "
                              f"[0, 1): 0 is off, 0.999 averages about the last 1,000 steps. "
                              f"Received: {self.ema}")
        if not 0 <= self.drop_path < 1:
            raise CnnkitError("--drop-path takes the chance that the last residual block is "
                              f"skipped, in [0, 1): 0 is off, 0.1 is light. "
                              f"Received: {self.drop_path}")
        if self.unfreeze != "all" and not (self.unfreeze.isdigit() and int(self.unfreeze) > 0):
            raise CnnkitError(
                f"--unfreeze takes 'all' or a number of top blocks. Received: {self.unfreeze!r}"
            )
        if not 0 <= self.seed < 2**32:  # numpy's seeds (multi-label splits) and torch's
            raise CnnkitError(f"--seed takes a whole number from 0 to {2**32 - 1:,}. "
                              f"Received: {self.seed}")
        if self.patience < 0:
            raise CnnkitError(f"--patience must be 0 (off) or more. Received: {self.patience}")
        if self.time is not None and not (isinstance(self.time, (int, float))
                                          and math.isfinite(self.time) and self.time > 0):
            raise CnnkitError(f"--time takes a positive duration such as 90s, 10m or 1h30m. "
                              f"Received: {self.time!r}")

    @cached_property
    def augments(self) -> tuple[str, ...]:
        """``augment`` parsed into its tokens (``auto`` and ``none``: none)."""
        return augment_tokens(self.augment)

    @cached_property
    def trackers(self) -> tuple[str, ...]:
        """``track`` parsed: the trackers asked for, in order (``none``: none)."""
        return track_tokens(self.track)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def of(cls, config: TrainConfig | str | None, options: dict[str, Any]) -> TrainConfig:
        """The config a call means: a data name with options, options alone, or a config
        with options changed (``cnnkit.train``, ``cnnkit.lr_find``, ``cnnkit.ray.train``)."""
        if isinstance(config, str):
            return cls.from_dict({"data": config, **options})
        if config is None:
            return cls.from_dict(options)
        return config.replace(**options) if options else config

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys fail loudly instead of being ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(cut(str(k), 40) for k in set(values) - known)
        if unknown:
            more = f" and {len(unknown) - 10:,} more" if len(unknown) > 10 else ""
            raise CnnkitError(
                f"Unknown training option(s): {', '.join(unknown[:10])}{more}"
                f"{_meant(unknown[:10], known)}. Known options: {', '.join(sorted(known))}."
            )
        if "data" not in values:
            raise CnnkitError("A training config needs 'data' (a folder, a CSV or a built-in set).")
        types = {f.name: str(f.type) for f in fields(cls)}
        return cls(**{k: _coerce(k, v, types[k]) for k, v in values.items()})


def _meant(unknown: list[str], known: set[str]) -> str:
    """' (did you mean epochs, per_class?)' for misspelt keys: a near name, or the flag's
    spelling with dashes ('per-class')."""
    import difflib

    near = []
    for key in unknown:
        plain = key.strip().lstrip("-").replace("-", "_").lower()
        match = plain if plain in known else next(
            iter(difflib.get_close_matches(plain, known, n=1, cutoff=0.75)), None)
        if match and match not in near:
            near.append(match)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def _coerce(name: str, value: Any, annotation: str) -> Any:
    """A value from a config file as its field's type, or a message quoting it.

    ``epochs: 3.0`` is 3 and ``lr: 1`` is 1.0; ``epochs: three`` is a mistake.
    """
    if value is None and "None" in annotation:
        return None
    kind = annotation.split("|")[0].strip()
    flag = "--" + name.replace("_", "-")
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int":
        if is_number and float(value).is_integer():
            return int(value)
        raise CnnkitError(f"{flag} takes a whole number. Received: {shown(value)}")
    if kind == "float":
        if name == "lr" and value == "find":
            return value
        if name == "time" and isinstance(value, str):
            return parse_duration(value)
        if is_number:
            return float(value)
        raise CnnkitError(f"{flag} takes a number. Received: {shown(value)}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise CnnkitError(f"{flag} takes true or false. Received: {shown(value)}")
    if isinstance(value, str):
        return value
    if is_number:  # unfreeze: 2, name: 2024
        return str(value)
    raise CnnkitError(f"{flag} takes text. Received: {shown(value)}")


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)")


def parse_duration(text: str) -> float:
    """``--time``: a duration with units, ``90s``, ``10m``, ``1.5h`` or ``1h30m``, in
    seconds; a whole number after hours or minutes is the next unit (``1h30``, ``2m30``).
    A bare number is refused: minutes and seconds are both plausible."""
    spec = text.strip().lower().replace(" ", "")
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    pos, seconds, last = 0, 0.0, ""
    for match in _DURATION.finditer(spec):
        if match.start() != pos:
            break
        last = match.group(2)[0]
        seconds += float(match.group(1)) * units[last]
        pos = match.end()
    tail = re.fullmatch(r"\d+", spec[pos:]) if last in ("h", "m") else None
    if tail is not None:  # 1h30: minutes; 2m30: seconds
        seconds += int(tail.group(0)) * units["m" if last == "h" else "s"]
        pos = len(spec)
    if not spec or pos != len(spec):
        hint = (f" (--time {spec}m for minutes)" if re.fullmatch(r"\d+(\.\d+)?", spec)
                else "")
        raise CnnkitError(f"--time takes a duration with units, such as {DURATION_FORMS}"
                          f"{hint}. Received: {text!r}")
    if seconds <= 0:
        raise CnnkitError(f"--time must be longer than 0 s. Received: {text!r}")
    return seconds


DURATION_FORMS = "90s, 10m, 1.5h or 1h30m"


def file_duration(value: Any, source: str) -> Any:
    """``time`` as a config file gives it: the same rule as ``--time``, a duration with
    units (a bare number could mean seconds or minutes: YAML reads ``1:30`` as 90 too);
    text is left for :func:`parse_duration`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        shown_value = f"{value:g}" if isinstance(value, float) else str(value)
        raise CnnkitError(f"{source}: time takes a duration with units, as --time does, such "
                          f"as {DURATION_FORMS} ('{shown_value}m' for minutes, "
                          f"'{shown_value}s' for seconds). Received: {shown_value}")
    return value


def duration_text(seconds: float) -> str:
    """``seconds`` as a duration with units that reads back to exactly the same number
    (a run's config.json, which --config reads): ``10m``, ``1h30m``, ``2.5s``."""
    if seconds >= 1 and float(seconds).is_integer():
        return format_duration(seconds)
    return format(Decimal(repr(float(seconds))), "f") + "s"  # the shortest exact digits


def format_duration(seconds: float) -> str:
    """``--time``'s own form back: 600 -> ``10m``, 5400 -> ``1h30m``, 45 -> ``45s``."""
    if seconds < 1:
        return f"{seconds:g}s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs}s" if secs or not total else ""]
    return "".join(parts)


# rotateN, shearN (largest angle in degrees), zoomF, shiftF (fraction of the side)
AUGMENT_PARAMETRIC = {"rotate": (180.0, "rotate15"), "shear": (45.0, "shear10"),
                      "zoom": (0.9, "zoom0.2"), "shift": (0.5, "shift0.1")}
AUGMENT_PRESETS = ("randaugment", "trivialaugment")
_PARAMETRIC = re.compile(r"^(rotate|zoom|shift|shear)(\d+(?:\.\d+)?|\.\d+)?$")


def augment_tokens(spec: str) -> tuple[str, ...]:
    """Parse an augmentation spec such as ``"flip+rotate15+zoom0.2"``; ``auto`` and
    ``none`` pass."""
    if spec in ("auto", "none"):
        return ()
    tokens = tuple(t.strip() for t in spec.replace(",", "+").split("+") if t.strip())
    if not tokens:  # '' or '+': a run without augmentation says 'none'
        raise CnnkitError(f"--augment {spec!r} names no augmentation: use 'none' for none, "
                          "'auto' for the default, or e.g. flip+crop.")
    kinds: list[str] = []
    for t in tokens:
        match = _PARAMETRIC.match(t)
        if match:
            kind, value = match.group(1), match.group(2)
            limit, example = AUGMENT_PARAMETRIC[kind]
            if value is None or not 0 < float(value) <= limit:
                raise CnnkitError(f"--augment {t!r}: {kind} takes a number above 0 and at "
                                  f"most {limit:g}, written after it (e.g. {example}).")
            kinds.append(kind)
        elif t in AUGMENTS or t in AUGMENT_PRESETS:
            kinds.append("preset" if t in AUGMENT_PRESETS else t)
        else:
            raise CnnkitError(
                f"Unknown augmentation {t!r} in --augment {spec!r}. Use 'auto', 'none' or a "
                f"'+'-joined list of: {', '.join(AUGMENTS)}, rotateN, zoomF, shiftF, shearN "
                f"(e.g. flip+rotate15+zoom0.2), or a preset: {', '.join(AUGMENT_PRESETS)}."
            )
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        what = "one preset" if twice[0] == "preset" else f"{twice[0]} once"
        raise CnnkitError(f"--augment {spec!r} names {what} at most; drop the repeat.")
    return tokens


TRACKERS = ("mlflow", "tensorboard")


def track_tokens(spec: str) -> tuple[str, ...]:
    """``--track``: ``none``, ``mlflow``, ``tensorboard`` or ``mlflow+tensorboard``."""
    if spec in ("none", ""):
        return ()
    tokens = tuple(dict.fromkeys(t.strip() for t in spec.replace(",", "+").split("+")
                                 if t.strip()))
    bad = [t for t in tokens if t not in TRACKERS]
    if bad or not tokens:
        raise CnnkitError(f"--track takes none, mlflow, tensorboard or mlflow+tensorboard. "
                          f"Received: {spec!r}")
    return tokens


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise CnnkitError(
            f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}. "
            f"Received: {shown(value)}"
        )


MAX_CONFIG_BYTES = 1024 * 1024


def check_img_size(value: int | None) -> None:
    """The one rule for an --img-size, wherever a command takes one (training, summary):
    positive and at most :data:`MAX_IMG_SIZE` (a larger input only exhausts memory)."""
    _positive("img_size", value)
    if value is not None and value > MAX_IMG_SIZE:
        raise CnnkitError(f"--img-size {value:,} is larger than any model needs: the largest "
                          f"sensible size is {MAX_IMG_SIZE} (models are trained at 224 to "
                          "600). Pick a size in that range.")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise CnnkitError(f"--{name.replace('_', '-')} must be positive. Received: {value}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a JSON or YAML file (for ``--config``); unknown keys fail later."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"Config file not found: {path}.")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CnnkitError(f"{path} is {path.stat().st_size:,} bytes; --config takes a file of "
                          f"option: value lines, at most {MAX_CONFIG_BYTES // 1024} KiB.")
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix == ".json" else parse_yaml(text, str(path))
    except UnicodeDecodeError:
        raise CnnkitError(f"{path} is not a text file; --config takes a YAML or JSON file of "
                          "option: value lines.") from None
    except json.JSONDecodeError as exc:
        raise CnnkitError(f"{path} is not valid JSON ({exc}).") from None
    except RecursionError:
        raise CnnkitError(f"{path} is nested too deeply; --config takes a file of option: "
                          "value lines.") from None
    if not isinstance(doc, dict):
        raise CnnkitError(f"{path} should hold a mapping of option: value (e.g. 'epochs: 3').")
    if "time" in doc:
        file_duration(doc["time"], str(path))
    return doc


def parse_yaml(text: str, source: str) -> Any:
    """YAML as ``yaml.safe_load`` reads it, but without aliases: nine levels of ``*name``
    in a few hundred bytes make a list of 387 million items once anything walks it (a
    "billion laughs"). An alias is refused with one line naming where it is."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                alias = cut(str(event.anchor), 40)
                raise CnnkitError(f"{source} line {event.start_mark.line + 1}: YAML aliases "
                                  f"('*{alias}') are not accepted; write the value out where "
                                  "it is used.")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliases)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise CnnkitError(f"{source} is not valid YAML{at}: "
                          f"{cut(str(getattr(exc, 'problem', None) or exc), 200)}.") from None
