"""Checks of a training run's options that take a fraction of a second and need neither
torch nor the data: the command runs them before it imports the trainer, loads images or
starts processes, so a mistake is one line at once (not after the data has loaded, and
once, not from every process of ``--devices N``).

The trainer's plan (:mod:`cnnkit.training.recipe`) checks the same and more again, for
the Python API and for what only the resolved device can tell.
"""

from __future__ import annotations

from pathlib import Path

from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def check_options(config: TrainConfig) -> None:
    """Raise one clear :class:`CnnkitError` for what the options alone show is wrong."""
    check_weights_file(config.weights)
    check_pretrained_weights(config)


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


def settle_precision(precision: str, device_type: str) -> str:
    """The precision a run uses on ``device_type``, saying so when it is not as asked.

    On the CPU, bf16 autocast works and fp16's does not pay: its float16 kernels run
    several times slower than fp32 (docs/benchmarks.md, "Precision on the CPU"), so fp16
    becomes bf16 with a warning, as Lightning does.
    """
    if device_type != "cpu" or precision not in ("bf16", "fp16"):
        return precision
    if precision == "fp16":
        log.warn("--precision fp16 on the CPU: training in bf16 instead (float16 runs "
                 "several times slower than fp32 on a CPU; bfloat16 is its mixed "
                 "precision). Pass --precision fp32 for full precision.")
    bf16 = cpu_has_bf16()
    speed = ("this CPU has bf16 instructions: it can be faster than fp32, and it halves "
             "activation memory" if bf16 else "this CPU has no bf16 instructions (AVX-512 "
             "BF16, AMX): expect it slower than fp32" if bf16 is False else "it can be "
             "faster than fp32 only on CPUs with bf16 instructions (AVX-512 BF16, AMX)")
    log.info(f"precision: bf16 autocast on the CPU ({speed})")
    return "bf16"


def cpu_has_bf16() -> bool | None:
    """Whether this CPU has bfloat16 instructions (x86's AVX-512 BF16 or AMX, Arm's
    BF16), from Linux's /proc/cpuinfo; None where that cannot be told."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read(1 << 20)
    except OSError:
        return None
    flags = {word for line in text.splitlines()
             if line.lower().startswith(("flags", "features")) for word in line.split()}
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
