"""``cnnkit serve``: an HTTP API and a web page in front of trained models."""

from __future__ import annotations

import os
from typing import Optional

import typer

from cnnkit.cli.app import app
from cnnkit.runtime.backend_names import BACKEND_HELP

ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}


@app.command()
def serve(
    models: list[str] = typer.Argument(..., help="Run folders (or NAME=RUN to choose the "
                                       "name in URLs), or a pretrained model name such as "
                                       "efficientnet_lite0 (ImageNet classes)."),
    host: Optional[str] = typer.Option(None, help="Address to bind [default: 127.0.0.1, "
                                       "this machine only; 0.0.0.0 for every interface]."),
    port: Optional[int] = typer.Option(None, help="TCP port [default: 8000]."),
    backend: Optional[str] = typer.Option(None, help=BACKEND_HELP + " [default: auto]"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or mps [default: auto]."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the model's forward "
                                          "pass [default: one less than the CPUs, at least "
                                          "1; the rest decode images and answer HTTP]."),
    max_batch_size: Optional[int] = typer.Option(None, help="Most images per forward pass "
                                                 "[default: 32]."),
    max_wait_ms: Optional[float] = typer.Option(None, help="How long a request waits for "
                                                "others to share its batch [default: 5]."),
    max_queue: Optional[int] = typer.Option(None, help="Images that may wait for the model; "
                                            "beyond, 503 with Retry-After [default: 256]."),
    max_request_mb: Optional[float] = typer.Option(None, help="Largest request body; "
                                                   "beyond, 413 [default: 20]."),
    max_files: Optional[int] = typer.Option(None, help="Most images in one request "
                                            "[default: 32]."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Classes per image when a "
                                        "request names none [default: 5]."),
    formats: Optional[str] = typer.Option(None, help="Accepted image formats, comma-separated "
                                          "[default: JPEG,PNG,WEBP,BMP,GIF,TIFF]."),
    api_key: Optional[str] = typer.Option(None, help="Require 'Authorization: Bearer KEY' on "
                                          "every route but /health [default: the "
                                          "CNNKIT_API_KEY environment variable, else none]."),
    allowed_host: Optional[list[str]] = typer.Option(
        None, help="A host name clients may use for this server, beyond its address "
        "(against DNS rebinding, other Host headers get 400); repeat for several; "
        "'*.example.com' for subdomains, '*' for any."),
    max_connections: Optional[int] = typer.Option(
        None, help="Connections open at once; past it the slowest client's is closed, or "
        "503 [default: 1000, fewer if the open-file limit is lower]."),
    header_timeout: Optional[float] = typer.Option(
        None, help="Seconds a client has to send a request's line and headers; then 408 "
        "[default: 10]."),
    body_timeout: Optional[float] = typer.Option(
        None, help="Seconds a request's body may pause between two parts; then 408 "
        "[default: 30]."),
    access_log: bool = typer.Option(False, help="Log every request."),
) -> int:
    """Serve models over HTTP: POST images to /v1/models/NAME/predict, or open / in a browser."""
    from cnnkit.serve import ServeConfig, load_models, run_server
    from cnnkit.serve.settings import API_KEY_ENV

    given = {"host": host, "port": port, "backend": backend, "device": device,
             "threads": threads, "max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms,
             "max_queue": max_queue, "max_request_mb": max_request_mb,
             "max_files": max_files, "top_k": top_k,
             "formats": None if formats is None else tuple(
                 ALIASES.get(f.strip().upper(), f.strip().upper())
                 for f in formats.split(",") if f.strip()),
             "api_key": api_key if api_key is not None else os.environ.get(API_KEY_ENV),
             "allowed_hosts": tuple(allowed_host) if allowed_host else None,
             "max_connections": max_connections, "header_timeout_s": header_timeout,
             "body_timeout_s": body_timeout}
    config = ServeConfig(**{k: v for k, v in given.items() if v is not None})
    served = load_models(models, config.backend, config.device, config.model_threads)
    return run_server(served, config, access_log=access_log)
