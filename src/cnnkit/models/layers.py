"""Custom CNN stacks written the way one writes a Keras Sequential model.

A short spec string, e.g. ``conv32k3-pool2-conv64k3same-pool2-drop0.25-dense128``,
or a YAML file with a ``layers:`` list, becomes a list of plain layer dicts (stored
in the model's sidecar, so a run rebuilds its model without the YAML file) and then
a :class:`ConvNet`.

Spec tokens (joined with ``-``); convolutions and dense layers are followed by ReLU
unless a ``:tanh``, ``:sigmoid`` or ``:linear`` suffix says otherwise:

* ``conv{F}[k{K}][s{S}][same|valid|p{N}][bn]``: F filters, K x K kernel (3), stride S
  (1), padding valid (default, as in Keras), same, or N pixels; ``bn`` adds batch norm
* ``pool{N}[s{S}]``, ``maxpool{N}``, ``avgpool{N}``: pooling window N, stride S (N)
* ``gap`` / ``gmp``: global average / max pooling
* ``drop{P}``: dropout, P as 0.25 or 25 (%)
* ``dense{N}[bn]``: fully connected layer of N units (flatten is implied)
* ``flatten``, ``bn``, ``relu`` (``tanh``, ``sigmoid``): a layer on its own
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": None}
_CONV = re.compile(r"^conv(\d+)(?:k(\d+))?(?:s(\d+))?(same|valid|p\d+)?(bn)?$")
_POOL = re.compile(r"^(max|avg)?pool(\d+)(?:s(\d+))?$")
_DENSE = re.compile(r"^dense(\d+)(bn)?$")
_DROP = re.compile(r"^drop(?:out)?(\d*\.?\d+)$")

Layer = dict[str, Any]


def is_spec(name: str) -> bool:
    """A YAML path or a string whose every token parses as a layer."""
    if name.lower().endswith((".yaml", ".yml")):
        return True
    try:
        parse_spec(name)
    except CnnkitError:
        return False
    return True


def parse_spec(spec: str) -> list[Layer]:
    tokens = [t for t in spec.strip().lower().split("-") if t]
    if not tokens:
        raise CnnkitError("An empty layer spec. Example: 'conv32k3-pool2-dense128'.")
    return [_parse_token(t, spec) for t in tokens]


def _parse_token(token: str, spec: str) -> Layer:
    token, _, act = token.partition(":")
    if act and act not in ACTIVATIONS:
        raise CnnkitError(f"Unknown activation {act!r} in spec {spec!r}; use "
                          f"{', '.join(ACTIVATIONS)}.")
    if m := _CONV.match(token):
        padding: Any = m.group(4) or "valid"
        if padding.startswith("p"):
            padding = int(padding[1:])
        return {"type": "conv", "filters": int(m.group(1)), "kernel": int(m.group(2) or 3),
                "stride": int(m.group(3) or 1), "padding": padding,
                "batchnorm": bool(m.group(5)), "activation": act or "relu"}
    if m := _POOL.match(token):
        size = int(m.group(2))
        return {"type": "pool", "kind": m.group(1) or "max", "size": size,
                "stride": int(m.group(3) or size)}
    if m := _DENSE.match(token):
        return {"type": "dense", "units": int(m.group(1)), "batchnorm": bool(m.group(2)),
                "activation": act or "relu"}
    if m := _DROP.match(token):
        rate = float(m.group(1))
        rate = rate / 100 if rate >= 1 else rate
        if not 0 <= rate < 1:
            raise CnnkitError(f"Dropout rate must be below 1 (or 100%). Received: {token!r}")
        return {"type": "dropout", "rate": rate}
    if token in ("gap", "gmp"):
        return {"type": "global_pool", "kind": "avg" if token == "gap" else "max"}
    if token in ("flatten", "bn"):
        return {"type": {"flatten": "flatten", "bn": "batchnorm"}[token]}
    if token in ("relu", "tanh", "sigmoid"):
        return {"type": "activation", "name": token}
    raise CnnkitError(f"Cannot read {token!r} in model spec {spec!r}. Tokens look like "
                      "conv32k3, conv64k3s2same, pool2, avgpool2, gap, drop0.25, dense128.")


def load_yaml(path: str | Path) -> list[Layer]:
    """Read ``layers:`` from YAML: each item a spec token or a one-key mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"Model file not found: {path}.")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CnnkitError(f"{path} is not valid YAML: {exc}".splitlines()[0]) from None
    items = doc.get("layers") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise CnnkitError(f"{path} needs a 'layers:' list, e.g. '- conv: {{filters: 32}}'.")
    return [_yaml_layer(item, path) for item in items]


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


