"""The mypyc-compiled hot loops (scripts/build_accelerators.py) against their source: the
source loaded as plain Python, whether the compiled build is the one imported, and whether it
is current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def pure(source: Path, name: str) -> ModuleType:
    """``source`` run as plain Python (never its compiled build)."""
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled(module: ModuleType) -> bool:
    return not str(module.__file__).endswith(".py")


def build_is_current() -> subprocess.CompletedProcess[str]:
    script = REPO / "scripts" / "build_accelerators.py"
    return subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
