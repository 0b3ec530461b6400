"""Compiled builds are used only while they match their source.

``scripts/build_accelerators.py`` compiles a few hot modules with mypyc and stamps each
build with its source's SHA-256 (``<module>.built``). Python imports a compiled module in
preference to its source, so after the source changes without a rebuild (a ``git pull``),
the old compiled code would run under new callers: a function added since is missing, and
every statement that needs it fails. ``use_current``, called by a package's ``__init__``
before anything imports those modules, loads the source instead of a stale build and says
so in the log. A build whose source is not there (nothing to compare with) is used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("hoopy")


def use_current(package: str, directory: str, names: Iterable[str]) -> None:
    for name in names:
        full = f"{package}.{name}"
        if full in sys.modules:
            continue
        spec = importlib.util.find_spec(full)
        if spec is None or spec.origin is None or spec.origin.endswith(".py"):
            continue  # not compiled: the source is what runs
        source = Path(directory) / f"{name}.py"
        try:
            data = source.read_bytes()
        except OSError:
            continue  # no source to compare with (an installed build): use the build
        stamp = source.with_suffix(".built")
        try:
            current = stamp.read_text().strip() == hashlib.sha256(data).hexdigest()
        except OSError:
            current = False
        if current:
            continue
        log.warning(
            "the compiled build of %s does not match its source: running the source "
            "(slower; python scripts/build_accelerators.py rebuilds it)",
            full,
        )
        loaded = importlib.util.spec_from_file_location(full, source)
        assert loaded is not None and loaded.loader is not None
        module = importlib.util.module_from_spec(loaded)
        sys.modules[full] = module
        try:
            loaded.loader.exec_module(module)
        except BaseException:
            del sys.modules[full]
            raise
        setattr(sys.modules[package], name, module)
