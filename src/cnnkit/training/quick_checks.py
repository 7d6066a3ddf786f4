"""Checks of a training run's options that take a fraction of a second and need neither
torch nor the data: the command runs them before it imports the trainer, loads images or
starts processes, so a mistake is one line at once (not after the data has loaded, and
once, not from every process of ``--devices N``).

The trainer's plan (:mod:`cnnkit.training.recipe`) checks the same and more again, for
the Python API and for what only the resolved device can tell (its precision:
:func:`cnnkit.base.device.settle_precision`).
"""

from __future__ import annotations

from pathlib import Path

from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.data.spec import missing

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def check_options(config: TrainConfig) -> None:
    """Raise one clear :class:`CnnkitError` for what the options alone show is wrong."""
    check_weights_file(config.weights)
    check_pretrained_weights(config)
    why = missing(config.data) if config.data is not None else None
    if why is not None:  # a DATA path that is not there: said before torch loads
        raise CnnkitError(why)


def check_weights_file(weights: str | None) -> None:
    """``--weights FILE``: the file exists and is of a kind cnnkit reads."""
    if weights is None:
        return
    if weights.lower() in ("imagenet", "pretrained", "true", "default"):
        raise CnnkitError(f"--weights takes a weights file (.safetensors or .pth). ImageNet "
                          f"weights are where a pretrained model starts already: drop "
                          f"--weights (`cnnkit models` lists the pretrained ones). "
                          f"Received: {weights!r}")
    path = Path(weights).expanduser()
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not found"
        raise CnnkitError(f"--weights {log.quoted(weights)}: {what}. Pass a .safetensors or "
                          ".pth file of the model's weights.")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise CnnkitError(f"--weights {log.quoted(weights)}: weights must be a .safetensors "
                          "or .pth file.")


def check_pretrained_weights(config: TrainConfig) -> None:
    """A pretrained ``--model`` whose weights are neither here nor downloadable now
    (offline, ``HF_HUB_OFFLINE``): one line before torch is imported."""
    if config.model is None or config.mode == "scratch" or config.weights or config.init_from:
        return
    from cnnkit.models.build import resolve
    from cnnkit.models.hub import check_weights

    arch, info = resolve(config.model, reachable=True)
    if info.is_pretrained:
        check_weights(arch.name, info.weights_from)
