"""``cnnkit data``: fetch, export and describe data sets."""

from __future__ import annotations

from typing import Optional

import typer

from cnnkit.base.errors import CnnkitError
from cnnkit.cli.app import app

data_app = typer.Typer(help="Fetch, export and inspect data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def fetch(name: str = typer.Argument(..., help="fashion-mnist"),
          quiet: bool = typer.Option(False, "--quiet", "-q")) -> None:
    """Make sure a built-in data set is on this machine (download it if not)."""
    from cnnkit.base import log
    from cnnkit.data import fashion_mnist
    from cnnkit.data.builtin import BUILTINS

    if name not in BUILTINS:
        raise CnnkitError(f"No built-in data set {name!r}. Built-in sets: {', '.join(BUILTINS)}.")
    if name == "fashion-mnist":
        folder = fashion_mnist.fetch(quiet=quiet)
        if not quiet:
            log.info(f"fashion-mnist: {folder}")
    elif not quiet:
        log.info(f"{name} ships with cnnkit's dependencies; nothing to fetch")


@data_app.command("export")
def export(name: str = typer.Argument(..., help="Built-in set: fashion-mnist, digits, shapes."),
           out: str = typer.Argument(..., help="New folder to write into."),
           split: str = typer.Option("all", help="train, test or all."),
           per_class: Optional[int] = typer.Option(None, help="At most N images per class."),
           size: Optional[int] = typer.Option(None, help="Resize to N x N pixels."),
           fmt: str = typer.Option("png", "--format", help="png, jpg, webp or bmp.")) -> None:
    """Write a built-in set as a class-per-folder tree of images."""
    from cnnkit.data.export import export_builtin

    export_builtin(name, out, split=split, per_class=per_class, size=size, fmt=fmt)


@data_app.command("info")
def info(data: str = typer.Argument(..., help="Folder, CSV or built-in set.")) -> None:
    """Classes and image counts of a data set, per split."""
    from rich.table import Table

    from cnnkit.base import log
    from cnnkit.data.pipeline import Preprocess
    from cnnkit.data.sources import describe, load_splits

    source = describe(data)
    pre = Preprocess(32, 3, (0.5,) * 3, (0.5,) * 3)
    log.set_quiet(True)
    splits = load_splits(source, pre, val_fraction=None, test_fraction=None)
    log.set_quiet(False)
    log.info(f"{data}: {source.kind}" + (f" - {source.builtin.description}"
                                         if source.builtin else ""))
    parts = [(n, getattr(splits, n)) for n in ("train", "val", "test")
             if getattr(splits, n) is not None]
    multi = splits.train.multilabel
    if multi:
        log.info("multi-label: each image has a set of labels (none, one or several); the "
                 "counts are images with each label")
    table = Table()
    table.add_column("label" if multi else "class")
    unsplit = not source.presplit
    for n, _ in parts:
        table.add_column("images" if unsplit else n, justify="right")
    counts = [p.class_counts() for _, p in parts]
    for i, cls in enumerate(splits.classes):
        table.add_row(cls, *(f"{c[i]:,}" for c in counts))
    if multi:
        table.add_row("(no label)", *(f"{p.unlabelled():,}" for _, p in parts), style="dim")
        table.add_row("images", *(f"{len(p):,}" for _, p in parts), style="bold")
        table.add_row("labels per image",
                      *(f"{sum(c) / max(len(p), 1):.2f}" for c, (_, p) in zip(counts, parts)))
    else:
        table.add_row("total", *(f"{sum(c):,}" for c in counts), style="bold")
    log.console().print(table)


@data_app.command("preview")
def preview(data: str = typer.Argument(..., help="Image file, folder, CSV or built-in set."),
            augment: str = typer.Option("auto", "--augment", "-a",
                                        help="Augmentation spec, as for train [default: "
                                        "what train uses on DATA]."),
            out: str = typer.Option("augment.png", "--out", "-o", help="PNG to write."),
            images: int = typer.Option(4, help="Images (one per class) to show."),
            samples: int = typer.Option(6, help="Random draws per image."),
            each: bool = typer.Option(False, "--each", help="One row per transform of the "
                                      "spec (on the first image), then all together."),
            img_size: Optional[int] = typer.Option(None, help="Size to show them at."),
            seed: int = typer.Option(0)) -> None:
    """Draw what an augmentation does: originals beside random draws, as training sees them."""
    from cnnkit.base import log
    from cnnkit.inspect.augment_preview import augment_grid

    path = augment_grid(data, augment, out, images=images, samples=samples, each=each,
                        img_size=img_size, seed=seed)
    log.info(f"preview: {path}")


@data_app.command("map")
def data_map(source: str = typer.Argument(..., help="Folder, CSV, built-in set or a run "
                                                    "folder."),
             out: Optional[str] = typer.Option(
                 None, help="The HTML file [default: RUN/datamap.html, or ./map-NAME.html]"),
             seed: int = typer.Option(0, help="Seed of the layout.")) -> None:
    """Draw the images in 2-D (UMAP of their codes), coloured by label, with suspected
    label errors, outliers and near-duplicates marked; the page shows the image under
    the pointer. A run: its own model's codes of its data (the run's report links
    the map); data: the pretrained EfficientNet-Lite0's."""
    import re
    from pathlib import Path

    from cnnkit.base import log
    from cnnkit.curate.codes import load_data, pretrained_codes, run_codes
    from cnnkit.curate.datamap import build_map, write_html, write_png

    is_run = Path(source, "config.json").is_file()
    if is_run:
        coded = run_codes(source, None)
        target = Path(out) if out else Path(source) / "datamap.html"
    else:
        parts, pre = load_data(source)
        coded = pretrained_codes(parts, pre)
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source.rstrip("/\\")).stem or source)
        target = Path(out) if out else Path(f"map-{name.strip('-') or 'data'}.html")
    if target.suffix.lower() not in (".html", ".htm"):
        from cnnkit.base.errors import CnnkitError

        raise CnnkitError(f"--out takes an .html file name. Received: {str(target)!r}")
    m = build_map(coded, seed)
    title = f"Map of {Path(source).name or source}"
    write_html(m, coded, target, title)
    png = write_png(m, coded, target.with_suffix(".png"))
    log.info(f"picture: {png}")
    if is_run:
        log.info(f"the run's report ({Path(source) / 'report.html'}) links it")