def _yaml_layer(item: Any, path: Path) -> Layer:
    if isinstance(item, str):
        return _parse_token(item.lower(), str(path))
    if not (isinstance(item, dict) and len(item) == 1):
        raise CnnkitError(f"{path}: each layer is one mapping such as "
                          f"'conv: {{filters: 32, kernel: 3}}'. Received: {item!r}")
    (kind, args), = item.items()
    kind = {"maxpool": "pool", "avgpool": "pool", "gap": "global_pool"}.get(kind, kind)
    if kind not in _YAML_DEFAULTS:
        raise CnnkitError(f"{path}: unknown layer {kind!r}; use {', '.join(_YAML_DEFAULTS)}.")
    layer = {"type": kind, **_YAML_DEFAULTS[kind]}
    if isinstance(args, dict):
        unknown = set(args) - set(_YAML_DEFAULTS[kind])
        if unknown:
            raise CnnkitError(f"{path}: {kind} has no option(s) {', '.join(sorted(unknown))}; "
                              f"options: {', '.join(_YAML_DEFAULTS[kind])}.")
        layer.update(args)
    elif args is not None:
        layer[_YAML_SHORT.get(kind, "")] = args
    if next(iter(item)) in ("maxpool", "avgpool"):
        layer["kind"] = next(iter(item))[:3]
    if kind == "pool" and layer["stride"] is None:
        layer["stride"] = layer["size"]
    missing = [k for k, v in layer.items() if v is None]
    if missing:
        raise CnnkitError(f"{path}: {kind} needs {', '.join(missing)}.")
    return layer


class ConvNet(nn.Module):
    """A feature extractor, a head and a classifier, with timm's model surface.

    ``features`` maps images to feature maps, ``head`` maps those to the
    pre-logits vector (pooling or flattening, hidden dense layers, dropout), and
    ``classifier`` is the final dense layer that :meth:`reset_classifier` replaces.
    Softmax is applied when predicting; the network itself returns logits.
    """

    def __init__(self, features: nn.Sequential, head: nn.Sequential, num_features: int,
                 num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.num_features = num_features
        self.num_classes = num_classes
        self.classifier = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups from input to output, as timm's layer-wise tools expect."""
        return {"stem": r"^features\.0\.", "blocks": r"^features\.(\d+)", "head": r"^head\."}


def build_sequential(layers: list[Layer], num_classes: int, in_chans: int,
                     img_size: int) -> ConvNet:
    """Build a :class:`ConvNet` from layer dicts, checking the image is large enough."""
    features: list[nn.Module] = []
    head: list[nn.Module] = []
    channels, size, units = in_chans, img_size, None
    in_head = False
    for i, layer in enumerate(layers):
        kind = layer["type"]
        target = head if in_head else features
        if kind == "conv":
            if in_head:
                raise CnnkitError(f"Layer {i + 1} (conv) comes after the dense part of the spec; "
                                  "put convolutions first.")
            k, s, pad = layer["kernel"], layer["stride"], layer["padding"]
            padding = (k - 1) // 2 if pad == "same" else 0 if pad == "valid" else int(pad)
            if pad == "same" and k % 2 == 0 and s == 1:
                padding = "same"
            bn = layer.get("batchnorm", False)
            features.append(nn.Conv2d(channels, layer["filters"], k, s, padding, bias=not bn))
            if bn:
                features.append(nn.BatchNorm2d(layer["filters"]))
            _activation(features, layer.get("activation", "relu"))
            channels = layer["filters"]
            size = size if padding == "same" else (size + 2 * padding - k) // s + 1
        elif kind == "pool":
            cls = nn.MaxPool2d if layer["kind"] == "max" else nn.AvgPool2d
            features.append(cls(layer["size"], layer["stride"]))
            size = (size - layer["size"]) // layer["stride"] + 1
        elif kind == "global_pool":
            pool = nn.AdaptiveAvgPool2d(1) if layer["kind"] == "avg" else nn.AdaptiveMaxPool2d(1)
            head += [pool, nn.Flatten()]
            in_head, units = True, channels
        elif kind == "flatten":
            head.append(nn.Flatten())
            in_head, units = True, channels * size * size
        elif kind == "dense":
            if not in_head:
                head.append(nn.Flatten())
                in_head, units = True, channels * size * size
            bn = layer.get("batchnorm", False)
            head.append(nn.Linear(units, layer["units"], bias=not bn))
            if bn:
                head.append(nn.BatchNorm1d(layer["units"]))
            _activation(head, layer.get("activation", "relu"))
            units = layer["units"]
        elif kind == "dropout":
            target.append(nn.Dropout(layer["rate"]))
        elif kind == "batchnorm":
            target.append(nn.BatchNorm1d(units) if in_head else nn.BatchNorm2d(channels))
        elif kind == "activation":
            _activation(target, layer["name"])
        else:
            raise CnnkitError(f"Unknown layer type {kind!r}.")
        if size < 1:
            raise CnnkitError(
                f"Images of {img_size}x{img_size} pixels shrink to nothing at layer {i + 1} "
                f"({kind}) of this model. Use a larger --img-size, 'same' padding or fewer "
                "pooling layers."
            )
    if not in_head:
        head.append(nn.Flatten())
        units = channels * size * size
    return ConvNet(nn.Sequential(*features), nn.Sequential(*head), units, num_classes)


def _activation(target: list[nn.Module], name: str) -> None:
    if name not in ACTIVATIONS:
        raise CnnkitError(f"Unknown activation {name!r}; use {', '.join(ACTIVATIONS)}.")
    if ACTIVATIONS[name] is not None:
        target.append(ACTIVATIONS[name]())
