"""``cnnkit suggest RUN FOLDER``: which unlabelled images to label next."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnnkit.cli.app import app


@app.command("suggest")
def suggest(run: str = typer.Argument(..., help="A run folder (its model ranks the images)."),
            folder: str = typer.Argument(..., help="A folder of unlabelled images."),
            n: int = typer.Option(100, "--n", help="How many images to suggest."),
            out: Optional[str] = typer.Option(
                None, help="Folder for to_label.csv/json/png [default: ./suggest-FOLDER]"),
            fmt: str = typer.Option("text", "--format", help="text or json.")) -> None:
    """Rank unlabelled images by how much labelling them would teach the model.

    The model's least sure images, spread out (k-center greedy on its codes, away from
    what it was trained on), most useful first. Writes to_label.csv (fill in the label
    column), to_label.json and a contact sheet to_label.png.
    """
    import json

    from cnnkit.base import log
    from cnnkit.base.errors import CnnkitError
    from cnnkit.curate.suggest import suggest as pick
    from cnnkit.curate.suggest import write_suggestion

    if fmt not in ("text", "json"):
        raise CnnkitError(f"--format must be text or json. Received: {fmt!r}")
    quiet = log.silent()
    log.set_quiet(quiet or fmt == "json")
    try:
        found = pick(run, folder, n)
        name = Path(folder.rstrip("/\\")).name or "images"
        files = write_suggestion(found, out or f"suggest-{name}")
    finally:
        log.set_quiet(quiet)
    if fmt == "json":
        print(json.dumps({**found.to_dict(), "files": {k: str(v) for k, v in files.items()}},
                         indent=2))
        return
    if len(found.files) < n:
        log.info(f"{folder} has {found.pool} image(s): all of them are suggested")
    log.info(f"{len(found.files)} of {found.pool:,} images to label next, most useful first "
             f"(the model's least sure, spread out), in {found.seconds:.1f}s:")
    for r, (f, p, c, u) in enumerate(zip(found.files[:10], found.predicted, found.confidence,
                                         found.unlike), 1):
        said = ("unlike every class it knows: predict answers 'unknown'" if u
                else f"model's guess {p}, {c:.0%}")
        log.info(f"  {r:>3}. {log.quoted(f)}  ({said})")
    if len(found.files) > 10:
        log.info(f"  ... and {len(found.files) - 10} more")
    if any(found.unlike):
        log.info(f"{sum(found.unlike)} of them are unlike every class the model knows: label "
                 "one only if it belongs to a class (or a new one), else leave it out")
    log.info(f"fill in the label column of {files['csv']}; contact sheet {files['sheet']}")
