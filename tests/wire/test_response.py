"""The response-shape state machine: synthetic server responses, fed in arbitrary chunks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.wire.handshake import CLIENT_DEPRECATE_EOF, CLIENT_PROTOCOL_41, CLIENT_TRANSACTIONS
from hoopy.wire.messages import (
    SERVER_MORE_RESULTS_EXISTS,
    SERVER_STATUS_CURSOR_EXISTS,
    build_err,
    build_ok,
)
from hoopy.wire.packets import MAX_PACKET_PAYLOAD, ProtocolError, frame, lenenc_int, lenenc_str
from hoopy.wire.response import (
    COM_FIELD_LIST,
    COM_PING,
    COM_QUERY,
    COM_STATISTICS,
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    ResponseTracker,
)

BASE = CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS
AUTOCOMMIT = 0x0002


def column_def(name: bytes) -> bytes:
    return (
        lenenc_str(b"def")
        + lenenc_str(b"db")
        + lenenc_str(b"t")
        + lenenc_str(b"t")
        + lenenc_str(name)
        + lenenc_str(name)
        + b"\x0c"
        + b"\x21\x00"
        + b"\xff\x00\x00\x00"
        + b"\xfd"
        + b"\x00\x00"
        + b"\x00"
        + b"\x00\x00"
    )


def eof(status: int = AUTOCOMMIT, warnings: int = 0) -> bytes:
    return b"\xfe" + warnings.to_bytes(2, "little") + status.to_bytes(2, "little")


def text_row(*values: bytes | None) -> bytes:
    return b"".join(b"\xfb" if v is None else lenenc_str(v) for v in values)


class Wire:
    """Builds a server response as framed packets with running sequence ids."""

    def __init__(self) -> None:
        self.seq = 1
        self.parts: list[bytes] = []

    def add(self, payload: bytes) -> Wire:
        data, self.seq = frame(payload, self.seq)
        self.parts.append(data)
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def result_set(
    w: Wire,
    rows: list[tuple[bytes | None, ...]],
    *,
    deprecate_eof: bool,
    status: int = AUTOCOMMIT,
    warnings: int = 0,
) -> Wire:
    ncols = len(rows[0]) if rows else 2
    w.add(lenenc_int(ncols))
    for i in range(ncols):
        w.add(column_def(b"c%d" % i))
    if not deprecate_eof:
        w.add(eof())
    for row in rows:
        w.add(text_row(*row))
    if deprecate_eof:
        w.add(build_ok(status=status, warnings=warnings, header_byte=0xFE))
    else:
        w.add(eof(status, warnings))
    return w


def packet_ends(data: bytes) -> dict[int, int]:
    """Offset just past each wire packet -> that packet's sequence id."""
    ends = {}
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "little")
        seq = data[pos + 3]
        pos += 4 + length
        ends[pos] = seq
    return ends


