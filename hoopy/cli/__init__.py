"""The ``hoopy`` command line (``app.py``), one module per command group."""

from hoopy.cli.app import app, main

__all__ = ["app", "main"]
