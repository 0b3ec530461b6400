"""The compiled masking loop (wire/_rowmask.py) against the general path it stands in for.

``mask_rows`` must give, for any rows of any column types, byte for byte what
``MaskingPlan.text_row``/``binary_row`` framed one packet at a time give, stop before the
row the general path would fail on (leaving nothing of it behind), and behave the same built
with mypyc and as plain Python. ``Masker.text_function`` must return (or raise) what
``mask_text`` does, for every strategy, type and character set.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hoopy.wire._rowmask as loaded
from hoopy.policy.masking import (
    UNMASKED,
    ColumnPattern,
    Masker,
    MaskingError,
    MaskingPlan,
    MaskingPolicy,
    MaskingRule,
    Strategy,
)
from hoopy.wire.packets import frame
from hoopy.wire.params import (
    MYSQL_TYPE_BIT,
    MYSQL_TYPE_BLOB,
    MYSQL_TYPE_DATE,
    MYSQL_TYPE_DATETIME,
    MYSQL_TYPE_DOUBLE,
    MYSQL_TYPE_JSON,
    MYSQL_TYPE_LONG,
    MYSQL_TYPE_LONGLONG,
    MYSQL_TYPE_NEWDECIMAL,
    MYSQL_TYPE_NULL,
    MYSQL_TYPE_TIME,
    MYSQL_TYPE_TINY,
    MYSQL_TYPE_VAR_STRING,
    MYSQL_TYPE_YEAR,
)
from hoopy.wire.rows import (
    UNSIGNED_FLAG,
    ColumnDefinition,
    binary_encoding,
    encode_binary_row,
    encode_column_definition,
    encode_text_row,
)
from tests.wire.builds import build_is_current, compiled, pure

SOURCE = Path(__file__).resolve().parents[2] / "hoopy" / "wire" / "_rowmask.py"
COMPILED = compiled(loaded)
KEY = b"k" * 32
EOF_PACKET = b"\xfe\x00\x00\x02\x00"




PURE = pure(SOURCE, "_rowmask_pure")

# --- columns, values, plans ---------------------------------------------------------------

UTF8MB4, LATIN1, KOI8R, UCS2, UTF16, GEOSTD8, BINARY = 45, 8, 7, 35, 54, 92, 63


def _text(charset: str) -> st.SearchStrategy[bytes]:
    return st.text(max_size=12).map(lambda s: s.encode(charset, "replace"))


def _number(lo: int, hi: int) -> st.SearchStrategy[tuple[bytes, Any]]:
    return st.integers(lo, hi).map(lambda n: (str(n).encode(), n))


def _pair(values: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[bytes, Any]]:
    # Strings travel as the same bytes in both protocols.
    return values.map(lambda b: (b, b))


_DATE = st.dates().map(lambda d: d.isoformat())
_DATETIME = st.datetimes().map(lambda d: d.replace(microsecond=0).isoformat(sep=" "))

# (type, charset, flags, (text value, binary value) strategy)
KINDS: list[tuple[int, int, int, st.SearchStrategy[tuple[bytes, Any]]]] = [
    (MYSQL_TYPE_VAR_STRING, UTF8MB4, 0, _pair(_text("utf-8"))),
    (MYSQL_TYPE_VAR_STRING, UTF8MB4, 0, _pair(st.binary(max_size=8))),  # may not be utf-8
    (MYSQL_TYPE_VAR_STRING, LATIN1, 0, _pair(st.binary(max_size=8))),
    (MYSQL_TYPE_VAR_STRING, KOI8R, 0, _pair(_text("koi8-r"))),
    (MYSQL_TYPE_VAR_STRING, UCS2, 0, _pair(_text("utf-16-be"))),
    (MYSQL_TYPE_VAR_STRING, UTF16, 0, _pair(_text("utf-16-be"))),
    (MYSQL_TYPE_VAR_STRING, GEOSTD8, 0, _pair(st.binary(max_size=8))),  # cannot be masked
    (MYSQL_TYPE_BLOB, BINARY, 0, _pair(st.binary(max_size=300))),  # lengths past 250 too
    (MYSQL_TYPE_JSON, UTF8MB4, 0, _pair(st.just(b'{"a": 1}'))),
    (MYSQL_TYPE_BIT, BINARY, 0, _pair(st.binary(min_size=1, max_size=8))),
    (MYSQL_TYPE_TINY, BINARY, 0, _number(-128, 127)),
    (MYSQL_TYPE_LONG, BINARY, UNSIGNED_FLAG, _number(0, 2**32 - 1)),
    (MYSQL_TYPE_LONGLONG, BINARY, 0, _number(-(2**63), 2**63 - 1)),
    (MYSQL_TYPE_YEAR, BINARY, UNSIGNED_FLAG, _number(1901, 2155)),
    (
        MYSQL_TYPE_DOUBLE,
        BINARY,
        0,
        st.floats(allow_nan=False, allow_infinity=False).map(lambda f: (repr(f).encode(), f)),
    ),
    (
        MYSQL_TYPE_NEWDECIMAL,
        BINARY,
        0,
        st.decimals(places=2, min_value=-999, max_value=999).map(
            lambda d: (str(d).encode(), str(d).encode())
        ),
    ),
    (MYSQL_TYPE_DATE, BINARY, 0, _DATE.map(lambda s: (s.encode(), s))),
    (MYSQL_TYPE_DATETIME, BINARY, 0, _DATETIME.map(lambda s: (s.encode(), s))),
    (MYSQL_TYPE_TIME, BINARY, 0, st.just((b"12:34:56", "12:34:56"))),
    (MYSQL_TYPE_NULL, BINARY, 0, st.nothing()),
]
MASKERS = [
    None,
    Masker(Strategy.REDACT),
    Masker(Strategy.REDACT, replacement="[gone]"),
    Masker(Strategy.KEEP_LAST, keep=2),
    Masker(Strategy.HMAC, key=KEY),
    Masker(Strategy.NULL),
]


def column_of(i: int, kind: int) -> ColumnDefinition:
    ctype, charset, flags, _ = KINDS[kind]
    name = f"c{i}".encode()
    return ColumnDefinition(
        b"def", b"db", b"t", b"t", name, name, charset, 40, ctype, flags, 2 * (ctype == 0xF6)
    )


def plan_for(columns: list[ColumnDefinition], maskers: list[Masker | None]) -> MaskingPlan:
    rules = tuple(
        MaskingRule(f"s/r{i}", (ColumnPattern.parse(f"t.c{i}"),), m)
        for i, m in enumerate(maskers)
        if m is not None
    )
    plan = MaskingPolicy(rules).plan([encode_column_definition(c) for c in columns])
    assert plan is not None
    return plan


@st.composite
def results(draw: st.DrawFn) -> tuple[MaskingPlan, list[int], bool]:
    """A plan for a result set of 1 to 6 columns with at least one masked, and its protocol."""
    kinds = draw(st.lists(st.integers(0, len(KINDS) - 1), min_size=1, max_size=6))
    maskers = draw(st.lists(st.sampled_from(MASKERS), min_size=len(kinds), max_size=len(kinds)))
    if all(m is None for m in maskers):
        maskers[0] = Masker(Strategy.REDACT)
    columns = [column_of(i, k) for i, k in enumerate(kinds)]
    return plan_for(columns, maskers), kinds, draw(st.booleans())


@st.composite
def row_payloads(draw: st.DrawFn, kinds: list[int], binary: bool) -> bytes:
    values: list[tuple[bytes, Any] | None] = []
    for k in kinds:
        ctype, _, flags, strategy = KINDS[k]
        if ctype == MYSQL_TYPE_NULL or draw(st.integers(0, 4)) == 0:
            values.append(None)
        else:
            values.append(draw(strategy))
    if not binary:
        return encode_text_row([None if v is None else v[0] for v in values])
    cells = []
    for k, v in zip(kinds, values, strict=True):
        ctype, _, flags, _ = KINDS[k]
        if v is None:
            cells.append(None)
        elif isinstance(v[1], bytes):
            cells.append(binary_encoding(MYSQL_TYPE_BLOB, False, v[1]))
        else:
            cells.append(binary_encoding(ctype, bool(flags & UNSIGNED_FLAG), v[1]))
    return encode_binary_row(cells)


# --- the loop against the general path ----------------------------------------------------


def general(
    plan: MaskingPlan, binary: bool, payloads: list[bytes], seq: int, shift: int
) -> tuple[bytes, dict[str, int], int, int]:
    """What the per-packet path sends for these rows: (bytes, counts, rows, next seq), up to
    the first row it cannot mask."""
    out = b""
    counts: dict[str, int] = {}
    rows = 0
    for payload in payloads:
        try:
            new, masked = (plan.binary_row if binary else plan.text_row)(payload)
        except MaskingError:
            break
        data, _ = frame(new, (seq + shift) & 0xFF)
        out += data
        for rule, n in masked.items():
            counts[rule] = counts.get(rule, 0) + n
        rows += 1
        seq = (seq + 1) & 0xFF
    return out, counts, rows, seq


def run(
    module: ModuleType,
    plan: MaskingPlan,
    binary: bool,
    data: bytes,
    end: int,
    limit: int,
    shift: int,
) -> tuple[tuple[int, int, int, int], bytes, dict[str, int]]:
    fast = plan.rewriter(binary)
    assert fast is not None
    tally = [0] * len(fast.kinds)
    out = bytearray(b"before")
    got = module.mask_rows(
        data, 0, end, limit, binary, fast.slots, fast.widths, fast.kinds, fast.args,
        tally, shift, out,
    )  # fmt: skip
    assert out[:6] == b"before"
    counts: dict[str, int] = {}
    for k, n in enumerate(tally):
        if n:
            counts[fast.rules[k]] = counts.get(fast.rules[k], 0) + n
    return got, bytes(out[6:]), counts


@settings(max_examples=300, deadline=None)
@given(st.data(), results(), st.integers(0, 255), st.integers(0, 255), st.booleans())
def test_the_loop_sends_what_the_general_path_sends(
    data: st.DataObject,
    result: tuple[MaskingPlan, list[int], bool],
    seq: int,
    shift: int,
    deprecate_eof: bool,
) -> None:
    plan, kinds, binary = result
    payloads = data.draw(st.lists(row_payloads(kinds, binary), max_size=8))
    stream = b""
    s = seq
    for payload in payloads:
        framed, s = frame(payload, s)
        stream += framed
    terminator = b"\xfe\x00\x00\x02\x00\x00\x00" if deprecate_eof else EOF_PACKET
    stream += frame(terminator, s)[0]
    limit = 0xFFFFFF if deprecate_eof else 9
    want, want_counts, want_rows, want_seq = general(plan, binary, payloads, seq, shift)
    failed = want_rows < len(payloads)
    for module in (PURE, loaded):
        (pos, rows, next_seq, why), out, counts = run(
            module, plan, binary, stream, len(stream), limit, shift
        )
        assert (out, counts, rows) == (want, want_counts, want_rows)
        assert why == (module.SLOW if failed else module.END)
        assert next_seq == (want_seq if rows else -1)
        # It stopped at the packet the general path takes next.
        assert pos == sum(len(p) + 4 for p in payloads[:rows])
    # A chunk cut anywhere: whole rows before the cut, nothing of the one it cuts.
    cut = data.draw(st.integers(0, len(stream)))
    for module in (PURE, loaded):
        (pos, rows, _, why), out, _ = run(module, plan, binary, stream, cut, limit, shift)
        whole = 0
        edge = 0
        while whole < want_rows and edge + len(payloads[whole]) + 4 <= cut:
            edge += len(payloads[whole]) + 4
            whole += 1
        assert rows == whole and pos == edge
        assert out == general(plan, binary, payloads[:whole], seq, shift)[0]
        nxt = payloads[whole] if whole < len(payloads) else terminator
        if edge + 4 + len(nxt) > cut:
            assert why == module.MORE
        else:
            assert why == (module.END if whole == len(payloads) else module.SLOW)


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=10), st.integers(0, 255))
def test_unmasked_rows_are_copied_and_renumbered(payloads: list[bytes], shift: int) -> None:
    payloads = [b"\x01" + p for p in payloads]  # never a terminator's first byte
    stream = b""
    seq = 3
    for p in payloads:
        framed, seq = frame(p, seq)
        stream += framed
    want = b"".join(frame(p, (3 + i + shift) & 0xFF)[0] for i, p in enumerate(payloads))
    for module in (PURE, loaded):
        out = bytearray()
        pos, rows, _, _ = module.mask_rows(
            stream + EOF_PACKET, 0, len(stream) + 5, 9, False, UNMASKED.slots, UNMASKED.widths,
            UNMASKED.kinds, UNMASKED.args, [], shift, out,
        )  # fmt: skip
        assert (bytes(out), rows, pos) == (want, len(payloads), len(stream))


def test_stops_before_packets_the_general_path_takes() -> None:
    plan = plan_for([column_of(0, 0)], [Masker(Strategy.REDACT)])
    fast = plan.rewriter(False)
    assert fast is not None

    def stop(stream: bytes) -> tuple[int, int, int, int]:
        return PURE.mask_rows(  # type: ignore[no-any-return]
            stream, 0, len(stream), 9, False, fast.slots, fast.widths, fast.kinds,
            fast.args, [0], 0, bytearray(),
        )  # fmt: skip

    row = frame(b"\x01a", 0)[0]
    assert stop(row + frame(b"\xff\x15\x04#HY000boom", 1)[0])[2:] == (1, PURE.END)
    assert stop(row + b"\x00\x00\x00\x01")[2:] == (1, PURE.SLOW)  # an empty packet
    assert stop(row + b"\xff\xff\xff\x01" + b"\x01")[2:] == (1, PURE.MORE)
    assert stop(row + frame(b"\x05ab", 1)[0])[2:] == (1, PURE.SLOW)  # a value cut short
    assert stop(row + frame(b"\x01ab", 1)[0])[2:] == (1, PURE.SLOW)  # bytes past its values
    assert stop(row[:-1])[:3] == (0, 0, -1)


def test_a_row_that_would_grow_to_16_mib_takes_the_general_path() -> None:
    growing = Masker(Strategy.REDACT, replacement="x" * 200)
    plan = plan_for([column_of(0, 7), column_of(1, 0)], [None, growing])
    fast = plan.rewriter(False)
    assert fast is not None
    big = encode_text_row([b"a" * (0xFFFFFF - 100), b"b"])
    framed = frame(big, 0)[0]
    assert len(framed) < 0xFFFFFF + 4  # one packet as it came
    out = bytearray()
    got = PURE.mask_rows(
        framed, 0, len(framed), 9, False, fast.slots, fast.widths, fast.kinds, fast.args,
        [0], 0, out,
    )  # fmt: skip
    assert got == (0, 0, -1, PURE.SLOW) and not out
    new, _ = plan.text_row(big)
    assert len(new) >= 0xFFFFFF  # the general path sends it as two packets


# --- the specialised mask functions -------------------------------------------------------


@settings(max_examples=400)
@given(
    st.integers(0, len(KINDS) - 1).flatmap(
        lambda k: st.tuples(
            st.just(k), KINDS[k][3] if KINDS[k][0] != MYSQL_TYPE_NULL else st.just((b"", b""))
        )
    ),
    st.sampled_from([m for m in MASKERS if m is not None]),
    st.binary(max_size=6),
)
def test_text_functions_return_what_mask_text_returns(
    kind_value: tuple[int, tuple[bytes, Any]], masker: Masker, junk: bytes
) -> None:
    kind, (value, _) = kind_value
    c = column_of(0, kind)
    fn = masker.text_function(c)
    for v in (value, junk):
        try:
            want: bytes | str | None = masker.mask_text(c, v)
        except MaskingError as exc:
            want = f"error: {exc}"
        try:
            got: bytes | str | None = fn(v)
        except MaskingError as exc:
            got = f"error: {exc}"
        assert got == want


@given(st.binary(max_size=200), st.binary(max_size=100))
def test_the_keyed_hash_is_hmac_sha256(key: bytes, value: bytes) -> None:
    if not key:
        key = b"\x00"
    masker = Masker(Strategy.HMAC, key=key)
    c = column_of(0, 0)
    want = b"h:" + hmac.new(key, value, "sha256").hexdigest()[:16].encode()
    assert masker.mask_text(c, value) == want
    assert masker.text_function(c)(value) == want


@pytest.mark.skipif(not COMPILED, reason="no compiled build in this checkout")
def test_compiled_build_is_current() -> None:
    result = build_is_current()
    assert result.returncode == 0, result.stdout
