"""The row-scanning hot loop: the mypyc-compiled build must behave exactly like the source."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hoopy.wire._rowscan as loaded
from hoopy.wire.packets import frame
from tests.wire.builds import build_is_current, compiled, pure

SOURCE = Path(__file__).resolve().parents[2] / "hoopy" / "wire" / "_rowscan.py"




PURE = pure(SOURCE, "_rowscan_pure")
COMPILED = compiled(loaded)


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
    result = build_is_current()
    assert result.returncode == 0, result.stdout
