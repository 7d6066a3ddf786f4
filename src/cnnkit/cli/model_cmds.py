"""``cnnkit models``: what the registry holds."""

from __future__ import annotations

from typing import Optional

import typer

from cnnkit.cli.app import app


@app.command("models")
def models(family: Optional[str] = typer.Option(None, help="scratch or pretrained.")) -> None:
    """List registered models; any layer spec or .yaml file works as a model too."""
    from rich.table import Table

    from cnnkit.base import log
    from cnnkit.models.hub import weights_status
    from cnnkit.models.registry import list_models

    table = Table()
    for col in ("name", "family", "input", "weights", "description"):
        table.add_column(col, overflow="fold")
    for m in list_models(family):
        size = f"{m.img_size}px" if m.img_size else "any"
        chans = {None: "", 1: " grey", 3: " RGB"}[m.channels]
        table.add_row(m.name, m.family, size + chans, weights_status(m.weights_from) or "-",
                      m.description)
    log.console().print(table)
    log.info("weights: bundled = installed with cnnkit; cached = downloaded before; "
             "download = fetched once on first use (needs a network).")
    log.info("Custom stacks: --model 'conv32k3-pool2-conv64k3-pool2-dense128' or "
             "--model my-cnn.yaml. Any timm model by name (e.g. --model convnext_tiny) "
             "downloads its ImageNet weights once.")
