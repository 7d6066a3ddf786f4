"""The schema of a model sidecar (``model.json``), checked before anything is built.

A sidecar can be edited or handed over by someone else; what it says decides how much
memory building the model takes. Every field is checked for type, range and size here,
in plain Python, so that a damaged or hostile file is refused with one line instead of
a RecursionError, a division by zero or tens of gigabytes allocated.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from cnnkit.base.config import MAX_IMG_SIZE
from cnnkit.base.errors import CnnkitError

MAX_BYTES = 16 * 2**20  # a sidecar with 100,000 class names is about 2 MB
MAX_CLASSES = 100_000
MAX_LAYERS = 256
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")
# Ranges of the numbers a layer-stack sidecar may hold (cnnkit's own stacks are far inside).
LAYER_FIELDS: dict[str, dict[str, Any]] = {
    "conv": {"filters": (1, 4096), "kernel": (1, 31), "stride": (1, 16),
             "padding": ("valid", "same", *range(0, 65)), "batchnorm": bool,
             "activation": ("relu", "tanh", "sigmoid", "linear", "none", None)},
    "pool": {"kind": ("max", "avg"), "size": (1, 32), "stride": (1, 32)},
    "dense": {"units": (1, 65536), "batchnorm": bool,
              "activation": ("relu", "tanh", "sigmoid", "linear", "none", None)},
    "dropout": {"rate": (0.0, 1.0)},
    "global_pool": {"kind": ("avg", "max")},
    "flatten": {},
    "batchnorm": {},
    "activation": {"name": ("relu", "tanh", "sigmoid", "linear")},
}
MAX_NAME = 200  # characters of an architecture's name
NAME = re.compile(rf"^[A-Za-z0-9_.:/+\-]{{1,{MAX_NAME}}}$")
WEIGHTS = re.compile(r"^[^/\\]{1,200}\.safetensors$")


def parse_json(text: str, where: str) -> Any:
    """JSON from a sidecar's text, with a size and nesting that no sidecar exceeds."""
    if len(text) > MAX_BYTES:
        _fail(where, f"it is {len(text):,} bytes, more than any model's sidecar "
                     f"({MAX_BYTES:,})")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CnnkitError(f"{where} is not valid JSON (or is nested too deeply); it is not a "
                          "cnnkit model sidecar.") from None


def validate(doc: Any, where: str) -> None:
    """Raise CnnkitError naming the first field that is missing, of the wrong type or
    out of range."""
    _check(isinstance(doc, dict), where, "it is not a JSON object")
    arch = _field(doc, "architecture", dict, where)
    name = _field(arch, "name", str, where, "architecture.name")
    _check(bool(NAME.match(name)), where, f"architecture.name {name[:60]!r} is not a model "
                                          "name")
    layers = arch.get("layers")
    if layers is not None:
        _check(isinstance(layers, list) and 0 < len(layers) <= MAX_LAYERS, where,
               f"architecture.layers must be a list of 1 to {MAX_LAYERS} layers")
        for i, layer in enumerate(layers):
            _layer(layer, where, f"architecture.layers[{i}]")
    kwargs = arch.get("kwargs") or {}
    _check(isinstance(kwargs, dict) and len(kwargs) <= 32 and all(
        isinstance(k, str) and (v is None or isinstance(v, (str, bool, int, float)))
        and not (isinstance(v, str) and len(v) > 200) for k, v in kwargs.items()),
        where, "architecture.kwargs must map names to plain values")
    classes = _field(doc, "classes", list, where)
    task = doc.get("task")
    # a multi-label model's labels are yes/no questions each: one is a model too
    least = 1 if isinstance(task, dict) and task.get("name") == "multi-label" else 2
    _check(least <= len(classes) <= MAX_CLASSES, where,
           f"classes must list {least} to {MAX_CLASSES:,} names (it has {len(classes):,})")
    _check(all(isinstance(c, str) and 0 < len(c) <= 255 for c in classes), where,
           "classes must be non-empty names of at most 255 characters")
    _check(len(set(classes)) == len(classes), where, "classes has a name twice")
    if "num_classes" in doc:
        _check(doc["num_classes"] == len(classes), where,
               f"num_classes ({doc['num_classes']!r}) differs from the {len(classes)} classes")
    _input(_field(doc, "input", dict, where), where)
    weights = _field(doc, "weights", str, where)
    _check(bool(WEIGHTS.match(weights)) and weights not in (".safetensors",), where,
           f"weights must be a .safetensors file name beside the sidecar, not {weights!r}")
    sha = doc.get("sha256")
    _check(sha is None or (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)),
           where, "sha256 must be 64 hex digits")
    info = doc.get("info")
    _check(info is None or isinstance(info, dict), where, "info must be an object")
    # the task's fields are the task's to check (cnnkit.tasks.registry)
    _check(task is None or isinstance(task, str) or (
        isinstance(task, dict) and isinstance(task.get("name"), str)), where,
        "task must be a task's name or an object with its name")


