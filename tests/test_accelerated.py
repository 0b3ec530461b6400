"""A compiled build that no longer matches its source is not used (hoopy/accelerated.py):
a copy of the package with the real compiled modules, its source then changed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hoopy.audit import _canon
from hoopy.wire import _rowscan
from tests.wire.builds import compiled

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import hoopy.audit._canon as c, hoopy.wire._rowscan as r; from hoopy.audit import _canon;"
    "print(c.__file__); print(r.__file__); print(_canon is c, hasattr(c, 'statement_line'))"
)


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(
    not (compiled(_canon) and compiled(_rowscan)), reason="no compiled build to go stale"
)
def test_a_stale_compiled_module_is_replaced_by_its_source(tmp_path: Path) -> None:
    shutil.copytree(REPO / "hoopy", tmp_path / "hoopy", ignore=shutil.ignore_patterns("__pycache__"))
    fresh = _run(tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    canon, rowscan, flags = fresh.stdout.splitlines()
    assert canon.endswith(".so") and rowscan.endswith(".so") and flags == "True True"
    assert "does not match its source" not in fresh.stderr

    source = tmp_path / "hoopy" / "audit" / "_canon.py"
    source.write_text(source.read_text() + "\n\nADDED_SINCE = 1\n")  # the source moved on
    stale = _run(tmp_path)
    assert stale.returncode == 0, stale.stderr
    canon, rowscan, flags = stale.stdout.splitlines()
    assert canon == str(source) and flags == "True True"
    assert rowscan.endswith(".so")  # the others, still current, stay compiled
    assert "hoopy.audit._canon does not match its source" in stale.stderr

    (tmp_path / "hoopy" / "audit" / "_canon.built").unlink()  # a build without its stamp
    unstamped = _run(tmp_path)
    assert unstamped.stdout.splitlines()[0] == str(source)
