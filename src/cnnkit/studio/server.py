"""Run the studio on uvicorn (with ``cnnkit serve``'s hardening) and open the page."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import threading
import webbrowser

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.serve.hardening import HttpLimits, uvicorn_config, uvicorn_server
from cnnkit.studio.project import Project

LOOPBACK = ("127.0.0.1", "localhost", "::1")
API_KEY_ENV = "CNNKIT_API_KEY"


def run_studio(folder: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8765,
               api_key: str | None = None, open_page: bool = True) -> int:
    """Serve the studio for the project ``folder`` (made when missing) until Ctrl-C or
    SIGTERM. Beyond this machine (``host`` not a loopback address) an API key is
    required: the page asks for it once and keeps it in a cookie."""
    if host not in LOOPBACK and not api_key:
        raise CnnkitError(f"--host {host} lets other machines reach the studio, which can "
                          "write to the project and start training: give --api-key KEY (or "
                          f"set {API_KEY_ENV}), for example --api-key "
                          f"{secrets.token_urlsafe(16)}")
    if not 0 <= port <= 65535:
        raise CnnkitError(f"--port must be from 0 to 65535. Received: {port}")
    if port == 0:  # any free one, named in the log and the page's address
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    project = Project.open(folder)
    project.hold()
    try:
        from cnnkit.studio.app import create_app

        app = create_app(project, api_key=api_key, host=host)
        uv = uvicorn_config(app, host, port, HttpLimits(), log_level="warning",
                            server_header=False, timeout_graceful_shutdown=3)
        server = uvicorn_server(uv)
        where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        n = len(project.classes())
        log.info(f"studio for {project.root} ({n} class{'es' if n != 1 else ''}) at {where}")
        log.info("Ctrl-C stops it; the project is a plain folder (cnnkit train works on it).")
        if open_page:
            threading.Timer(1.0, _open, (where,)).start()
        previous = signal.signal(signal.SIGTERM, lambda *_: None)
        try:
            server.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
        return 0 if server.started else 1
    finally:
        project.release()


def _open(url: str) -> None:
    with contextlib.suppress(Exception):  # no browser here: the URL is in the log
        webbrowser.open(url)
