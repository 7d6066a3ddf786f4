"""The one list of prediction backend names, cheap to import (the CLI's options and
their help name them before anything loads a model)."""

from __future__ import annotations

from cnnkit.base.errors import CnnkitError

# The one list of backend names: every --backend option, the server's and the Python
# API's, is checked against it (check_backend) and described by BACKEND_HELP.
BACKENDS = {
    "auto": "onnxruntime on a CPU (the float export, made once and cached beside the "
            "model), torch on a GPU",
    "torch": "the PyTorch module",
    "onnx": "onnxruntime on the float export",
    "onnx-int8": "onnxruntime on the int8 file that `cnnkit export RUN --quantize int8` "
                 "made (CPU)",
}
BACKEND_HELP = "; ".join(f"{name}: {what}" for name, what in BACKENDS.items()) + "."
ONNX_KINDS = ("onnx", "onnx-int8")  # the backends that run an ONNX file


def check_backend(kind: str) -> None:
    """One line for a name that is not in :data:`BACKENDS`."""
    if kind not in BACKENDS:
        raise CnnkitError(f"--backend must be one of {', '.join(BACKENDS)}. Received: {kind!r}")
