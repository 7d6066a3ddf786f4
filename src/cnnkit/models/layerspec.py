"""The layer-spec language: custom CNN stacks written as one writes a Keras Sequential model.

A short spec string, e.g. ``conv32k3-pool2-conv64k3same-pool2-drop0.25-dense128``,
or a YAML file with a ``layers:`` list, becomes a list of plain layer dicts (stored
in the model's sidecar, so a run rebuilds its model without the YAML file) and then
:class:`cnnkit.models.layers.ConvNet`.

Plain Python: listing and checking models needs no torch.

Spec tokens (joined with ``-``); convolutions and dense layers are followed by ReLU
unless a ``:tanh``, ``:sigmoid`` or ``:linear`` suffix says otherwise:

* ``conv{F}[k{K}][s{S}][same|valid|p{N}][bn]``: F filters, K x K kernel (3), stride S
  (1), padding valid (default, as in Keras), same, or N pixels; ``bn`` adds batch norm
* ``pool{N}[s{S}]``, ``maxpool{N}``, ``avgpool{N}``: pooling window N, stride S (N)
* ``gap`` / ``gmp``: global average / max pooling
* ``drop{P}``: dropout, P as 0.25 or 25 (%)
* ``dense{N}[bn]``: fully connected layer of N units (flatten is implied)
* ``flatten``, ``bn``, ``relu`` (``tanh``, ``sigmoid``): a layer on its own

In YAML, each of these words is also a key (``- maxpool: 2``, ``- drop: 0.25``,
``- gap``), and ``conv``/``pool``/``dense``/``dropout`` take their options by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.base.config import MAX_CONFIG_BYTES, parse_yaml
from cnnkit.base.errors import CnnkitError
from cnnkit.models.info import LazyBuilder, ModelInfo
from cnnkit.models.sidecar_schema import LAYER_FIELDS, MAX_LAYERS, MAX_NAME

ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")
_CONV = re.compile(r"^conv(\d+)(?:k(\d+))?(?:s(\d+))?(same|valid|p\d+)?(bn)?$")
_POOL = re.compile(r"^(max|avg)?pool(\d+)(?:s(\d+))?$")
_DENSE = re.compile(r"^dense(\d+)(bn)?$")
_DROP = re.compile(r"^drop(?:out)?(\d*\.?\d+)$")

Layer = dict[str, Any]


def looks_like_spec(name: str) -> bool:
    """Whether ``name`` starts like a layer spec ('conv32k3-...'), even with a bad token later.

    Then a mistake in it is reported as a spec mistake naming the token, rather than as
    an unknown model name.
    """
    first = name.strip().lower().split("-")[0]
    try:
        _parse_token(first, name)
    except UnknownTokenError:
        return False
    except CnnkitError:  # a layer word with a bad value ('conv0k3'): a spec mistake
        return True
    return True


class UnknownTokenError(CnnkitError):
    """A spec token that names no layer at all."""


def parse_spec(spec: str) -> list[Layer]:
    """The layers of a spec string, checked against what a model file can hold."""
    tokens = [t for t in spec.strip().lower().split("-") if t]
    if not tokens:
        raise CnnkitError("An empty layer spec. Example: 'conv32k3-pool2-dense128'.")
    if len(spec.strip()) > MAX_NAME:
        raise CnnkitError(f"A layer spec of {len(spec.strip()):,} characters ({len(tokens)} "
                          f"layers) is longer than a model's name may be ({MAX_NAME}), so its "
                          "model could not be saved. Write its layers in a YAML file and pass "
                          "that: --model net.yaml (layers: [conv32k3, pool2, ...]).")
    return check_stack([_parse_token(t, spec) for t in tokens], f"model spec {_cut(spec)}")


def read_stack(model: str) -> tuple[str, list[Layer]] | None:
    """The name and layers of a custom stack: a ``.yaml`` file's (named after the file)
    or a layer spec's (named by it); None for a name that is neither. A bad token in a
    spec, or a bad file, is its own one-line message."""
    if model.lower().endswith((".yaml", ".yml")):
        layers = load_yaml(model)
        return _file_model_name(Path(model).stem), layers
    if looks_like_spec(model):
        return model.strip(), parse_spec(model)
    return None


def stack_info(name: str, layers: list[Layer] | tuple[Layer, ...]) -> ModelInfo:
    """What a custom stack is, as the registry says what a registered model is."""
    return ModelInfo(name, StackBuilder(list(layers)), "custom layer stack")


def _file_model_name(stem: str) -> str:
    """A YAML file's name as a model name a sidecar can hold ('my net (v2)' -> 'my-net-v2')."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", stem).strip("-")[:MAX_NAME] or "custom"


