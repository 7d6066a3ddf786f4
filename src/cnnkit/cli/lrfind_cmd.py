"""``cnnkit lr-find``: the learning-rate range test."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnnkit.cli.app import app


@app.command("lr-find")
def lr_find(
    data: str = typer.Argument(..., help="Folder, CSV or built-in set, as for train."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model as for train."),
    mode: Optional[str] = typer.Option(None, help="auto, fine-tune or scratch."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b"),
    optimizer: Optional[str] = typer.Option(None, help="adamw or sgd."),
    augment: Optional[str] = typer.Option(None, help="As for train."),
    img_size: Optional[int] = typer.Option(None),
    per_class: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None),
    steps: int = typer.Option(100, help="Steps of the test (one batch each)."),
    start: float = typer.Option(1e-7, help="First learning rate."),
    end: float = typer.Option(10.0, help="Last learning rate (if the loss has not "
                              "diverged before)."),
    out: Path = typer.Option(Path("lr_find.png"), "--out", "-o", help="PNG of the curve."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Find a learning rate: a short run with the rate growing exponentially, stopped when
    the loss diverges; prints the suggestion (none when the curve is too short or noisy
    to trust) and draws the curve. Changes no weights, writes no run folder."""
    from cnnkit.base import log
    from cnnkit.training.lrfind import TRAIN_PICK
    from cnnkit.training.session import lr_find as find

    log.set_quiet(quiet)
    options = {k: v for k, v in dict(model=model, mode=mode, batch_size=batch_size,
                                     optimizer=optimizer, augment=augment, img_size=img_size,
                                     per_class=per_class, seed=seed, device=device).items()
               if v is not None}
    finding = find(data, plot=out, steps=steps, start=start, end=end, **options)
    log.info(f"curve: {out}")
    # the number itself on stdout, so scripts can read it
    suggested = finding.suggestion()
    if suggested is None:
        print(f"suggested lr: none (the curve is {finding.doubt}); keep the default, "
              f"{finding.default:g}")
        return
    others = ", ".join(f"{k} {v:.3g}" for k, v in finding.suggestions.items()
                       if k != TRAIN_PICK)
    print(f"suggested lr: {suggested:.3g} ({TRAIN_PICK}; {others})")
