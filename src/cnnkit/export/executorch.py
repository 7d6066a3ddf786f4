"""``cnnkit export --format executorch``: a ``.pte`` program for ExecuTorch's runtime
(phones, embedded Linux), float32 with its convolutions delegated to XNNPACK and a
dynamic batch; run here through ExecuTorch's Python runtime to check it."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from cnnkit.base.atomic import atomic_path
from cnnkit.base.errors import CnnkitError
from cnnkit.data.pipeline import Preprocess

MAX_BATCH = 64  # the largest batch the program accepts (its dynamic dimension's bound)
OPTIONS = {"format": "executorch", "delegate": "xnnpack", "precision": "float",
           "max_batch": MAX_BATCH}


def require_executorch() -> None:
    """One line when ExecuTorch is not installed."""
    try:
        import executorch  # noqa: F401
    except ImportError:
        raise CnnkitError("--format executorch needs ExecuTorch (its exporter and Python "
                          "runtime): pip install 'cnnkit[executorch]'.") from None


def export_pte(model: nn.Module, pre: Preprocess, path: Path) -> Path:
    """Write ``model`` as an ExecuTorch program at ``path`` (atomically)."""
    require_executorch()
    model = model.eval().to(memory_format=torch.contiguous_format)
    # Traced at the largest batch: XNNPACK's delegate sizes its input buffer from the
    # example (traced at 2, a program took at most 15 images whatever the bound).
    x = torch.zeros(MAX_BATCH, pre.channels, pre.img_size, pre.img_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with atomic_path(path) as tmp, warnings.catch_warnings(), _quiet_stderr():
        warnings.simplefilter("ignore")
        # Imported here: torchao, which they load, logs a deprecation note on import.
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,
        )
        from executorch.exir import to_edge_transform_and_lower

        try:
            program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            tmp.write_bytes(lowered.to_executorch().buffer)
        except Exception as exc:  # torch.export and ExecuTorch raise many types
            raise CnnkitError(f"ExecuTorch could not export this model: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''} Export it as "
                              "ONNX instead (--format onnx).") from None
    return path


class ExecutorchBackend:
    """A ``.pte`` program in ExecuTorch's Python runtime: a prediction backend (float
    NCHW batch in, logits out) for checking the file against torch."""

    name = "executorch"
    channels_last = False

    def __init__(self, path: str | os.PathLike) -> None:
        require_executorch()
        with _quiet_stderr():
            from executorch.runtime import Runtime

            self.program = Runtime.get().load_program(Path(path))
            self.method = self.program.load_method("forward")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def batch_size(self, img_size: int, requested: int) -> int:
        return max(1, min(requested, MAX_BATCH))

    def preprocessing(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to("cpu", torch.float32).contiguous()
        return self.method.execute([x])[0].float()


@contextlib.contextmanager
def _quiet_stderr():
    """ExecuTorch's native code prints CPU-probing notes on file descriptor 2
    (``cpuinfo_utils.cpp: Failed to open midr file``); they say nothing to a user."""

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
