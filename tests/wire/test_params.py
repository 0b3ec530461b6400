"""Prepared-statement parameters and query attributes: bytes in, params out, and back."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mysql.connector.protocol import MySQLProtocol

from hoopy.audit.values import param_from_json, param_to_json
from hoopy.wire.handshake import CLIENT_QUERY_ATTRIBUTES
from hoopy.wire.packets import ProtocolError, frame, lenenc_int, lenenc_str
from hoopy.wire.params import (
    LONG_DATA,
    MYSQL_TYPE_BIT,
    MYSQL_TYPE_BLOB,
    MYSQL_TYPE_DATE,
    MYSQL_TYPE_DATETIME,
    MYSQL_TYPE_DECIMAL,
    MYSQL_TYPE_DOUBLE,
    MYSQL_TYPE_ENUM,
    MYSQL_TYPE_FLOAT,
    MYSQL_TYPE_GEOMETRY,
    MYSQL_TYPE_INT24,
    MYSQL_TYPE_JSON,
    MYSQL_TYPE_LONG,
    MYSQL_TYPE_LONG_BLOB,
    MYSQL_TYPE_LONGLONG,
    MYSQL_TYPE_MEDIUM_BLOB,
    MYSQL_TYPE_NEWDECIMAL,
    MYSQL_TYPE_NULL,
    MYSQL_TYPE_SET,
    MYSQL_TYPE_SHORT,
    MYSQL_TYPE_STRING,
    MYSQL_TYPE_TIME,
    MYSQL_TYPE_TIMESTAMP,
    MYSQL_TYPE_TINY,
    MYSQL_TYPE_TINY_BLOB,
    MYSQL_TYPE_VAR_STRING,
    MYSQL_TYPE_VARCHAR,
    MYSQL_TYPE_YEAR,
    PARAMETER_COUNT_AVAILABLE,
    TYPE_NAMES,
    ExecuteRequest,
    Param,
    bind_types,
    decode_execute,
    decode_query_attributes,
    encode_execute,
    encode_query,
    type_code,
    type_name,
)

QA = CLIENT_QUERY_ATTRIBUTES
HEADER = b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00"  # statement 1, no cursor, 1 iteration


def one_param(ptype: int, value: bytes, *, unsigned: bool = False) -> bytes:
    """A COM_STMT_EXECUTE binding one non-NULL parameter, built by hand."""
    return HEADER + b"\x00\x01" + bytes((ptype, 0x80 if unsigned else 0)) + value


def decode_one(ptype: int, value: bytes, *, unsigned: bool = False) -> object:
    req = decode_execute(one_param(ptype, value, unsigned=unsigned), 1, None, capabilities=0)
    assert len(req.params) == 1
    assert req.params[0].type == ptype
    assert req.params[0].unsigned is unsigned
    return req.params[0].value


# --- the protocol docs' examples -----------------------------------------------------------


def test_com_stmt_execute_example_from_the_docs() -> None:
    # "COM_STMT_EXECUTE", Example: one VARCHAR parameter "foo", as framed on the wire.
    wire = bytes.fromhex("12000000 17 01000000 00 01000000 00 01 0f00 03666f6f")
    payload = wire[4:]
    req = decode_execute(payload, 1, None, capabilities=0)
    assert req == ExecuteRequest(
        statement_id=1,
        flags=0,
        iteration_count=1,
        params=(Param(MYSQL_TYPE_VARCHAR, False, "foo"),),
        types=((MYSQL_TYPE_VARCHAR, False),),
        new_params_bound=True,
    )
    encoded = encode_execute(1, [Param(MYSQL_TYPE_VARCHAR, False, "foo")])
    assert encoded == payload
    assert frame(encoded, 0)[0] == wire


@pytest.mark.parametrize(
    ("ptype", "wire", "expected"),
    [
        # "Binary Protocol Value", the examples of each ProtocolBinary:: type.
        (MYSQL_TYPE_LONGLONG, "0100000000000000", 1),
        (MYSQL_TYPE_LONG, "01000000", 1),
        (MYSQL_TYPE_INT24, "01000000", 1),
        (MYSQL_TYPE_SHORT, "0100", 1),
        (MYSQL_TYPE_YEAR, "0100", 1),
        (MYSQL_TYPE_TINY, "01", 1),
        (MYSQL_TYPE_DOUBLE, "6666666666662440", 10.2),
        (MYSQL_TYPE_DATETIME, "0bda070a11131b1e01000000", "2010-10-17 19:27:30.000001"),
        (MYSQL_TYPE_DATE, "04da070a11", "2010-10-17"),
        (MYSQL_TYPE_TIMESTAMP, "0bda070a11131b1e01000000", "2010-10-17 19:27:30.000001"),
        (MYSQL_TYPE_TIME, "0c0178000000131b1e01000000", "-2899:27:30.000001"),
        (MYSQL_TYPE_TIME, "080178000000131b1e", "-2899:27:30"),
        # The docs write the zero time as "01"; the server and every client send length 0.
        (MYSQL_TYPE_TIME, "00", "00:00:00"),
    ],
)
def test_binary_protocol_value_examples(ptype: int, wire: str, expected: object) -> None:
    assert decode_one(ptype, bytes.fromhex(wire)) == expected
    assert encode_execute(1, [Param(ptype, False, expected)]) == one_param(
        ptype, bytes.fromhex(wire)
    )


def test_float_example_is_single_precision() -> None:
    # "33 33 23 41 -- float = 10.2": as a double it is the nearest float32.
    value = decode_one(MYSQL_TYPE_FLOAT, bytes.fromhex("33332341"))
    assert isinstance(value, float)
    assert value != 10.2
    assert math.isclose(value, 10.2, rel_tol=1e-7)
    assert encode_execute(1, [Param(MYSQL_TYPE_FLOAT, False, 10.2)])[-4:] == bytes.fromhex(
        "33332341"
    )


# --- every type ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ptype", "wire", "expected"),
    [
        (MYSQL_TYPE_DECIMAL, b"\x04-1.5", "-1.5"),
        (MYSQL_TYPE_NEWDECIMAL, b"\x0412.5", "12.5"),
        (MYSQL_TYPE_VARCHAR, b"\x02\xc3\xa9", "é"),
        (MYSQL_TYPE_VAR_STRING, b"\x00", ""),
        (MYSQL_TYPE_STRING, b"\x03abc", "abc"),
        (MYSQL_TYPE_ENUM, b"\x03red", "red"),
        (MYSQL_TYPE_SET, b"\x03a,b", "a,b"),
        (MYSQL_TYPE_JSON, b'\x07{"a":1}', '{"a":1}'),
        (MYSQL_TYPE_TINY_BLOB, b"\x02\xff\x00", b"\xff\x00"),
        (MYSQL_TYPE_MEDIUM_BLOB, b"\x01\x80", b"\x80"),
        (MYSQL_TYPE_LONG_BLOB, b"\x03xyz", "xyz"),
        (MYSQL_TYPE_BLOB, b"\xfc\x00\x01" + b"\xfe" * 256, b"\xfe" * 256),
        (MYSQL_TYPE_BIT, b"\x01\xff", b"\xff"),
        (MYSQL_TYPE_GEOMETRY, b"\x02\x00\xe0", b"\x00\xe0"),
        # MYSQL_TYPE_NULL and types the server does not know are read as strings, as the
        # server's get_ps_param_len does.
        (MYSQL_TYPE_NULL, b"\x01x", "x"),
        (0x20, b"\x02hi", "hi"),
        # Dates: every length the docs allow, and MySQL 8.0.19's time zone (13).
        (MYSQL_TYPE_DATE, b"\x00", "0000-00-00"),
        (MYSQL_TYPE_DATE, b"\x07\xe8\x07\x02\x1d\x0a\x0b\x0c", "2024-02-29"),
        (MYSQL_TYPE_DATETIME, b"\x00", "0000-00-00 00:00:00"),
        (MYSQL_TYPE_DATETIME, b"\x04\xe8\x07\x02\x1d", "2024-02-29 00:00:00"),
        (MYSQL_TYPE_DATETIME, b"\x07\xe8\x07\x02\x1d\x17\x3b\x3b", "2024-02-29 23:59:59"),
        (
            MYSQL_TYPE_TIMESTAMP,
            b"\x0b\xe8\x07\x02\x1d\x17\x3b\x3b\x3f\x42\x0f\x00",
            "2024-02-29 23:59:59.999999",
        ),
        (
            MYSQL_TYPE_DATETIME,
            b"\x0d\xe8\x07\x02\x1d\x17\x3b\x3b\x00\x00\x00\x00\x4a\x01",
            "2024-02-29 23:59:59+05:30",
        ),
        (
            MYSQL_TYPE_DATETIME,
            b"\x0d\xe8\x07\x02\x1d\x17\x3b\x3b\x00\x00\x00\x00\xc4\xff",
            "2024-02-29 23:59:59-01:00",
        ),
        # TIME: hours are days * 24 + hours, as in MySQL's text form.
        (MYSQL_TYPE_TIME, b"\x08\x00\x00\x00\x00\x00\x01\x02\x03", "01:02:03"),
        (MYSQL_TYPE_TIME, b"\x08\x01\x22\x00\x00\x00\x16\x3b\x3b", "-838:59:59"),
        (
            MYSQL_TYPE_TIME,
            b"\x0c\x01\x22\x00\x00\x00\x16\x3b\x3b\x00\x00\x00\x00",
            "-838:59:59",  # a zero fraction is not shown, whatever the length
        ),
    ],
)
def test_every_type(ptype: int, wire: bytes, expected: object) -> None:
    assert decode_one(ptype, wire) == expected


@pytest.mark.parametrize(
    ("ptype", "unsigned", "wire", "value"),
    [
        (MYSQL_TYPE_TINY, False, "80", -128),
        (MYSQL_TYPE_TINY, False, "7f", 127),
        (MYSQL_TYPE_TINY, False, "ff", -1),
        (MYSQL_TYPE_TINY, True, "ff", 255),
        (MYSQL_TYPE_TINY, True, "00", 0),
        (MYSQL_TYPE_SHORT, False, "0080", -32768),
        (MYSQL_TYPE_SHORT, True, "ffff", 65535),
        (MYSQL_TYPE_YEAR, True, "ffff", 65535),
        (MYSQL_TYPE_LONG, False, "00000080", -(2**31)),
        (MYSQL_TYPE_LONG, True, "ffffffff", 2**32 - 1),
        (MYSQL_TYPE_INT24, False, "ffffffff", -1),
        (MYSQL_TYPE_LONGLONG, False, "0000000000000080", -(2**63)),
        (MYSQL_TYPE_LONGLONG, False, "ffffffffffffff7f", 2**63 - 1),
        (MYSQL_TYPE_LONGLONG, True, "ffffffffffffffff", 2**64 - 1),
    ],
)
def test_integers_at_their_boundaries(ptype: int, unsigned: bool, wire: str, value: int) -> None:
    assert decode_one(ptype, bytes.fromhex(wire), unsigned=unsigned) == value
    assert encode_execute(1, [Param(ptype, unsigned, value)]) == one_param(
        ptype, bytes.fromhex(wire), unsigned=unsigned
    )


@pytest.mark.parametrize(
    ("ptype", "unsigned", "value"),
    [
        (MYSQL_TYPE_TINY, True, 256),
        (MYSQL_TYPE_TINY, True, -1),
        (MYSQL_TYPE_TINY, False, 128),
        (MYSQL_TYPE_SHORT, False, 32768),
        (MYSQL_TYPE_LONG, True, 2**32),
        (MYSQL_TYPE_LONGLONG, True, 2**64),
        (MYSQL_TYPE_LONGLONG, False, 2**63),
        (MYSQL_TYPE_LONGLONG, False, "5"),
        (MYSQL_TYPE_FLOAT, False, 1e300),
        (MYSQL_TYPE_DOUBLE, False, "1.5"),
        (MYSQL_TYPE_DATE, False, "2024/01/01"),
        (MYSQL_TYPE_DATETIME, False, "2024-01-01 10:00:00.1234567"),
        (MYSQL_TYPE_DATETIME, False, "2024-01-01+01:00"),
        (MYSQL_TYPE_DATETIME, False, "70000-01-01"),
        (MYSQL_TYPE_TIME, False, "10:00"),
        (MYSQL_TYPE_TIME, False, "10:300:00"),
        (MYSQL_TYPE_VARCHAR, False, 5),
        (0x100, False, "x"),
    ],
)
def test_values_that_do_not_fit_their_type_are_refused(
    ptype: int, unsigned: bool, value: object
) -> None:
    with pytest.raises(ValueError):
        encode_execute(1, [Param(ptype, unsigned, value)])


def test_time_text_accepts_days_and_short_fractions() -> None:
    # "[-][D ]HH:MM:SS[.ffffff]": "1 02:00:00" is 26 hours; ".5" is half a second.
    encoded = encode_execute(1, [Param(MYSQL_TYPE_TIME, False, "-1 02:03:04.5")])
    assert encoded[-13:] == b"\x0c\x01\x01\x00\x00\x00\x02\x03\x04\x20\xa1\x07\x00"
    assert decode_execute(encoded, 1, None, capabilities=0).params[0].value == ("-26:03:04.500000")


@pytest.mark.parametrize(
    ("ptype", "wire"),
    [
        (MYSQL_TYPE_DATETIME, b"\x05\xe8\x07\x02\x1d\x00"),
        (MYSQL_TYPE_DATE, b"\x01\x00"),
        (MYSQL_TYPE_TIME, b"\x01\x00"),
        (MYSQL_TYPE_TIME, b"\x0b" + bytes(11)),
    ],
)
def test_temporal_values_of_undocumented_length_are_refused(ptype: int, wire: bytes) -> None:
    with pytest.raises(ProtocolError, match="invalid length"):
        decode_one(ptype, wire)


# --- NULL bitmap, rebinding and long data ------------------------------------------------------


def test_null_bitmap_over_several_bytes() -> None:
    # 20 parameters: NULL at 0, 7, 8, 15, 16 and 19. Bit i % 8 of byte i // 8.
    nulls = {0, 7, 8, 15, 16, 19}
    bitmap = bytes((0x81, 0x81, 0x09))
    types = bytes((MYSQL_TYPE_LONG, 0)) * 20
    values = b"".join(i.to_bytes(4, "little") for i in range(20) if i not in nulls)
    payload = HEADER + bitmap + b"\x01" + types + values
    req = decode_execute(payload, 20, None, capabilities=0)
    assert [p.value for p in req.params] == [None if i in nulls else i for i in range(20)]
    assert encode_execute(1, req.params) == payload


def test_all_null_parameters_need_no_values() -> None:
    payload = HEADER + b"\xff\x01" + bytes((MYSQL_TYPE_NULL, 0)) * 8
    req = decode_execute(payload, 8, None, capabilities=0)
    assert [p.value for p in req.params] == [None] * 8


def test_second_execute_reuses_the_types_of_the_first() -> None:
    first = decode_execute(
        HEADER
        + b"\x00\x01"
        + bytes((MYSQL_TYPE_LONGLONG, 0x80, MYSQL_TYPE_VAR_STRING, 0))
        # values
        + (2**64 - 1).to_bytes(8, "little")
        + b"\x02hi",
        2,
        None,
        capabilities=0,
    )
    assert first.types == ((MYSQL_TYPE_LONGLONG, True), (MYSQL_TYPE_VAR_STRING, False))
    # new_params_bound_flag 0: no types, values in the previously bound types.
    second_payload = HEADER + b"\x02\x00" + (7).to_bytes(8, "little")
    second = decode_execute(second_payload, 2, first.types, capabilities=0)
    assert second.new_params_bound is False
    assert second.params == (
        Param(MYSQL_TYPE_LONGLONG, True, 7),
        Param(MYSQL_TYPE_VAR_STRING, False, None),
    )
    assert second.types == first.types
    with pytest.raises(ProtocolError, match="no earlier execute"):
        decode_execute(second_payload, 2, None, capabilities=0)
    with pytest.raises(ProtocolError, match="no earlier execute"):
        decode_execute(second_payload, 2, first.types[:1], capabilities=0)


def test_long_data_parameters_have_no_bytes() -> None:
    # Parameter 1 went ahead in COM_STMT_SEND_LONG_DATA: the execute carries only 0 and 2.
    types = bytes((MYSQL_TYPE_TINY, 0, MYSQL_TYPE_BLOB, 0, MYSQL_TYPE_TINY, 0))
    payload = HEADER + b"\x00\x01" + types + b"\x05\x06"
    req = decode_execute(payload, 3, None, long_data={1}, capabilities=0)
    assert req.params == (
        Param(MYSQL_TYPE_TINY, False, 5),
        Param(MYSQL_TYPE_BLOB, False, LONG_DATA),
        Param(MYSQL_TYPE_TINY, False, 6),
    )
    assert req.params[1].is_long_data
    # Long data wins over a NULL bit (Prepared_statement::insert_parameters).
    payload = HEADER + b"\x02\x01" + types + b"\x05\x06"
    assert decode_execute(payload, 3, None, long_data={1}, capabilities=0).params[1].is_long_data
    # Without knowing about the long data the packet is misread, then found short.
    with pytest.raises(ProtocolError):
        decode_execute(HEADER + b"\x00\x01" + types + b"\x05\x06", 3, None, capabilities=0)
    # Re-encoded (a re-run, after re-sending the long data): bound, with no bytes.
    assert encode_execute(1, req.params) == HEADER + b"\x00\x01" + types + b"\x05\x06"


def test_statement_without_parameters_tolerates_trailing_bytes() -> None:
    req = decode_execute(HEADER + b"\x00\x01", 0, None, capabilities=0)
    assert req.params == () and req.statement_id == 1
    assert encode_execute(1, []) == HEADER


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "not a COM_STMT_EXECUTE"),
        (b"\x03" + HEADER[1:], "not a COM_STMT_EXECUTE"),
        (HEADER[:-1], "fixed fields"),
        (HEADER, "NULL bitmap"),
        (HEADER + b"\x00", "NULL bitmap"),
        (HEADER + b"\x00\x01\x08", "type of parameter 0"),
        (HEADER + b"\x00\x01\x08\x00\x01\x02", r"parameter 0 \(LONGLONG\)"),
        (HEADER + b"\x00\x01\xfd\x00\x05ab", r"parameter 0 \(VAR_STRING\)"),
        (HEADER + b"\x00\x01\xfd\x00\xff", "prefix 0xff"),
    ],
)
def test_malformed_execute_is_a_protocol_error(payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_execute(payload, 1, None, capabilities=0)


# --- query attributes ------------------------------------------------------------------------


def test_execute_with_query_attributes_carries_a_count_and_names() -> None:
    # MySQL 8.0.26+ clients with CLIENT_QUERY_ATTRIBUTES: PARAMETER_COUNT_AVAILABLE, a
    # parameter_count, then a name after each type; parameters past the statement's own
    # are query attributes.
    payload = (
        b"\x17\x04\x00\x00\x00\x08\x01\x00\x00\x00"
        + b"\x02"  # parameter_count: 1 placeholder + 1 attribute
        + b"\x00\x01"
        + b"\xfd\x00\x00"  # VAR_STRING, no name
        + b"\xfd\x00\x0btraceparent"
        + b"\x05admin"
        + b"\x0300-"
    )
    req = decode_execute(payload, 1, None, capabilities=QA)
    assert req.flags == PARAMETER_COUNT_AVAILABLE
    assert req.params == (
        Param(MYSQL_TYPE_VAR_STRING, False, "admin"),
        Param(MYSQL_TYPE_VAR_STRING, False, "00-", "traceparent"),
    )
    assert req.types == ((MYSQL_TYPE_VAR_STRING, False),)  # the statement's own only
    assert encode_execute(4, req.params, capabilities=QA) == payload
    # The same bytes without the capability are garbage: the count is read as the bitmap.
    with pytest.raises(ProtocolError):
        decode_execute(payload, 1, None, capabilities=0)


def test_count_is_read_without_the_flag_when_the_statement_has_parameters() -> None:
    # parse_query_bind_params reads parameter_count whenever CLIENT_QUERY_ATTRIBUTES is on
    # and the statement has parameters; mysql-connector-python sends exactly that when it
    # has no attributes to add (flags 0, count 1).
    payload = b"\x17" + MySQLProtocol().make_stmt_execute(9, (42,), ("?",), query_attrs=[])
    assert payload[5] == 0
    req = decode_execute(payload, 1, None, capabilities=QA)
    assert req.params == (Param(MYSQL_TYPE_TINY, True, 42),)


def test_statement_without_parameters_reads_the_count_only_with_the_flag() -> None:
    assert decode_execute(HEADER + b"\x05", 0, None, capabilities=QA).params == ()
    flagged = bytearray(HEADER)
    flagged[5] = PARAMETER_COUNT_AVAILABLE
    assert decode_execute(bytes(flagged) + b"\x00", 0, None, capabilities=QA).params == ()
    attr = bytes(flagged) + b"\x01\x00\x01\x08\x00\x01a" + (3).to_bytes(8, "little")
    assert decode_execute(attr, 0, None, capabilities=QA).params == (
        Param(MYSQL_TYPE_LONGLONG, False, 3, "a"),
    )
    with pytest.raises(ProtocolError, match="parameter_count"):
        decode_execute(bytes(flagged), 0, None, capabilities=QA)


def test_query_attribute_counts_out_of_range_are_refused() -> None:
    with pytest.raises(ProtocolError, match="1 parameters for 2 placeholders"):
        decode_execute(HEADER + b"\x01\x00\x01", 2, None, capabilities=QA)
    with pytest.raises(ProtocolError, match="65535"):
        decode_execute(HEADER + b"\xfd\x00\x00\x01", 1, None, capabilities=QA)


def test_rebound_execute_accepts_only_null_attributes() -> None:
    types = ((MYSQL_TYPE_TINY, False),)
    # 2 parameters (1 placeholder + 1 attribute), attribute NULL, no types: fine.
    req = decode_execute(HEADER + b"\x02\x02\x00\x07", 1, types, capabilities=QA)
    assert req.params == (Param(MYSQL_TYPE_TINY, False, 7), Param(MYSQL_TYPE_NULL, False, None))
    # The attribute has a value but no type was ever bound for it.
    with pytest.raises(ProtocolError, match="no type"):
        decode_execute(HEADER + b"\x02\x00\x00\x07\x07", 1, types, capabilities=QA)


def test_query_without_the_capability_is_all_sql() -> None:
    assert decode_query_attributes(b"\x03\x00\x01SELECT 1", 0) == ((), b"\x00\x01SELECT 1")
    assert encode_query(b"SELECT 1", capabilities=0) == b"\x03SELECT 1"
    with pytest.raises(ValueError):
        encode_query(b"SELECT 1", [Param(MYSQL_TYPE_TINY, False, 1, "a")], capabilities=0)


def test_query_attributes_prefix() -> None:
    # "COM_QUERY" with CLIENT_QUERY_ATTRIBUTES: count, set count (1), bitmap, flag,
    # type + name per attribute, values, then the query text.
    payload = (
        b"\x03\x02\x01"
        + b"\x02\x01"  # attribute 1 is NULL
        + b"\xfd\x00\x0btraceparent"
        + b"\x08\x80\x04user"
        + b"\x0300-"
        + b"SELECT ?"
    )
    attrs, sql = decode_query_attributes(payload, QA)
    assert sql == b"SELECT ?"
    assert attrs == (
        Param(MYSQL_TYPE_VAR_STRING, False, "00-", "traceparent"),
        Param(MYSQL_TYPE_LONGLONG, True, None, "user"),
    )
    assert encode_query(sql, attrs, capabilities=QA) == payload
    # No attributes still sends the count and the set count.
    assert decode_query_attributes(b"\x03\x00\x01SELECT 1", QA) == ((), b"SELECT 1")
    assert encode_query(b"SELECT 1", capabilities=QA) == b"\x03\x00\x01SELECT 1"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x16SELECT 1", "not a COM_QUERY"),
        (b"\x03", "parameter_count"),
        (b"\x03\x00", "parameter_set_count"),
        (b"\x03\x00\x02SELECT 1", "always 1"),
        (b"\x03\x01\x01\x00\x00\x08\x00\x00" + bytes(8), "without their types"),
        (b"\x03\x01\x01\x00\x01\x08\x00\x05ab", "name of parameter 0"),
        (b"\x03\x01\x01\x00", "NULL bitmap"),
    ],
)
def test_malformed_query_attributes_are_a_protocol_error(payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_query_attributes(payload, QA)


def test_names_need_the_capability_to_be_encoded() -> None:
    with pytest.raises(ValueError, match="CLIENT_QUERY_ATTRIBUTES"):
        encode_execute(1, [Param(MYSQL_TYPE_TINY, False, 1, "a")])


# --- a real client's bytes ---------------------------------------------------------------------


def test_mysql_connector_python_packets_decode() -> None:
    values = (
        -5,
        300,
        2**40,
        1.25,
        "héllo",
        b"\x00\xff",
        Decimal("12.50"),
        datetime.date(2024, 2, 29),
        datetime.datetime(2024, 2, 29, 23, 59, 59, 5),
        datetime.timedelta(days=2, hours=3, seconds=4),
        None,
        "long",
    )
    body = MySQLProtocol().make_stmt_execute(
        77, values, ("?",) * len(values), flags=1, long_data_used={11: (False,)}
    )
    req = decode_execute(b"\x17" + body, len(values), None, long_data={11}, capabilities=0)
    assert req.statement_id == 77 and req.flags == 1
    assert [(p.type_name, p.unsigned, p.value) for p in req.params] == [
        ("TINY", False, -5),
        ("SHORT", True, 300),
        ("LONGLONG", True, 2**40),
        ("DOUBLE", False, 1.25),
        ("STRING", False, "héllo"),
        ("STRING", False, b"\x00\xff"),
        ("DECIMAL", False, "12.50"),
        ("DATE", False, "2024-02-29"),
        ("DATETIME", False, "2024-02-29 23:59:59.000005"),
        ("TIME", False, "51:00:04"),
        ("NULL", False, None),
        ("STRING", False, LONG_DATA),
    ]


# --- JSON form ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "record"),
    [
        (Param(MYSQL_TYPE_LONGLONG, False, 5), {"type": "LONGLONG", "value": 5}),
        (
            Param(MYSQL_TYPE_LONGLONG, True, 2**64 - 1),
            {"type": "LONGLONG", "unsigned": True, "value": 2**64 - 1},
        ),
        (Param(MYSQL_TYPE_VAR_STRING, False, None), {"type": "VAR_STRING", "value": None}),
        (Param(MYSQL_TYPE_BLOB, False, b"\x00\xff"), {"type": "BLOB", "hex": "00ff"}),
        (Param(MYSQL_TYPE_BLOB, False, LONG_DATA), {"type": "BLOB", "long_data": True}),
        (
            Param(MYSQL_TYPE_STRING, False, "x", "traceparent"),
            {"type": "STRING", "name": "traceparent", "value": "x"},
        ),
        (Param(MYSQL_TYPE_DOUBLE, False, math.inf), {"type": "DOUBLE", "value": "Infinity"}),
        (Param(MYSQL_TYPE_FLOAT, False, -math.inf), {"type": "FLOAT", "value": "-Infinity"}),
        (Param(0xF4, False, "1"), {"type": "0xf4", "value": "1"}),
        (Param(MYSQL_TYPE_DECIMAL, False, "1.0"), {"type": "DECIMAL", "value": "1.0"}),
    ],
)
def test_json_form(param: Param, record: dict[str, Any]) -> None:
    assert param_to_json(param) == record
    assert param_from_json(json.loads(json.dumps(record))) == param


def test_nan_is_a_string_in_json() -> None:
    record = param_to_json(Param(MYSQL_TYPE_DOUBLE, False, math.nan))
    assert record == {"type": "DOUBLE", "value": "NaN"}
    json.dumps(record, allow_nan=False)
    value = param_from_json(record).value
    assert isinstance(value, float) and math.isnan(value)


def test_every_named_type_round_trips_its_name() -> None:
    assert TYPE_NAMES[MYSQL_TYPE_NEWDECIMAL] == "NEWDECIMAL"
    assert TYPE_NAMES[MYSQL_TYPE_GEOMETRY] == "GEOMETRY"
    assert TYPE_NAMES[MYSQL_TYPE_DECIMAL] == "DECIMAL"
    for code in range(256):
        assert type_code(type_name(code)) == code
    with pytest.raises(ValueError):
        type_code("VARCHAR2")


def test_truncated_values_record_their_length_and_cannot_be_replayed() -> None:
    # "é" is two bytes: a cut in its middle drops it rather than emitting half a character.
    record = param_to_json(Param(MYSQL_TYPE_VAR_STRING, False, "héllo"), max_bytes=2)
    assert record == {"type": "VAR_STRING", "value": "h", "truncated": True, "length": 6}
    with pytest.raises(ValueError, match="truncated"):
        param_from_json(record)
    record = param_to_json(Param(MYSQL_TYPE_BLOB, False, b"\x00\x01\x02"), max_bytes=2)
    assert record == {"type": "BLOB", "hex": "0001", "truncated": True, "length": 3}
    with pytest.raises(ValueError, match="truncated"):
        param_from_json(record)
    # At the limit nothing is cut.
    assert param_to_json(Param(MYSQL_TYPE_BLOB, False, b"\x00\x01"), max_bytes=2) == {
        "type": "BLOB",
        "hex": "0001",
    }
    assert param_to_json(Param(MYSQL_TYPE_STRING, False, "hé"), max_bytes=3) == {
        "type": "STRING",
        "value": "hé",
    }


@pytest.mark.parametrize(
    "record",
    [
        {"value": 1},
        {"type": 3, "value": 1},
        {"type": "LONG"},
        {"type": "LONG", "value": [1]},
        {"type": "LONG", "value": True},
        {"type": "LONG", "unsigned": "yes", "value": 1},
        {"type": "BLOB", "hex": "zz"},
        {"type": "DOUBLE", "value": "1.5"},
        {"type": "NOPE", "value": 1},
    ],
)
def test_malformed_json_records_are_refused(record: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        param_from_json(record)


# --- hypothesis --------------------------------------------------------------------------------

INT_RANGES = {
    MYSQL_TYPE_TINY: 1,
    MYSQL_TYPE_SHORT: 2,
    MYSQL_TYPE_YEAR: 2,
    MYSQL_TYPE_LONG: 4,
    MYSQL_TYPE_INT24: 4,
    MYSQL_TYPE_LONGLONG: 8,
}
STRINGISH = [
    MYSQL_TYPE_DECIMAL,
    MYSQL_TYPE_NEWDECIMAL,
    MYSQL_TYPE_VARCHAR,
    MYSQL_TYPE_VAR_STRING,
    MYSQL_TYPE_STRING,
    MYSQL_TYPE_ENUM,
    MYSQL_TYPE_SET,
    MYSQL_TYPE_JSON,
    MYSQL_TYPE_TINY_BLOB,
    MYSQL_TYPE_MEDIUM_BLOB,
    MYSQL_TYPE_LONG_BLOB,
    MYSQL_TYPE_BLOB,
    MYSQL_TYPE_BIT,
    MYSQL_TYPE_GEOMETRY,
    MYSQL_TYPE_NULL,
    0x20,
    0xF4,
]
byte_field = st.integers(0, 255)


@st.composite
def dates(draw: st.DrawFn) -> str:
    y, m, d = draw(st.integers(0, 0xFFFF)), draw(byte_field), draw(byte_field)
    return f"{y:04d}-{m:02d}-{d:02d}"


@st.composite
def datetimes(draw: st.DrawFn) -> str:
    text = draw(dates()) + " {:02d}:{:02d}:{:02d}".format(*draw(st.tuples(*[byte_field] * 3)))
    if draw(st.booleans()):
        text += f".{draw(st.integers(1, 999_999)):06d}"
    if draw(st.booleans()):
        offset = draw(st.integers(-0x7FFF, 0x7FFF))
        text += f"{'-' if offset < 0 else '+'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return text


@st.composite
def times(draw: st.DrawFn) -> str:
    sign = "-" if draw(st.booleans()) else ""
    hours = draw(st.integers(0, 0xFFFFFFFF * 24 + 23))
    text = f"{sign}{hours:02d}:{draw(byte_field):02d}:{draw(byte_field):02d}"
    if draw(st.booleans()):
        text += f".{draw(st.integers(1, 999_999)):06d}"
    return text


@st.composite
def params(draw: st.DrawFn, named: bool) -> Param:
    ptype = draw(
        st.sampled_from(
            [
                *INT_RANGES,
                MYSQL_TYPE_FLOAT,
                MYSQL_TYPE_DOUBLE,
                MYSQL_TYPE_DATE,
                MYSQL_TYPE_DATETIME,
                MYSQL_TYPE_TIMESTAMP,
                MYSQL_TYPE_TIME,
                *STRINGISH,
            ]
        )
    )
    unsigned = draw(st.booleans())
    name = draw(st.none() | st.text(max_size=12)) if named else None
    value: object
    if draw(st.integers(0, 5)) == 0:
        value = None
    elif ptype in INT_RANGES:
        bits = INT_RANGES[ptype] * 8
        lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        value = draw(st.integers(lo, hi))
    elif ptype == MYSQL_TYPE_FLOAT:
        value = draw(st.floats(width=32, allow_nan=False))
    elif ptype == MYSQL_TYPE_DOUBLE:
        value = draw(st.floats(allow_nan=False))
    elif ptype == MYSQL_TYPE_DATE:
        value = draw(dates())
    elif ptype in (MYSQL_TYPE_DATETIME, MYSQL_TYPE_TIMESTAMP):
        value = draw(datetimes())
    elif ptype == MYSQL_TYPE_TIME:
        value = draw(times())
    else:
        value = draw(st.text(max_size=300) | st.binary(max_size=300))
    return Param(ptype, unsigned, value, name)


def as_decoded(p: Param) -> Param:
    """What decoding gives back: UTF-8 bytes as str, an empty name as no name."""
    value = p.value
    if isinstance(value, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            value = value.decode("utf-8")
    return Param(p.type, p.unsigned, value, p.name or None)


@given(
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([0, 1, 2, 4]),
    st.lists(params(named=False), max_size=20),
)
def test_encode_then_decode(statement_id: int, flags: int, ps: list[Param]) -> None:
    payload = encode_execute(statement_id, ps, flags=flags)
    req = decode_execute(payload, len(ps), None, capabilities=0)
    assert (req.statement_id, req.flags, req.iteration_count) == (statement_id, flags, 1)
    assert req.params == tuple(as_decoded(p) for p in ps)
    assert req.types == tuple((p.type, p.unsigned) for p in ps)
    # Every byte is needed: any shorter payload is a ProtocolError, never a misread.
    if ps:
        for end in range(len(payload) - 1, 0, -1):
            with pytest.raises(ProtocolError):
                decode_execute(payload[:end], len(ps), None, capabilities=0)


@given(st.lists(params(named=True), max_size=12), st.data())
def test_encode_then_decode_with_query_attributes(ps: list[Param], data: st.DataObject) -> None:
    placeholders = data.draw(st.integers(0, len(ps)))
    payload = encode_execute(3, ps, capabilities=QA)
    req = decode_execute(payload, placeholders, None, capabilities=QA)
    assert req.flags == PARAMETER_COUNT_AVAILABLE
    assert req.params == tuple(as_decoded(p) for p in ps)
    assert req.types == tuple((p.type, p.unsigned) for p in ps[:placeholders])
    sql = data.draw(st.binary(max_size=50))
    assert decode_query_attributes(encode_query(sql, ps, capabilities=QA), QA) == (
        tuple(as_decoded(p) for p in ps),
        sql,
    )


def unbound(payload: bytes, count: int, type_bytes: int, attributes: bool) -> bytes:
    """``payload`` (types bound) as the same EXECUTE that reuses earlier types: flag 0 and
    no type list, the values unchanged."""
    at = 10 + (len(lenenc_int(count)) if attributes else 0) + (count + 7) // 8
    assert payload[at] == 1
    return payload[:at] + b"\x00" + payload[at + 1 + type_bytes * count :]


@given(st.lists(params(named=False), min_size=1, max_size=10), st.sampled_from([0, QA]))
def test_bind_types_writes_back_the_types_a_refused_execute_bound(
    ps: list[Param], capabilities: int
) -> None:
    attributes = bool(capabilities & QA)
    bound = encode_execute(9, ps, capabilities=capabilities)
    reused = unbound(bound, len(ps), 3 if attributes else 2, attributes)
    types = tuple((p.type, p.unsigned) for p in ps)
    # What the server never saw, written in: the very payload that bound them.
    assert bind_types(reused, len(ps), types, capabilities=capabilities) == bound
    # And it reads as the reusing execute reads against the remembered types.
    assert decode_execute(bound, len(ps), None, capabilities=capabilities).params == (
        decode_execute(reused, len(ps), types, capabilities=capabilities).params
    )
    # An execute that binds its own types is left alone.
    assert bind_types(bound, len(ps), types, capabilities=capabilities) is None


@given(
    st.lists(params(named=False), min_size=1, max_size=8),
    st.integers(1, 4),
)
def test_bind_types_gives_query_attributes_past_the_placeholders_the_null_type(
    ps: list[Param], extra: int
) -> None:
    nulls = [Param(MYSQL_TYPE_NULL, False, None)] * extra
    bound = encode_execute(9, [*ps, *nulls], capabilities=QA)
    reused = unbound(bound, len(ps) + extra, 3, True)
    types = tuple((p.type, p.unsigned) for p in ps)
    rebound = bind_types(reused, len(ps), types, capabilities=QA)
    assert rebound == bound
    assert decode_execute(rebound, len(ps), None, capabilities=QA).params == (
        decode_execute(reused, len(ps), types, capabilities=QA).params
    )


def test_bind_types_leaves_what_it_cannot_rebind() -> None:
    p = [Param(MYSQL_TYPE_LONG, False, 5)]
    bound = encode_execute(1, p)
    reused = unbound(bound, 1, 2, False)
    types = ((MYSQL_TYPE_LONG, False),)
    assert bind_types(reused, 0, types, capabilities=0) is None  # no parameters
    assert bind_types(reused, 1, (), capabilities=0) is None  # no types to give
    assert bind_types(reused[:9], 1, types, capabilities=0) is None  # too short
    with pytest.raises(ProtocolError):
        bind_types(reused[:10], 1, types, capabilities=0)  # no null bitmap


@given(st.binary(max_size=64), st.integers(0, 8), st.sampled_from([0, QA]))
def test_bind_types_on_arbitrary_bytes_raises_only_protocol_errors(
    body: bytes, num_params: int, capabilities: int
) -> None:
    types = [(MYSQL_TYPE_LONG, False)] * num_params
    with contextlib.suppress(ProtocolError):
        out = bind_types(b"\x17" + body, num_params, types, capabilities=capabilities)
        assert out is None or len(out) > len(body) + 1


@given(params(named=True))
def test_json_round_trip(p: Param) -> None:
    text = json.dumps(param_to_json(p), allow_nan=False, ensure_ascii=False)
    assert param_from_json(json.loads(text)) == p


@given(params(named=True), st.integers(0, 40))
def test_truncated_json_is_a_marked_prefix(p: Param, max_bytes: int) -> None:
    record = param_to_json(p, max_bytes=max_bytes)
    if isinstance(p.value, str):
        original = p.value.encode("utf-8")
        kept = record["value"].encode("utf-8")
    elif isinstance(p.value, bytes):
        original, kept = p.value, bytes.fromhex(record["hex"])
    else:
        assert "truncated" not in record
        return
    assert original.startswith(kept)
    assert len(kept) <= max_bytes or kept == original
    if kept == original:
        assert "truncated" not in record
        assert param_from_json(record) == p
    else:
        assert record["truncated"] is True and record["length"] == len(original)
        with pytest.raises(ValueError):
            param_from_json(record)


@given(
    st.binary(max_size=200),
    st.integers(0, 20),
    st.none() | st.lists(st.tuples(st.integers(0, 255), st.booleans()), max_size=20),
    st.frozensets(st.integers(0, 20)),
    st.sampled_from([0, QA]),
)
def test_arbitrary_bytes_raise_only_protocol_errors(
    body: bytes,
    num_params: int,
    previous: list[tuple[int, bool]] | None,
    long_data: frozenset[int],
    capabilities: int,
) -> None:
    for payload in (body, b"\x17" + body):
        try:
            req = decode_execute(
                payload, num_params, previous, long_data, capabilities=capabilities
            )
        except ProtocolError:
            continue
        assert len(req.params) >= num_params or req.params == ()
    for payload in (body, b"\x03" + body):
        try:
            _attrs, sql = decode_query_attributes(payload, capabilities)
        except ProtocolError:
            continue
        assert payload.endswith(sql)


@given(st.binary(max_size=60), st.integers(1, 4))
def test_arbitrary_parameter_bytes_raise_only_protocol_errors(body: bytes, count: int) -> None:
    # Past the fixed header, so that the values themselves are fuzzed.
    types = bytes(b for t in STRINGISH[:count] for b in (t, 0))
    for ptypes in (types, bytes((MYSQL_TYPE_DATETIME, 0, MYSQL_TYPE_TIME, 0))[: 2 * count]):
        n = len(ptypes) // 2
        with contextlib.suppress(ProtocolError):
            decode_execute(HEADER + b"\x00\x01" + ptypes + body, n, None, capabilities=0)


def test_long_strings_use_the_two_byte_length_form() -> None:
    # A 300-byte string needs the 0xFC two-byte length form.
    value = "x" * 300
    payload = encode_execute(1, [Param(MYSQL_TYPE_VAR_STRING, False, value)])
    assert payload.endswith(lenenc_str(value.encode()))
    assert payload[-303:-300] == b"\xfc\x2c\x01"
