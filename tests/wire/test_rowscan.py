"""The row-scanning hot loop: the mypyc-compiled build must behave exactly like the source."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hoopy.wire._rowscan as loaded
from hoopy.wire.packets import frame

SOURCE = Path(__file__).resolve().parents[2] / "hoopy" / "wire" / "_rowscan.py"


def _pure() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_rowscan_pure", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PURE = _pure()
COMPILED = not str(loaded.__file__).endswith(".py")


def packets(payloads: list[bytes]) -> bytes:
    out = b""
    seq = 0
    for p in payloads:
        data, seq = frame(p, seq)
        out += data
    return out


payload = st.binary(min_size=0, max_size=40)


@given(
    st.lists(payload, max_size=30),
    st.integers(0, 400),
    st.integers(0, 400),
    st.sampled_from([9, 0xFFFFFF]),
)
def test_compiled_and_pure_agree(payloads: list[bytes], start: int, cut: int, limit: int) -> None:
    data = packets(payloads) + b"\xfe\x00"
    end = min(cut, len(data))
    pos = min(start, end)
    assert loaded.scan_rows(data, pos, end, limit) == PURE.scan_rows(data, pos, end, limit)


def test_stops_at_terminators_and_counts_cut_rows() -> None:
    rows = packets([b"\x01a", b"\x01b", b"\xfe\x00\x00\x02\x00"])
    assert PURE.scan_rows(rows, 0, len(rows), 9) == (12, 2, 0)
    assert PURE.scan_rows(rows, 0, 11, 9) == (11, 2, 1)  # second row cut 1 byte short
    assert PURE.scan_rows(rows, 0, 10, 9) == (6, 1, 0)  # its first byte not here yet
    err = packets([b"\xff\x15\x04#HY000boom"])
    assert PURE.scan_rows(err, 0, len(err), 0xFFFFFF) == (0, 0, 0)


@pytest.mark.skipif(not COMPILED, reason="no compiled build in this checkout")
def test_compiled_build_is_current() -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "build_accelerators.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