def check_stack(layers: list[Layer], where: str) -> list[Layer]:
    """Refuse a stack that a model file could not hold: more than MAX_LAYERS layers, or a
    number past its range (``dense1000000000``), before anything is built or trained."""
    if len(layers) > MAX_LAYERS:
        raise CnnkitError(f"The {where} has {len(layers):,} layers; a model may have at most "
                          f"{MAX_LAYERS}.")
    for i, layer in enumerate(layers):
        for key, rule in LAYER_FIELDS.get(layer["type"], {}).items():
            value = layer.get(key)
            if rule is bool or isinstance(value, bool) or not isinstance(value, int):
                continue  # names and switches are checked as they are read
            whole = [r for r in rule if isinstance(r, int) and not isinstance(r, bool)]
            if whole and value > max(whole):  # below the range is refused as it is read
                raise CnnkitError(f"Layer {i + 1} ({layer['type']}) of the {where}: its "
                                  f"{_WHOLE.get(key, key)} must be at most {max(whole):,}. "
                                  f"Received: {value:,}")
    return layers


def _cut(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def _parse_token(token: str, spec: str) -> Layer:
    where = f"{token!r} of model spec {spec!r}"
    token, _, act = token.partition(":")
    if act and act not in ACTIVATIONS:
        raise CnnkitError(f"Unknown activation {act!r} in {where}; use "
                          f"{', '.join(ACTIVATIONS)}.")
    if m := _CONV.match(token):
        padding: Any = m.group(4) or "valid"
        if padding.startswith("p"):
            padding = int(padding[1:])
        layer = {"type": "conv", "filters": int(m.group(1)), "kernel": int(m.group(2) or 3),
                 "stride": int(m.group(3) or 1), "padding": padding,
                 "batchnorm": bool(m.group(5)), "activation": act or "relu"}
    elif m := _POOL.match(token):
        size = int(m.group(2))
        layer = {"type": "pool", "kind": m.group(1) or "max", "size": size,
                 "stride": int(m.group(3) or size)}
    elif m := _DENSE.match(token):
        layer = {"type": "dense", "units": int(m.group(1)), "batchnorm": bool(m.group(2)),
                 "activation": act or "relu"}
    elif m := _DROP.match(token):
        layer = {"type": "dropout", "rate": _dropout_rate(m.group(1), where)}
    elif token in ("gap", "gmp"):
        layer = {"type": "global_pool", "kind": "avg" if token == "gap" else "max"}
    elif token in ("flatten", "bn", "batchnorm"):
        layer = {"type": "flatten" if token == "flatten" else "batchnorm"}
    elif token in ("relu", "tanh", "sigmoid"):
        layer = {"type": "activation", "name": token}
    else:
        raise UnknownTokenError(f"Cannot read {token!r} in model spec {spec!r}. Tokens look "
                                "like conv32k3, conv64k3s2same, pool2, avgpool2, gap, drop0.25, "
                                "dense128.")
    return check_layer(layer, where)


def _dropout_rate(value: Any, where: str) -> float:
    """0.25 is a rate; a whole number from 1 to 99 is a percentage (drop25)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CnnkitError(f"Dropout rate in {where} must be a number. Received: {value!r}")
    text = str(value)
    try:
        rate = float(text)
    except ValueError:
        raise CnnkitError(f"Dropout rate in {where} must be a number. Received: {value!r}") \
            from None
    if rate >= 1 and float(rate).is_integer() and "." not in text:
        rate /= 100
    if not 0 <= rate < 1:
        raise CnnkitError(f"Dropout rate in {where} must be at least 0 and below 1 (or a "
                          f"percentage below 100, as in drop25). Received: {value!r}")
    return rate


_CHOICES = {"padding": ("same", "valid"), "kind": ("max", "avg"),
            "activation": tuple(ACTIVATIONS), "name": tuple(ACTIVATIONS)}
_WHOLE = {"filters": "filters", "kernel": "kernel size", "stride": "stride",
          "units": "units", "size": "pool size"}


def check_layer(layer: Layer, where: str) -> Layer:
    """Check a layer dict's values, with a message that names the layer and the value."""
    for key, value in layer.items():
        if key in _WHOLE and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
            raise CnnkitError(f"The {_WHOLE[key]} of {where} must be a whole number of at "
                              f"least 1. Received: {value!r}")
        if key == "padding" and not (value in _CHOICES["padding"] or (
                isinstance(value, int) and not isinstance(value, bool) and value >= 0)):
            raise CnnkitError(f"The padding of {where} must be same, valid or a number of "
                              f"pixels. Received: {value!r}")
        elif key in ("kind", "activation", "name") and value not in _CHOICES[key]:
            what = "Unknown activation" if key != "kind" else "Unknown pooling kind"
            raise CnnkitError(f"{what} {value!r} in {where}; use "
                              f"{', '.join(_CHOICES[key])}.")
        if key == "batchnorm" and not isinstance(value, bool):
            raise CnnkitError(f"batchnorm of {where} is true or false. Received: {value!r}")
    if layer["type"] == "dropout":
        layer = {**layer, "rate": _dropout_rate(layer["rate"], where)}
    return layer


def load_yaml(path: str | Path) -> list[Layer]:
    """Read ``layers:`` from YAML: each item a spec token or a one-key mapping."""

    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"Model file not found: {path}.")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CnnkitError(f"{path} is {path.stat().st_size:,} bytes; a model file lists "
                          f"layers in at most {MAX_CONFIG_BYTES // 1024} KiB.")
    try:
        doc = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except RecursionError:
        raise CnnkitError(f"{path} is nested too deeply; a model file lists layers.") from None
    except UnicodeDecodeError:
        raise CnnkitError(f"{path} is not UTF-8 text; a model file is YAML listing layers "
                          "(layers: [conv32k3, pool2, dense128]).") from None
    items = doc.get("layers") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise CnnkitError(f"{path} needs a 'layers:' list, e.g. '- conv: {{filters: 32}}'.")
    return check_stack([_yaml_layer(item, path) for item in items], f"model file {path}")