def feed_in_chunks(tracker: ResponseTracker, data: bytes, cuts: list[int]) -> None:
    """Feed ``data`` split at ``cuts``; the tracker must finish exactly at the last byte.

    Wherever the tracker says it is at a packet boundary (where hoopy may inject an ERR), its
    ``last_seq`` must be the sequence id of the packet that just ended there.
    """
    points = [*sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    ends = packet_ends(data)
    last = 0
    for point in points:
        assert not tracker.done, "finished before the end of the response"
        used = tracker.feed(data[last:point])
        assert used == point - last
        last = point
        if tracker.at_packet_boundary:
            assert point in ends, "claims a packet boundary mid-packet"
            assert tracker.last_seq == ends[point]
    assert tracker.done


caps_strategy = st.sampled_from([BASE, BASE | CLIENT_DEPRECATE_EOF])
rows_strategy = st.lists(
    st.tuples(st.one_of(st.none(), st.binary(max_size=300)), st.binary(max_size=20)), max_size=8
)


@settings(max_examples=200)
@given(caps=caps_strategy, rows=rows_strategy, cuts=st.lists(st.integers(0, 5000), max_size=12))
def test_text_result_set_in_any_chunks(
    caps: int, rows: list[tuple[bytes | None, bytes]], cuts: list[int]
) -> None:
    deprecate = bool(caps & CLIENT_DEPRECATE_EOF)
    data = result_set(Wire(), rows, deprecate_eof=deprecate, warnings=2).bytes()  # type: ignore[arg-type]
    tracker = ResponseTracker(COM_QUERY, caps)
    feed_in_chunks(tracker, data, cuts)
    summary = tracker.summary
    assert summary.rows == len(rows)
    assert summary.results[0].columns == 2
    assert summary.warnings == 2
    assert summary.error is None


@given(caps=caps_strategy, cuts=st.lists(st.integers(0, 2000), max_size=10))
def test_multi_results_chain_until_no_more_results_flag(caps: int, cuts: list[int]) -> None:
    deprecate = bool(caps & CLIENT_DEPRECATE_EOF)
    more = AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS
    w = Wire()
    result_set(w, [(b"1", b"a")], deprecate_eof=deprecate, status=more)
    w.add(build_ok(affected_rows=3, last_insert_id=7, status=more, warnings=1))
    result_set(w, [(b"2", b"b"), (b"3", b"c")], deprecate_eof=deprecate, status=more)
    w.add(build_ok(affected_rows=0, status=AUTOCOMMIT))  # CALL's trailing OK
    tracker = ResponseTracker(COM_QUERY, caps)
    feed_in_chunks(tracker, w.bytes(), cuts)
    s = tracker.summary
    assert [r.rows for r in s.results] == [1, 0, 2, 0]
    assert s.affected_rows == 3
    assert s.last_insert_id == 7


def test_error_ends_a_multi_result_chain() -> None:
    w = Wire().add(build_ok(status=AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS))
    w.add(build_err(1146, "42S02", "Table 'x.y' doesn't exist"))
    tracker = ResponseTracker(COM_QUERY, BASE)
    feed_in_chunks(tracker, w.bytes(), [])
    assert tracker.summary.error is not None
    assert (tracker.summary.error.code, tracker.summary.error.sqlstate) == (1146, "42S02")


def test_error_in_the_middle_of_rows() -> None:
    w = Wire().add(lenenc_int(1)).add(column_def(b"a")).add(eof()).add(text_row(b"1"))
    w.add(build_err(1317, "70100", "Query execution was interrupted"))
    tracker = ResponseTracker(COM_QUERY, BASE)
    feed_in_chunks(tracker, w.bytes(), [3, 17])
    assert tracker.summary.rows == 1
    assert tracker.summary.error is not None and tracker.summary.error.code == 1317


def test_row_starting_with_0xfe_is_a_row_when_long() -> None:
    # A text row whose first value is >= 16 MiB starts with 0xFE (8-byte length) and is
    # split into 0xFFFFFF-byte packets: it must not be taken for the end of the result.
    big = b"z" * (MAX_PACKET_PAYLOAD + 10)
    w = Wire().add(lenenc_int(1)).add(column_def(b"a"))
    w.add(text_row(big)).add(text_row(b"small"))
    w.add(build_ok(status=AUTOCOMMIT, header_byte=0xFE))
    data = w.bytes()
    tracker = ResponseTracker(COM_QUERY, BASE | CLIENT_DEPRECATE_EOF)
    feed_in_chunks(tracker, data, [1000, MAX_PACKET_PAYLOAD + 2, MAX_PACKET_PAYLOAD + 7])
    assert tracker.summary.rows == 2


def test_local_infile_pauses_until_the_file_is_sent() -> None:
    request = Wire().add(b"\xfb/tmp/data.csv").bytes()
    tracker = ResponseTracker(COM_QUERY, BASE)
    assert tracker.feed(request) == len(request)
    assert tracker.awaiting_local_infile and not tracker.done
    assert tracker.summary.local_infile == b"/tmp/data.csv"
    tracker.local_infile_sent()
    ok, _ = frame(build_ok(affected_rows=5, status=AUTOCOMMIT), 4)
    assert tracker.feed(ok) == len(ok)
    assert tracker.done and tracker.summary.affected_rows == 5


@pytest.mark.parametrize("deprecate", [False, True])
@pytest.mark.parametrize(("params", "columns"), [(0, 0), (2, 0), (0, 3), (2, 3)])
def test_prepare_response(deprecate: bool, params: int, columns: int) -> None:
    w = Wire().add(
        b"\x00"
        + (9).to_bytes(4, "little")
        + columns.to_bytes(2, "little")
        + params.to_bytes(2, "little")
        + b"\x00"
        + (1).to_bytes(2, "little")
    )
    for i in range(params):
        w.add(column_def(b"?%d" % i))
    if params and not deprecate:
        w.add(eof())
    for i in range(columns):
        w.add(column_def(b"c%d" % i))
    if columns and not deprecate:
        w.add(eof())
    tracker = ResponseTracker(COM_STMT_PREPARE, BASE | (CLIENT_DEPRECATE_EOF if deprecate else 0))
    feed_in_chunks(tracker, w.bytes(), [5, 30])
    prepared = tracker.summary.prepared
    assert prepared is not None
    assert (prepared.statement_id, prepared.num_params, prepared.num_columns) == (
        9,
        params,
        columns,
    )


def test_execute_with_cursor_stops_after_metadata() -> None:
    w = Wire().add(lenenc_int(1)).add(column_def(b"a"))
    w.add(eof(AUTOCOMMIT | SERVER_STATUS_CURSOR_EXISTS))
    tracker = ResponseTracker(COM_STMT_EXECUTE, BASE)
    feed_in_chunks(tracker, w.bytes(), [])
    assert tracker.summary.rows == 0


def test_binary_rows_and_fetch() -> None:
    w = Wire().add(lenenc_int(1)).add(column_def(b"a")).add(eof())
    for i in range(3):
        w.add(b"\x00\x00" + i.to_bytes(4, "little"))  # binary row: 0x00 header, null bitmap
    w.add(eof())
    tracker = ResponseTracker(COM_STMT_EXECUTE, BASE)
    feed_in_chunks(tracker, w.bytes(), [11])
    assert tracker.summary.rows == 3
    fetch = Wire().add(b"\x00\x00\x01\x00\x00\x00").add(eof(AUTOCOMMIT | 0x80)).bytes()
    tracker = ResponseTracker(COM_STMT_FETCH, BASE)
    feed_in_chunks(tracker, fetch, [])
    assert tracker.summary.rows == 1


def test_field_list_and_single_packet_commands() -> None:
    w = Wire().add(column_def(b"a")).add(column_def(b"b")).add(eof())
    tracker = ResponseTracker(COM_FIELD_LIST, BASE)
    feed_in_chunks(tracker, w.bytes(), [2])
    tracker = ResponseTracker(COM_PING, BASE)
    feed_in_chunks(tracker, Wire().add(build_ok(status=AUTOCOMMIT)).bytes(), [])
    tracker = ResponseTracker(COM_STATISTICS, BASE)
    feed_in_chunks(tracker, Wire().add(b"Uptime: 5  Threads: 1").bytes(), [1])
    assert ResponseTracker(COM_STMT_CLOSE, BASE).done


def test_bytes_after_the_response_are_not_consumed() -> None:
    data = Wire().add(build_ok(status=AUTOCOMMIT)).bytes()
    tracker = ResponseTracker(COM_QUERY, BASE)
    assert tracker.feed(data + b"extra") == len(data)
    assert tracker.done


@given(st.binary(max_size=200))
def test_garbage_raises_protocol_error_or_waits(data: bytes) -> None:
    tracker = ResponseTracker(COM_QUERY, BASE)
    try:
        used = tracker.feed(data)
    except ProtocolError:
        return
    assert 0 <= used <= len(data)


def test_last_seq_ignores_a_header_held_back_for_its_first_byte() -> None:
    # Found by hypothesis: a chunk ending right after a row's 4-byte header used to advance
    # last_seq for a packet not yet relayed, so an injected ERR would carry a wrong seq.
    rows = [
        (None, b"\x00" * 15),
        (b"\x00" * 8, b"\x00"),
        (b"\x00" * 3, b"\x00" * 20),
        (b"\x00" * 21, b"\x00" * 7),
    ]
    data = result_set(Wire(), rows, deprecate_eof=False).bytes()  # type: ignore[arg-type]
    feed_in_chunks(ResponseTracker(COM_QUERY, BASE), data, [122, 181])


def row_packet_bytes(data: bytes, first_row: int, count: int) -> bytes:
    """The wire bytes of ``count`` packets starting with wire packet number ``first_row``."""
    pos = 0
    index = 0
    out = b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "little")
        if first_row <= index < first_row + count:
            out += data[pos : pos + 4 + length]
        pos += 4 + length
        index += 1
    return out


