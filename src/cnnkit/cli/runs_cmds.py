"""``cnnkit runs`` and ``cnnkit compare``: many run folders side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from cnnkit.base.errors import CnnkitError
from cnnkit.cli.app import app


@app.command("runs")
def runs(
    folder: Path = typer.Argument(Path("runs"), help="Folder of run folders."),
    sort: str = typer.Option("date", "--sort", "-s", help="date, name, test, val, time, "
                             "size, epochs, model or data (accuracies, the kept model's: "
                             "best first)."),
    reverse: bool = typer.Option(False, "--reverse", "-r"),
    output: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """List the runs in FOLDER: data, model, mode, epochs, the kept model (which epoch)
    and its test and validation accuracy, time and model size."""
    from rich.markup import escape
    from rich.table import Table

    from cnnkit.base import log
    from cnnkit.inspect.runs import human_size, human_time, kept_label, list_runs

    if output not in ("table", "json"):
        raise CnnkitError(f"--format must be table or json. Received: {output!r}")
    found = list_runs(folder, sort=sort, reverse=reverse)
    if output == "json":
        json.dump([r.to_dict() for r in found], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if not found:
        log.info(f"no runs in {folder}")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ("run", "data", "model", "mode", "epochs", "kept model", "test acc (kept)",
               "val acc (kept)", "time", "size")
    for col in columns:
        numeric = col not in ("run", "data", "model", "mode")
        table.add_column(col, justify="right" if numeric else "left", no_wrap=numeric,
                         overflow="fold")
    for r in found:
        data = Path(r.data).name if Path(r.data).is_absolute() else r.data
        epochs = f"{r.epochs_done}/{r.epochs_planned}" if r.epochs_planned and \
            r.epochs_planned != r.epochs_done else str(r.epochs_done)
        table.add_row(escape(r.name), escape(data), escape(r.model), r.mode, epochs,
                      kept_label(r), _figure(r.test_acc, r.figure), _figure(r.val_acc, r.figure),
                      human_time(r.seconds), human_size(r.size_bytes))
    con = log.console()
    if not con.is_terminal:  # piped or redirected: whole lines, not a terminal's folds
        from rich.console import Console

        con = Console(width=240, highlight=False, soft_wrap=True)
    con.print(table)


def _figure(value: float | None, figure: str) -> str:
    """A run's accuracy, or a multi-label run's exact match said as such."""
    if value is None:
        return ""
    return f"{value:.2%}" if figure == "acc" else f"{value:.2%} {figure}"


@app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more run folders."),
    out: Path = typer.Option(Path("compare.html"), "--out", "-o", help="HTML page to write."),
) -> None:
    """One page with the runs' results, training curves overlaid and configs side by side
    (differences highlighted)."""
    from cnnkit.base import log
    from cnnkit.inspect.compare import compare_runs

    log.info(f"comparison: {compare_runs(runs, out)}")