_YAML_DEFAULTS = {
    "conv": {"filters": None, "kernel": 3, "stride": 1, "padding": "valid", "batchnorm": False,
             "activation": "relu"},
    "pool": {"kind": "max", "size": 2, "stride": None},
    "dense": {"units": None, "batchnorm": False, "activation": "relu"},
    "dropout": {"rate": None},
    "global_pool": {"kind": "avg"},
    "flatten": {},
    "batchnorm": {},
    "activation": {"name": "relu"},
}
_YAML_SHORT = {"conv": "filters", "pool": "size", "dense": "units", "dropout": "rate",
               "global_pool": "kind", "activation": "name"}


# The spec's words work as YAML keys too: word -> (layer type, options it implies).
_YAML_WORDS: dict[str, tuple[str, dict[str, Any]]] = {
    **{kind: (kind, {}) for kind in _YAML_DEFAULTS},
    "maxpool": ("pool", {"kind": "max"}), "avgpool": ("pool", {"kind": "avg"}),
    "gap": ("global_pool", {"kind": "avg"}), "gmp": ("global_pool", {"kind": "max"}),
    "drop": ("dropout", {}), "bn": ("batchnorm", {}),
    **{name: ("activation", {"name": name}) for name in ("relu", "tanh", "sigmoid")},
}