@settings(max_examples=200)
@given(caps=caps_strategy, rows=rows_strategy, cuts=st.lists(st.integers(0, 5000), max_size=12))
def test_digest_covers_exactly_the_row_packets_in_any_chunks(
    caps: int, rows: list[tuple[bytes | None, bytes]], cuts: list[int]
) -> None:
    import hashlib

    deprecate = bool(caps & CLIENT_DEPRECATE_EOF)
    data = result_set(Wire(), rows, deprecate_eof=deprecate).bytes()  # type: ignore[arg-type]
    digest = hashlib.sha256()
    feed_in_chunks(ResponseTracker(COM_QUERY, caps, digest), data, cuts)
    # Packets: column count, 2 definitions, [EOF], rows..., terminator.
    first_row = 3 if deprecate else 4
    assert (
        digest.hexdigest()
        == hashlib.sha256(row_packet_bytes(data, first_row, len(rows))).hexdigest()
    )


def test_digest_of_a_row_over_16_mib_and_of_multi_results() -> None:
    import hashlib

    big = b"x" * (MAX_PACKET_PAYLOAD + 10)
    w = Wire()
    more = AUTOCOMMIT | SERVER_MORE_RESULTS_EXISTS
    result_set(w, [(big,)], deprecate_eof=True, status=more)
    result_set(w, [(b"a",), (b"b",)], deprecate_eof=True)
    data = w.bytes()
    digest = hashlib.sha256()
    feed_in_chunks(
        ResponseTracker(COM_QUERY, BASE | CLIENT_DEPRECATE_EOF, digest), data, [70000, 2**24 + 3]
    )
    # First result: count, 1 definition, the row as 2 wire packets, OK; then count, def, 2 rows.
    expected = row_packet_bytes(data, 2, 2) + row_packet_bytes(data, 7, 2)
    assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()
