"""Run the app on uvicorn: bind, log where, and shut down gracefully on SIGTERM."""

from __future__ import annotations

import math
import signal

import torch

from cnnkit.base import log
from cnnkit.serve.app import create_app
from cnnkit.serve.hardening import trusted_hosts, uvicorn_config, uvicorn_server
from cnnkit.serve.loading import ServedModel
from cnnkit.serve.settings import ServeConfig


def run_server(models: dict[str, ServedModel], config: ServeConfig, *,
               access_log: bool = False) -> int:
    """Serve until SIGTERM or Ctrl-C; returns the exit code (0 after a graceful stop).

    On SIGTERM uvicorn stops accepting connections, lets the requests in flight finish
    (up to ``config.shutdown_timeout_s``), then runs the app's shutdown. It re-raises the
    signal once done; the handler installed here absorbs it, so the exit code says the
    stop was clean.
    """

    torch.set_num_threads(config.model_threads)
    app = create_app(models, config)
    uv = uvicorn_config(app, config.host, config.port, config.http_limits,
                        access_log=access_log, log_level="info", server_header=False,
                        timeout_graceful_shutdown=math.ceil(config.shutdown_timeout_s))
    server = uvicorn_server(uv)
    where = f"http://{_url_host(config.host)}:{config.port}"
    names = ", ".join(f"{m.name} ({len(m.classes)} classes)" for m in models.values())
    log.info(f"serving {names} at {where}/ (API docs at {where}/docs)")
    hosts = trusted_hosts(config.host, config.allowed_hosts)
    if "*" not in hosts:
        log.info(f"answering for the hosts {', '.join(hosts)} (--allowed-host adds a name)")
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        log.warn(f"listening on {config.host} without --api-key: anyone who can reach this "
                 "machine can use the models.")
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else 1


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
