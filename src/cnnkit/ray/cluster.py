"""Joining a Ray cluster: the optional dependency, the address, quiet logs, resources."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from cnnkit.base.errors import CnnkitError

INSTALL = "pip install 'cnnkit[ray]'"
LOCAL = ""  # `--ray` without an address: RAY_ADDRESS, the cluster `ray start` made here, or
            # a new local one on this machine's cores (ray.init()'s own order)


def require_ray() -> Any:
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray.data  # the [data] extra: pandas, pyarrow

        import ray
    except ImportError as exc:
        raise CnnkitError(f"--ray needs Ray (Ray Data and Ray Train), which is not installed "
                          f"({exc}): {INSTALL}") from None
    return ray


def check_address(address: str | None) -> str | None:
    """``None``/``""`` (find or start a cluster), ``auto``, ``local``, ``host:port`` or
    ``ray://host:port``; one line for anything else (a path given after ``--ray``)."""
    if address in (None, LOCAL):
        return None
    if address in ("auto", "local"):
        return address
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in host:
        raise CnnkitError(f"--ray takes a cluster's address: host:port of its head (e.g. "
                          f"10.0.0.5:6379), ray://host:10001, auto, or nothing (put --ray "
                          f"last to find or start a cluster). Received: {address!r}")
    return address


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """One line, without Ray's minute of retries, when nothing answers at ``address``."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CnnkitError(f"No Ray cluster answers at {address} ({reason}). Start one there "
                          f"with `ray start --head`, or check the address (`ray status` on "
                          f"the head node prints it).") from None


def connect(address: str | None, *, num_cpus: int | None = None,
            log_to_driver: bool = False) -> Any:
    """Join (or start) the cluster once per process; returns the ``ray`` module.

    ``num_cpus`` only sizes a new local cluster. Ray's own logs are kept to errors, and
    its workers' output is copied here only with ``log_to_driver`` (training: rank 0's
    progress); prediction prints its own progress, and errors come back as exceptions.
    """
    ray = require_ray()
    address = check_address(address)
    if ray.is_initialized():
        return ray
    if address not in (None, "auto", "local"):
        _reachable(address)
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        ray.init(address=address, num_cpus=num_cpus if address in (None, "local") else None,
                 include_dashboard=False, logging_level=logging.ERROR, log_to_driver=log_to_driver,
                 configure_logging=True)
    except ConnectionError as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "auto"
        raise CnnkitError(f"Could not join the Ray cluster at {where}: "
                          f"{str(exc).splitlines()[0]} Start one with `ray start --head`, "
                          f"or check the address.") from None
    quiet_data(ray)
    return ray


def quiet_data(ray: Any) -> None:
    """No progress bars or execution logs from Ray Data: cnnkit shows its own."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # cnnkit's own bar counts the rows written
    for name in ("print_on_execution_start", "enable_operator_progress_bars"):
        if hasattr(ctx, name):
            setattr(ctx, name, False)


def resources(ray: Any) -> tuple[float, float]:
    """The cluster's CPUs and GPUs."""
    total = ray.cluster_resources()
    return float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))
