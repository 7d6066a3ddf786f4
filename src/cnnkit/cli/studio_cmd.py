"""``cnnkit studio``: make, train, try and ship a classifier from a web page."""

from __future__ import annotations

import os
from typing import Optional

import typer

from cnnkit.cli.app import app


@app.command()
def studio(
    project: str = typer.Argument("cnnkit-project", help="The project folder: one sub-folder "
                                  "per class (made when missing)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; another than this "
                             "machine's (127.0.0.1) needs --api-key."),
    port: int = typer.Option(8765, help="TCP port (0: any free one)."),
    api_key: Optional[str] = typer.Option(None, help="A key the page asks for once [default: "
                                          "the CNNKIT_API_KEY environment variable, else "
                                          "none]; required with --host."),
    open_page: bool = typer.Option(True, "--open/--no-open", help="Open the page in the "
                                   "web browser."),
) -> int:
    """Start the studio: collect images (files or webcam), train, try and export, in a page."""
    from cnnkit.studio.server import API_KEY_ENV, run_studio

    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return run_studio(project, host=host, port=port, api_key=key or None, open_page=open_page)
