"""Which torch device to run on: one small module so that prediction, serving and
inspection can choose a device without importing the trainer."""

from __future__ import annotations

import glob
import os
import sys
from typing import TYPE_CHECKING

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError

if TYPE_CHECKING:
    import torch

# Device nodes without which no GPU driver can answer: NVIDIA's, AMD's (ROCm) and WSL's.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")


def cpu_only(name: str) -> bool:
    """Whether ``name`` (as :func:`pick_device` takes it) surely means the CPU, decided
    without importing torch: ``cpu``, or ``auto`` on a Linux machine that has no GPU
    device node at all or whose ``CUDA_VISIBLE_DEVICES`` hides every GPU. Elsewhere
    (macOS's MPS, Windows) only torch can tell: False."""
    if name == "cpu":
        return True
    if name != "auto" or not sys.platform.startswith("linux"):
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1") and \
            not os.path.exists("/dev/kfd"):
        return True
    return not any(glob.glob(pattern) for pattern in GPU_DEVICE_NODES)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` (CUDA, then Apple's MPS, then the CPU), or a torch device name.
    ``local_rank``: a distributed run's process on this machine, whose GPU is the one of
    that index (a CPU stays the CPU)."""
    device = _named_device(name)
    if local_rank is not None and device.type == "cuda":
        import torch

        return torch.device("cuda", local_rank)
    return device


def _named_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CnnkitError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnkitError(f"--device {name} asks for a GPU, but PyTorch sees none here. "
                          "Use --device cpu (or auto).")
    return device


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


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux's MemAvailable), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require_memory(nbytes: int, what: str, advice: str) -> None:
    """Refuse, before allocating, something that would need more memory than is free."""
    free = available_memory()
    if free is not None and nbytes > 0.9 * free:
        raise CnnkitError(f"{what} needs {_gb(nbytes)} of memory and this machine has "
                          f"{_gb(free)} free. {advice}")


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GB"