def _input(inp: dict[str, Any], where: str) -> None:
    size = _field(inp, "img_size", int, where, "input.img_size")
    _check(8 <= size <= MAX_IMG_SIZE, where,
           f"input.img_size must be 8 to {MAX_IMG_SIZE} (it is {size:,})")
    channels = _field(inp, "channels", int, where, "input.channels")
    _check(channels in (1, 3), where, f"input.channels must be 1 or 3 (it is {channels})")
    for key in ("mean", "std"):
        values = _field(inp, key, list, where, f"input.{key}")
        _check(len(values) == channels and all(_number(v) for v in values), where,
               f"input.{key} must hold {channels} finite numbers")
    _check(all(0 < v <= 1e3 for v in inp["std"]), where,
           "input.std must be positive (images are divided by it)")
    _check(inp.get("interpolation", "bilinear") in INTERPOLATIONS, where,
           f"input.interpolation must be one of {', '.join(INTERPOLATIONS)}")
    crop = inp.get("crop_pct", 1.0)
    _check(_number(crop) and 0.1 <= crop <= 1.0, where, "input.crop_pct must be 0.1 to 1")
    _check(isinstance(inp.get("grey", False), bool), where, "input.grey must be true or false")


def _layer(layer: Any, where: str, at: str) -> None:
    _check(isinstance(layer, dict), where, f"{at} must be an object")
    kind = layer.get("type")
    _check(kind in LAYER_FIELDS, where, f"{at}.type {str(kind)[:40]!r} is not a layer type "
                                        f"({', '.join(LAYER_FIELDS)})")
    allowed = LAYER_FIELDS[kind]
    for key, value in layer.items():
        if key == "type":
            continue
        _check(key in allowed, where, f"{at} ({kind}) has an unknown field {key[:40]!r}")
        rule = allowed[key]
        if rule is bool:
            ok = isinstance(value, bool)
        elif isinstance(rule[0], (int, float)) and not isinstance(rule[0], bool):
            ok = (value is None and key == "stride") or (
                _number(value) and rule[0] <= value <= rule[1]
                and (isinstance(value, int) or isinstance(rule[0], float)))
        else:
            ok = not isinstance(value, (bool, float)) and value in rule
        _check(ok, where, f"{at}.{key} = {str(value)[:40]} is outside what a layer may hold")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _field(doc: dict[str, Any], key: str, kind: type, where: str, name: str | None = None
           ) -> Any:
    name = name or key
    parent = f" in {name.rpartition('.')[0]}" if "." in name else ""
    _check(key in doc, where, f"no {key!r}{parent}")
    value = doc[key]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    _check(ok, where, f"{name} must be {_KINDS[kind]}")
    return value


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a whole number"}


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        _fail(where, what)


def _fail(where: str, what: str) -> None:
    raise CnnkitError(f"{where} is incomplete or damaged: {what}. Use the model.json that "
                      "was saved with the weights.")


def sidecar_text(path: Path) -> str:
    """A sidecar's text, refusing a file too large to be one before reading it."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        _fail(str(path), f"it is {size:,} bytes, more than any model's sidecar ({MAX_BYTES:,})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CnnkitError(f"{path} is not valid JSON; it is not a cnnkit model sidecar.") \
            from None