def _yaml_layer(item: Any, path: Path) -> Layer:
    if isinstance(item, str):
        word = item.strip().lower()
        if word not in _YAML_WORDS:  # a spec token: conv32k3, pool2, drop0.25...
            return _parse_token(word, str(path))
        item = {word: None}
    if not (isinstance(item, dict) and len(item) == 1):
        raise CnnkitError(f"{path}: each layer is one mapping such as "
                          f"'conv: {{filters: 32, kernel: 3}}'. Received: {item!r}")
    (word, args), = item.items()
    word = str(word).strip().lower()
    if word not in _YAML_WORDS:
        raise CnnkitError(f"{path}: unknown layer {word!r}; use "
                          f"{', '.join(_YAML_WORDS)} (or a spec token such as conv32k3).")
    kind, implied = _YAML_WORDS[word]
    layer = {"type": kind, **_YAML_DEFAULTS[kind], **implied}
    if isinstance(args, dict):
        unknown = set(args) - set(_YAML_DEFAULTS[kind])
        if unknown:
            raise CnnkitError(f"{path}: {word} has no option(s) {', '.join(sorted(unknown))}; "
                              f"options: {', '.join(_YAML_DEFAULTS[kind])}.")
        layer.update(args)
    elif args is not None:
        if kind not in _YAML_SHORT:
            raise CnnkitError(f"{path}: {word} takes no value. Received: {args!r}")
        layer[_YAML_SHORT[kind]] = args
    if kind == "pool" and layer["stride"] is None:
        layer["stride"] = layer["size"]
    missing = [k for k, v in layer.items() if v is None]
    if missing:
        raise CnnkitError(f"{path}: {word} needs {', '.join(missing)}.")
    return check_layer(layer, f"layer '{word}' in {path}")


_ACTIVATION_TYPES = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "linear": None}


@dataclass(frozen=True)
class PlannedLayer:
    """One module of a layer stack, known before torch builds it: the ``torch.nn`` class
    and its arguments, and what it does to one image (output shape, parameters with
    their textbook formula, multiply-adds)."""

    part: str  # "features" or "head" (ConvNet's two Sequentials)
    type: str  # the torch.nn class name
    args: tuple[Any, ...]
    shape: tuple[int, ...]  # output for one image: (C, H, W) or (N,)
    params: int = 0
    macs: int = 0
    formula: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


