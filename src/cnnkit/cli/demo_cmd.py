"""``cnnkit demo``: the quick start's main job on Fashion-MNIST."""

from __future__ import annotations

from typing import Optional

import typer

from cnnkit.cli import app


@app.command()
def demo(out: str = typer.Option("runs", help="Folder for the run folder."),
         epochs: Optional[int] = typer.Option(None, help="Override the default epochs.")
         ) -> None:
    """Train the default CNN on Fashion-MNIST, test it on the official 10,000 test images,
    and predict a few test images from PNG files."""
    from cnnkit.demo import run_demo

    run_demo(out, epochs)
