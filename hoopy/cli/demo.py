"""``hoopy demo``: the whole product against a throwaway MariaDB (hoopy/demo.py)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from hoopy.cli.common import err, fail


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def _port_or_free(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            err.print(f"port {port} is busy; using a free one")
            return 0
    return port


def demo(
    port: Annotated[int, typer.Option(help="The gateway's TCP port (0: any free one).")] = 3307,
    ready_file: Annotated[
        Path | None,
        typer.Option(help="Write the demo's commands and paths as JSON here once it serves."),
    ] = None,
) -> None:
    """Run hoopy in front of a throwaway MariaDB with sample data, and print commands that
    show it: an audited query, masked columns, a refused DELETE, an approval, a replay.
    Ctrl-C stops it and removes everything."""
    from hoopy.demo import DemoError, run

    try:
        code = run(port=_port_or_free(port) if port else 0, ready_file=ready_file,
                   say=lambda text: err.print(text, highlight=False, markup=False))  # fmt: skip
    except DemoError as exc:
        fail(str(exc))
    raise typer.Exit(code)
