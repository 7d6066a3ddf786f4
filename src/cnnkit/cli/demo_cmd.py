"""``cnnkit demo``: the quick start's main job on Fashion-MNIST."""

from __future__ import annotations

from typing import Optional

import typer

from cnnkit.cli.app import app


@app.command()
def demo(out: str = typer.Option("runs", help="Folder for the run folder."),
         epochs: Optional[int] = typer.Option(None, help="Override the default epochs.")
         ) -> None:
    """Train the default CNN on Fashion-MNIST, test it on the official 10,000 test images,
    and predict a few test images from PNG files."""
    from cnnkit.base import log
    from cnnkit.cli.tables import print_predictions
    from cnnkit.demo import run_demo

    result = run_demo(out, epochs)
    run = result.run.run_dir
    log.info("\npredictions for a few test images (file names carry the true class):")
    print_predictions(result.predictions)
    log.info(f"\ntest accuracy {result.run.test_accuracy:.2%} on the official 10,000 test "
             f"images; {result.seconds:.0f}s in all")
    log.info(f"run folder: {run}")
    log.info(f"  predict:  cnnkit predict {run} {result.samples}")
    log.info(f"  evaluate: cnnkit evaluate {run} fashion-mnist")
