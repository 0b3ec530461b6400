"""Column definitions and result rows (wire/rows.py): hypothesis round trips, every column
type in both protocols, and the bytes a real MariaDB sends, decoded and re-encoded unchanged."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopy.wire.packets import ProtocolError
from hoopy.wire.params import (
    MYSQL_TYPE_BLOB,
    MYSQL_TYPE_DATE,
    MYSQL_TYPE_DATETIME,
    MYSQL_TYPE_DOUBLE,
    MYSQL_TYPE_FLOAT,
    MYSQL_TYPE_INT24,
    MYSQL_TYPE_JSON,
    MYSQL_TYPE_LONG,
    MYSQL_TYPE_LONGLONG,
    MYSQL_TYPE_NEWDECIMAL,
    MYSQL_TYPE_NULL,
    MYSQL_TYPE_SHORT,
    MYSQL_TYPE_STRING,
    MYSQL_TYPE_TIME,
    MYSQL_TYPE_TIMESTAMP,
    MYSQL_TYPE_TINY,
    MYSQL_TYPE_VAR_STRING,
    MYSQL_TYPE_YEAR,
)
from hoopy.wire.rows import (
    NOT_NULL_FLAG,
    ColumnDefinition,
    binary_encoding,
    binary_value,
    decode_binary_row,
    decode_column_definition,
    decode_text_row,
    encode_binary_row,
    encode_column_definition,
    encode_text_row,
    with_room_for,
)
from tests.gateway.test_raw_protocol import BASE_CAPS, RawClient, count_response
from tests.gateway_rig import APP_PASSWORD
from tests.rig import MariaDBServer

short_bytes = st.binary(max_size=40)


@st.composite
def column_definitions(draw: st.DrawFn) -> ColumnDefinition:
    return ColumnDefinition(
        *[draw(short_bytes) for _ in range(6)],
        charset=draw(st.integers(0, 0xFFFF)),
        length=draw(st.integers(0, 0xFFFFFFFF)),
        type=draw(st.integers(0, 0xFF)),
        flags=draw(st.integers(0, 0xFFFF)),
        decimals=draw(st.integers(0, 0xFF)),
        extended=draw(st.none() | short_bytes),
        tail=draw(st.sampled_from([b"\x00\x00", b"\x00\x00\x03abc", b"\x00\x00\xfb"])),
    )


@given(column_definitions())
def test_column_definition_round_trip(column: ColumnDefinition) -> None:
    payload = encode_column_definition(column)
    assert decode_column_definition(payload, extended_metadata=column.extended is not None) == (
        column
    )


@given(st.binary(max_size=80), st.booleans())
def test_column_definition_of_arbitrary_bytes_is_a_protocol_error_or_exact(
    payload: bytes, extended: bool
) -> None:
    try:
        column = decode_column_definition(payload, extended_metadata=extended)
    except ProtocolError:
        return
    assert encode_column_definition(column) == payload


def test_room_for_a_longer_or_null_value() -> None:
    column = ColumnDefinition(b"def", b"s", b"t", b"t", b"c", b"c", 45, 4, 253, NOT_NULL_FLAG, 0)
    assert with_room_for(column, length=3, nullable=False) is column
    wider = with_room_for(column, length=20, nullable=True)
    assert (wider.length, wider.flags) == (20, 0)


@given(st.lists(st.none() | st.binary(max_size=300), max_size=30))
def test_text_row_round_trip(values: list[bytes | None]) -> None:
    payload = encode_text_row(values)
    assert decode_text_row(payload, len(values)) == values


@given(st.binary(max_size=60), st.integers(0, 8))
def test_text_row_of_arbitrary_bytes_is_a_protocol_error_or_exact(
    payload: bytes, count: int
) -> None:
    try:
        values = decode_text_row(payload, count)
    except ProtocolError:
        return
    assert encode_text_row(values) == payload


def test_text_row_with_a_missing_or_extra_value_is_refused() -> None:
    payload = encode_text_row([b"a", None])
    with pytest.raises(ProtocolError, match="column 3"):
        decode_text_row(payload, 3)
    with pytest.raises(ProtocolError, match="past its 1 values"):
        decode_text_row(payload, 1)


INT_RANGES = {
    MYSQL_TYPE_TINY: 8,
    MYSQL_TYPE_SHORT: 16,
    MYSQL_TYPE_YEAR: 16,
    MYSQL_TYPE_INT24: 32,
    MYSQL_TYPE_LONG: 32,
    MYSQL_TYPE_LONGLONG: 64,
}
STRINGISH = [MYSQL_TYPE_STRING, MYSQL_TYPE_VAR_STRING, MYSQL_TYPE_BLOB, MYSQL_TYPE_JSON]


@st.composite
def binary_cells(draw: st.DrawFn) -> tuple[int, bool, object]:
    """(type, unsigned, value) of one binary cell, value None for NULL."""
    ctype = draw(
        st.sampled_from(
            [
                *INT_RANGES,
                MYSQL_TYPE_FLOAT,
                MYSQL_TYPE_DOUBLE,
                MYSQL_TYPE_NEWDECIMAL,
                MYSQL_TYPE_DATE,
                MYSQL_TYPE_DATETIME,
                MYSQL_TYPE_TIMESTAMP,
                MYSQL_TYPE_TIME,
                MYSQL_TYPE_NULL,
                *STRINGISH,
            ]
        )
    )
    unsigned = draw(st.booleans())
    if ctype == MYSQL_TYPE_NULL or draw(st.integers(0, 4)) == 0:
        return ctype, unsigned, None
    value: object
    if ctype in INT_RANGES:
        bits = INT_RANGES[ctype]
        lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        value = draw(st.integers(lo, hi))
    elif ctype == MYSQL_TYPE_FLOAT:
        value = struct.unpack("<f", struct.pack("<f", draw(st.floats(width=32))))[0]
    elif ctype == MYSQL_TYPE_DOUBLE:
        value = draw(st.floats())
    elif ctype == MYSQL_TYPE_NEWDECIMAL:
        value = str(draw(st.decimals(allow_nan=False, allow_infinity=False, places=4)))
    elif ctype == MYSQL_TYPE_DATE:
        value = f"{draw(st.integers(0, 9999)):04d}-{draw(st.integers(1, 12)):02d}-01"
    elif ctype in (MYSQL_TYPE_DATETIME, MYSQL_TYPE_TIMESTAMP):
        micros = draw(st.integers(0, 999_999))
        value = f"2026-12-0{draw(st.integers(1, 9))} 0{draw(st.integers(0, 9))}:59:07"
        value += f".{micros:06d}" if micros else ""
    elif ctype == MYSQL_TYPE_TIME:
        value = f"-{draw(st.integers(1, 838)):02d}:00:01"
    else:
        value = draw(st.text(max_size=30) | st.binary(min_size=1, max_size=30))
    return ctype, unsigned, value


def same_value(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(b, bytes) and isinstance(a, str):
        return a.encode() == b
    if isinstance(a, bytes) and isinstance(b, str):
        return b.encode() == a
    return a == b


@given(st.lists(binary_cells(), max_size=40))
def test_binary_row_round_trip_over_every_type(cells: list[tuple[int, bool, object]]) -> None:
    types = [c[0] for c in cells]
    raw = [None if v is None else binary_encoding(t, u, v) for t, u, v in cells]
    payload = encode_binary_row(raw)
    assert decode_binary_row(payload, types) == raw
    for (ctype, unsigned, value), cell in zip(cells, raw, strict=True):
        if cell is not None:
            assert same_value(value, binary_value(ctype, unsigned, cell))
    # Every byte matters: any shorter payload is refused, never misread.
    for end in range(len(payload) - 1, 0, -max(1, len(payload) // 16)):
        with pytest.raises(ProtocolError):
            decode_binary_row(payload[:end], types)


@given(st.binary(max_size=60), st.lists(st.sampled_from([*INT_RANGES, *STRINGISH]), max_size=6))
def test_binary_row_of_arbitrary_bytes_is_a_protocol_error_or_exact(
    payload: bytes, types: list[int]
) -> None:
    try:
        values = decode_binary_row(payload, types)
    except ProtocolError:
        return
    # Exact, but for the bitmap's reserved and padding bits, which carry nothing.
    size = (len(types) + 9) // 8
    used = sum(1 << (i + 2) for i in range(len(types)))
    bitmap = int.from_bytes(payload[1 : 1 + size], "little") & used
    expected = payload[:1] + bitmap.to_bytes(size, "little") + payload[1 + size :]
    assert encode_binary_row(values) == expected


def test_a_null_typed_column_cannot_carry_a_value() -> None:
    with pytest.raises(ProtocolError, match="NULL-typed"):
        decode_binary_row(b"\x00\x00\x01", [MYSQL_TYPE_NULL])


# --- what a real MariaDB sends --------------------------------------------------------------

EVERY_TYPE = """CREATE TABLE every_type (
    id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT,
    bi BIGINT UNSIGNED, fl FLOAT, db DOUBLE, de DECIMAL(12,3), yr YEAR, d DATE, dt DATETIME(6),
    ts TIMESTAMP(3) NULL, tm TIME(2), ch CHAR(4), vc VARCHAR(20) NOT NULL, vb VARBINARY(8),
    bl BLOB, tx TEXT, js JSON, en ENUM('a','b'), st SET('x','y'), bt BIT(10), ge POINT,
    nu INT)"""
ROWS = """INSERT INTO every_type VALUES
    (1, -128, 255, -32768, -8388608, 18446744073709551615, 1.5, -2.25e300, -123456789.125,
     2026, '2026-12-02', '2026-12-02 15:04:05.123456', '2026-12-02 15:04:05.5', '-838:59:59',
     'ab', 'é ü 漢', x'00ff', x'deadbeef', 'some text', '{"a": [1, 2]}', 'b', 'x,y',
     b'1010101010', POINT(1, 2), NULL),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '0000-00-00', NULL, NULL,
     '00:00:00', '', '', '', '', '', NULL, NULL, '', b'0', NULL, NULL)"""


def result_packets(client: RawClient, payload: bytes) -> list[bytes]:
    return [p for _, p in count_response(client, payload)]


def test_real_result_sets_decode_and_re_encode_byte_for_byte(
    mariadb: MariaDBServer, fresh_db: str
) -> None:
    client = RawClient(mariadb.host, mariadb.port, "app", APP_PASSWORD, fresh_db, BASE_CAPS)
    for sql in (EVERY_TYPE, ROWS):
        assert result_packets(client, b"\x03" + sql.encode())[-1][0] == 0x00
    select = b"SELECT * FROM every_type ORDER BY id"
    text = result_packets(client, b"\x03" + select)
    count = text[0][0]
    columns = [decode_column_definition(p, extended_metadata=False) for p in text[1 : 1 + count]]
    assert [c.org_name for c in columns][:3] == [b"id", b"ti", b"tu"]
    assert all(c.org_table == b"every_type" and c.schema == fresh_db.encode() for c in columns)
    for payload, column in zip(text[1 : 1 + count], columns, strict=True):
        assert encode_column_definition(column) == payload
    rows = text[2 + count : -1]
    assert len(rows) == 2
    for payload in rows:
        assert encode_text_row(decode_text_row(payload, count)) == payload
    assert decode_text_row(rows[0], count)[15] == "é ü 漢".encode()

    prepared = result_packets(client, b"\x16" + select)
    stmt_id = struct.unpack("<I", prepared[0][1:5])[0]
    binary = result_packets(client, b"\x17" + struct.pack("<IBI", stmt_id, 0, 1))
    columns = [decode_column_definition(p, extended_metadata=False) for p in binary[1 : 1 + count]]
    types = [c.type for c in columns]
    rows = binary[2 + count : -1]
    decoded: list[list[Any]] = []
    for payload in rows:
        cells = decode_binary_row(payload, types)
        assert encode_binary_row(cells) == payload
        decoded.append(
            [
                None if cell is None else binary_value(c.type, c.unsigned, cell)
                for c, cell in zip(columns, cells, strict=True)
            ]
        )
        # Each value re-encodes to what the server sent (the server writes the shortest
        # temporal form, as binary_encoding does).
        for c, cell, value in zip(columns, cells, decoded[-1], strict=True):
            if cell is not None and c.type_name not in ("GEOMETRY", "BIT", "BLOB", "VAR_STRING"):
                assert binary_encoding(c.type, c.unsigned, value) == cell, c.org_name
    first = dict(zip([c.org_name.decode() for c in columns], decoded[0], strict=True))
    assert first["ti"] == -128 and first["tu"] == 255 and first["bi"] == 2**64 - 1
    assert first["fl"] == 1.5 and first["db"] == -2.25e300
    assert first["de"] == "-123456789.125"
    assert first["dt"] == "2026-12-02 15:04:05.123456" and first["tm"] == "-838:59:59"
    assert first["vc"] == "é ü 漢" and first["vb"] == b"\x00\xff"
    assert first["nu"] is None
    second = dict(zip([c.org_name.decode() for c in columns], decoded[1], strict=True))
    assert second["d"] == "0000-00-00" and second["tm"] == "00:00:00"
    client.close()
