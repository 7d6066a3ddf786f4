"""``--ray``: ``cnnkit predict`` and ``cnnkit train`` on a Ray cluster (cnnkit.ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.base.errors import CnnkitError

RAY_HELP = ("Run on a Ray cluster: its head's address (host:6379, ray://host:10001), or "
            "nothing (put --ray last) for RAY_ADDRESS, the cluster `ray start` joined "
            "here, or a new local one. pip install 'cnnkit[ray]'.")


def bare_flag(args: list[str]) -> list[str]:
    """``--ray`` with no address (last, or before another option) means "find or start
    a cluster": given to the parser as an empty address."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("")
    return out


def predict(model: str, files: list[str], output: Path | None, fmt: str, options: dict,
            address: str, device: str, backend: str, overwrite: bool = False) -> None:
    """``cnnkit predict MODEL INPUTS --ray [ADDRESS] --output DIR``."""
    from cnnkit.base import log
    from cnnkit.ray.batch import predict_to_folder
    from cnnkit.ray.cluster import check_address, require_ray

    check_address(address)
    if output is None:
        raise CnnkitError("--ray writes the rows to files, one per block of images: add "
                          "--output FOLDER (local and seen by every node, or a URL such as "
                          "s3://bucket/predictions/).")
    if backend != "auto":
        raise CnnkitError(f"--ray runs onnxruntime on CPU workers and torch on GPU workers; "
                          f"drop --backend {backend}.")
    if device not in ("auto", "cpu", "cuda"):
        raise CnnkitError(f"--device with --ray is auto (the cluster's GPUs if it has "
                          f"some), cpu or cuda. Received: {device!r}")
    require_ray()
    done = predict_to_folder(
        model, files, output, fmt="csv" if fmt == "table" else fmt, address=address,
        gpus=None if device == "auto" else device == "cuda", top_k=options["top_k"],
        batch_size=options["batch_size"], tta=options["tta"],
        threshold=options["threshold"], workers=options["workers"], chunk=options["chunk"],
        overwrite=overwrite)
    failed = f", {done.errors:,} unreadable" if done.errors else ""
    kept = f"; {done.skipped:,} already there" if done.skipped else ""
    log.err_console().print(
        f"wrote {done.written:,} rows in {log.plural(len(done.files), 'file')} to {output}"
        f"{failed}{kept} ({done.rate:,.1f} images/s on "
        f"{log.plural(done.workers, 'Ray worker')})", markup=False, highlight=False)


def train(given: dict[str, Any], config: Any, resume: Path | None, address: str,
          workers: int | None, devices: int) -> None:
    """``cnnkit train ... --ray [ADDRESS] --workers N`` (or ``--resume RUN --ray``)."""
    from cnnkit.base import log
    from cnnkit.ray.cluster import check_address, require_ray

    check_address(address)
    if devices != 1:
        raise CnnkitError("--devices starts processes on this machine; with --ray, Ray "
                          "places them: use --workers N instead.")
    require_ray()
    from cnnkit.ray import trainer

    if resume is not None:
        run = trainer.resume(resume, workers=workers, address=address)
    else:
        run = trainer.train(config, workers=workers, address=address)
    log.info(f"run folder: {run}")