def plan_stack(layers: list[Layer], in_chans: int, img_size: int
               ) -> tuple[list[PlannedLayer], int]:
    """The modules a stack builds for ``in_chans x img_size x img_size`` images, in
    order, and the width of the features its classifier reads; a clear error when the
    image shrinks to nothing or a convolution follows the dense part."""
    out: list[PlannedLayer] = []
    channels, size, units = in_chans, img_size, 0
    in_head = False

    def activation(part: str, name: str, shape: tuple[int, ...]) -> None:
        if name not in _ACTIVATION_TYPES:
            raise CnnkitError(f"Unknown activation {name!r}; use {', '.join(ACTIVATIONS)}.")
        if _ACTIVATION_TYPES[name] is not None:
            out.append(PlannedLayer(part, _ACTIVATION_TYPES[name], (), shape))

    for i, layer in enumerate(layers):
        kind = layer["type"]
        part = "head" if in_head else "features"
        if kind == "conv":
            if in_head:
                raise CnnkitError(f"Layer {i + 1} (conv) comes after the dense part of the spec; "
                                  "put convolutions first.")
            k, s, pad = layer["kernel"], layer["stride"], layer["padding"]
            padding: Any = (k - 1) // 2 if pad == "same" else 0 if pad == "valid" else int(pad)
            if pad == "same" and k % 2 == 0 and s == 1:
                padding = "same"
            bn = layer.get("batchnorm", False)
            filters = layer["filters"]
            size = size if padding == "same" else (size + 2 * padding - k) // s + 1
            shape = (filters, size, size)
            formula = (f"{k}x{k}x{channels}x{filters}" if bn
                       else f"({k}x{k}x{channels}+1)x{filters}")
            out.append(PlannedLayer("features", "Conv2d", (channels, filters, k, s, padding),
                                    shape, (k * k * channels + (0 if bn else 1)) * filters,
                                    max(size, 0) ** 2 * filters * channels * k * k, formula,
                                    {"bias": not bn}))
            if bn:
                out.append(PlannedLayer("features", "BatchNorm2d", (filters,), shape,
                                        2 * filters, 0, f"2x{filters}"))
            activation("features", layer.get("activation", "relu"), shape)
            channels = filters
        elif kind == "pool":
            size = (size - layer["size"]) // layer["stride"] + 1
            out.append(PlannedLayer("features", "MaxPool2d" if layer["kind"] == "max"
                                    else "AvgPool2d", (layer["size"], layer["stride"]),
                                    (channels, size, size)))
        elif kind == "global_pool":
            out.append(PlannedLayer("head", "AdaptiveAvgPool2d" if layer["kind"] == "avg"
                                    else "AdaptiveMaxPool2d", (1,), (channels, 1, 1)))
            out.append(PlannedLayer("head", "Flatten", (), (channels,)))
            in_head, units = True, channels
        elif kind == "flatten":
            in_head, units = True, channels * size * size
            out.append(PlannedLayer("head", "Flatten", (), (units,)))
        elif kind == "dense":
            if not in_head:
                in_head, units = True, channels * size * size
                out.append(PlannedLayer("head", "Flatten", (), (units,)))
            bn = layer.get("batchnorm", False)
            n = layer["units"]
            out.append(PlannedLayer("head", "Linear", (units, n), (n,),
                                    (units + (0 if bn else 1)) * n, units * n,
                                    f"{units}x{n}" if bn else f"({units}+1)x{n}",
                                    {"bias": not bn}))
            if bn:
                out.append(PlannedLayer("head", "BatchNorm1d", (n,), (n,), 2 * n, 0, f"2x{n}"))
            activation("head", layer.get("activation", "relu"), (n,))
            units = n
        elif kind == "dropout":
            shape = (units,) if in_head else (channels, size, size)
            out.append(PlannedLayer(part, "Dropout", (layer["rate"],), shape))
        elif kind == "batchnorm":
            if in_head:
                out.append(PlannedLayer("head", "BatchNorm1d", (units,), (units,), 2 * units,
                                        0, f"2x{units}"))
            else:
                out.append(PlannedLayer("features", "BatchNorm2d", (channels,),
                                        (channels, size, size), 2 * channels, 0,
                                        f"2x{channels}"))
        elif kind == "activation":
            activation(part, layer["name"], (units,) if in_head else (channels, size, size))
        else:
            raise CnnkitError(f"Unknown layer type {kind!r}.")
        if size < 1:
            raise CnnkitError(
                f"Images of {img_size}x{img_size} pixels shrink to nothing at layer {i + 1} "
                f"({kind}) of this model. Use a larger --img-size, 'same' padding or fewer "
                "pooling layers."
            )
    if not in_head:
        units = channels * size * size
        out.append(PlannedLayer("head", "Flatten", (), (units,)))
    return out, units


class StackBuilder(LazyBuilder):
    """A registry builder for a layer stack: the layers are known without torch, the
    network is built (:func:`cnnkit.models.layers.build_stack`, and torch imported)
    only when called."""

    def __init__(self, spec: str | list[Layer]) -> None:
        super().__init__("cnnkit.models.layers:build_stack",
                         layers=parse_spec(spec) if isinstance(spec, str) else list(spec))

    @property
    def layers(self) -> list[Layer]:
        return self.keywords["layers"]
