"""The ``cnnkit`` Typer application that every command module adds its commands to.

It sits apart from :mod:`cnnkit.cli` (which imports the command modules to register
them, and runs the application) so that a command module imports this module alone and
no command module and the package import each other.
"""

from __future__ import annotations

import typer

from cnnkit._version import __version__

app = typer.Typer(
    name="cnnkit", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Train, evaluate, explain and predict with convolutional neural networks.",
)


def _version(value: bool) -> None:
    if value:
        print(f"cnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print cnnkit's version and exit.")) -> None:
    """Train, evaluate, explain and predict with convolutional neural networks."""
