"""The ``hoopy`` command: the root, and each command group registered from its module."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperOption

from hoopy import __version__
from hoopy.cli import approvals, audit, demo, init, lint, replay, serve, token

_display_type = TyperOption.display_type_rich


def _display_type_unless_flag(self: TyperOption, ctx: typer.Context) -> str | None:
    # typer 0.2x labels every option with its type, flags too (``--json <bool>``): a flag
    # takes no value, so its help shows none.
    return None if self.is_flag else _display_type(self, ctx)


TyperOption.display_type_rich = _display_type_unless_flag  # type: ignore[method-assign,assignment]

app = typer.Typer(
    name="hoopy",
    help="A MySQL gateway for autonomous agents.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"hoopy {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = None,
) -> None:
    """A MySQL gateway for autonomous agents."""


for module in (demo, init, serve, lint, token, audit, replay, approvals):
    module.register(app)


def main() -> None:
    app()
