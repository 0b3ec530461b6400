"""Masking rules, strategies and plans (policy/masking.py): which columns, what a masked value
looks like in each type and protocol, and what a real MariaDB reports as a column's origin."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopy.policy.masking import (
    ColumnPattern,
    Masker,
    MaskingError,
    MaskingPolicy,
    MaskingRule,
    Strategy,
)
from hoopy.wire.params import (
    MYSQL_TYPE_BIT,
    MYSQL_TYPE_BLOB,
    MYSQL_TYPE_DATE,
    MYSQL_TYPE_DATETIME,
    MYSQL_TYPE_DOUBLE,
    MYSQL_TYPE_GEOMETRY,
    MYSQL_TYPE_INT24,
    MYSQL_TYPE_JSON,
    MYSQL_TYPE_LONG,
    MYSQL_TYPE_LONGLONG,
    MYSQL_TYPE_NEWDECIMAL,
    MYSQL_TYPE_SHORT,
    MYSQL_TYPE_TIME,
    MYSQL_TYPE_TINY,
    MYSQL_TYPE_VAR_STRING,
    MYSQL_TYPE_YEAR,
)
from hoopy.wire.rows import (
    NOT_NULL_FLAG,
    UNSIGNED_FLAG,
    ColumnDefinition,
    binary_encoding,
    binary_value,
    decode_binary_row,
    decode_column_definition,
    decode_text_row,
    encode_binary_row,
    encode_column_definition,
    encode_text_row,
)
from tests.gateway.test_raw_protocol import BASE_CAPS, RawClient, count_response
from tests.gateway_rig import APP_PASSWORD
from tests.rig import MariaDBServer

UTF8MB4 = 45
LATIN1 = 8
BINARY = 63
KEY = b"k" * 32


def column(
    name: str,
    ctype: int = MYSQL_TYPE_VAR_STRING,
    *,
    table: str = "customers",
    schema: str = "shop",
    alias: str | None = None,
    charset: int = UTF8MB4,
    flags: int = 0,
    length: int = 80,
    decimals: int = 0,
) -> ColumnDefinition:
    return ColumnDefinition(
        b"def",
        schema.encode(),
        ((alias and table) or table).encode(),
        table.encode(),
        (alias or name).encode(),
        name.encode(),
        charset,
        length,
        ctype,
        flags,
        decimals,
    )


def expression(alias: str, ctype: int = MYSQL_TYPE_VAR_STRING) -> ColumnDefinition:
    return ColumnDefinition(b"def", b"", b"", b"", alias.encode(), b"", UTF8MB4, 80, ctype, 0, 0)


def rule(*patterns: str, masker: Masker | None = None) -> MaskingRule:
    return MaskingRule(
        "pii/r", tuple(ColumnPattern.parse(p) for p in patterns), masker or Masker(Strategy.REDACT)
    )


# --- which columns ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        ("shop.customers.email", True),
        ("customers.email", True),
        ("email", True),
        ("*.email", True),
        ("*.*.email", True),
        ("SHOP.Customers.EMAIL", True),
        ("*mail", True),
        ("shop.orders.email", False),
        ("other.customers.email", False),
        ("customers.e?ail", True),
        ("customers.[ef]mail", True),
        ("phone", False),
    ],
)
def test_patterns_match_the_physical_column(pattern: str, matched: bool) -> None:
    r = rule(pattern)
    assert r.matches(column("email")) is matched
    # An alias does not hide the origin the server reports.
    assert r.matches(column("email", alias="e")) is matched


def test_an_expression_matches_by_its_name_only_for_open_patterns() -> None:
    assert rule("email").matches(expression("email"))
    assert rule("*.email").matches(expression("email"))
    assert not rule("customers.email").matches(expression("email"))
    assert not rule("email").matches(expression("x"))


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.b.c.d", "a."])
def test_malformed_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="column pattern"):
        ColumnPattern.parse(bad)


def test_the_first_matching_rule_decides_and_plans_are_cached() -> None:
    first = MaskingRule("a/first", (ColumnPattern.parse("email"),), Masker(Strategy.NULL))
    second = MaskingRule("a/second", (ColumnPattern.parse("*"),), Masker(Strategy.REDACT))
    policy = MaskingPolicy((first, second))
    defs = [encode_column_definition(c) for c in (column("email"), column("id", MYSQL_TYPE_LONG))]
    plan = policy.plan(defs)
    assert plan is not None
    assert [(m.index, m.rule) for m in plan.masked] == [(0, "a/first"), (1, "a/second")]
    assert policy.plan(defs) is plan
    assert plan.rules == {"a/first": ["email"], "a/second": ["id"]}
    assert MaskingPolicy((first,)).plan([encode_column_definition(column("name"))]) is None


# --- what a masked value is ---------------------------------------------------------------


def test_redact_keep_last_hmac_and_null_on_strings() -> None:
    c = column("card")
    assert Masker(Strategy.REDACT).mask_text(c, b"4111111111111111") == b"****"
    assert Masker(Strategy.REDACT, replacement="[hidden]").mask_text(c, b"x") == b"[hidden]"
    assert Masker(Strategy.KEEP_LAST).mask_text(c, b"4111111111111234") == b"************1234"
    assert Masker(Strategy.KEEP_LAST, keep=0).mask_text(c, b"abc") == b"***"
    assert Masker(Strategy.KEEP_LAST).mask_text(c, b"ab") == b"ab"
    # Characters, not bytes, in the column's character set.
    assert Masker(Strategy.KEEP_LAST, keep=2).mask_text(c, "日本語です".encode()) == (
        "***です".encode()
    )
    latin = column("card", charset=LATIN1)
    assert Masker(Strategy.KEEP_LAST, keep=1).mask_text(latin, "café".encode("cp1252")) == (
        "***é".encode("cp1252")
    )
    # MySQL's latin1 has all 256 bytes (cp1252 leaves five undefined).
    assert Masker(Strategy.KEEP_LAST, keep=2).mask_text(latin, b"\x81\x8d\x90\x9dx") == (
        b"***\x9dx"
    )
    hashed = Masker(Strategy.HMAC, key=KEY)
    one = hashed.mask_text(c, b"alice@example.com")
    assert one == hashed.mask_text(c, b"alice@example.com")  # stable: joins still work
    assert one != hashed.mask_text(c, b"bob@example.com")
    assert one != Masker(Strategy.HMAC, key=b"other" * 8).mask_text(c, b"alice@example.com")
    assert one is not None and one.startswith(b"h:") and len(one) == 18
    assert Masker(Strategy.NULL).mask_text(c, b"x") is None


def test_a_value_not_in_its_character_set_fails_closed() -> None:
    with pytest.raises(MaskingError, match="not valid utf-8"):
        Masker(Strategy.KEEP_LAST).mask_text(column("card"), b"\xff\xfe12345")
    # Binary strings keep bytes.
    blob = column("doc", MYSQL_TYPE_BLOB, charset=BINARY)
    assert Masker(Strategy.KEEP_LAST, keep=2).mask_text(blob, b"\xff\xfe\x00\x01") == (
        b"**\x00\x01"
    )


def test_json_columns_get_json() -> None:
    c = column("profile", MYSQL_TYPE_JSON)
    for masker in (Masker(Strategy.REDACT), Masker(Strategy.HMAC, key=KEY)):
        masked = masker.mask_text(c, b'{"ssn": "123-45-6789"}')
        assert masked is not None and isinstance(json.loads(masked), str)
        assert b"6789" not in masked


INTS = [
    (MYSQL_TYPE_TINY, 8),
    (MYSQL_TYPE_SHORT, 16),
    (MYSQL_TYPE_INT24, 24),
    (MYSQL_TYPE_LONG, 32),
    (MYSQL_TYPE_LONGLONG, 64),
]


@given(
    st.sampled_from(INTS),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([Strategy.REDACT, Strategy.HMAC, Strategy.KEEP_LAST]),
)
def test_masked_integers_fit_their_type(
    kind: tuple[int, int], unsigned: bool, value: int, strategy: Strategy
) -> None:
    ctype, bits = kind
    c = column("n", ctype, flags=UNSIGNED_FLAG if unsigned else 0)
    masked = Masker(strategy, key=KEY).mask_text(c, str(value).encode())
    assert masked is not None
    number = int(masked)
    lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if strategy is not Strategy.KEEP_LAST:  # keep_last keeps digits the value had
        assert lo <= number <= hi


def test_decimals_dates_and_times_keep_their_type() -> None:
    dec = column("salary", MYSQL_TYPE_NEWDECIMAL, length=10, decimals=2)
    for strategy in (Strategy.REDACT, Strategy.HMAC):
        masked = Masker(strategy, key=KEY).mask_text(dec, b"12345.67")
        assert masked is not None
        number = Decimal(masked.decode())
        assert number.as_tuple().exponent == -2 and abs(number) < 10**8
    assert Masker(Strategy.KEEP_LAST, keep=2).mask_text(dec, b"-12345.67") == b"-00000.67"
    assert Masker(Strategy.REDACT).mask_text(column("y", MYSQL_TYPE_YEAR), b"1990") == b"0000"
    assert 1901 <= int(Masker(Strategy.HMAC, key=KEY).mask_text(column("y", MYSQL_TYPE_YEAR), b"1990") or 0) <= 2155
    for ctype, parse in (
        (MYSQL_TYPE_DATE, date.fromisoformat),
        (MYSQL_TYPE_DATETIME, datetime.fromisoformat),
    ):
        for strategy in (Strategy.REDACT, Strategy.HMAC, Strategy.KEEP_LAST):
            masked = Masker(strategy, key=KEY).mask_text(column("born", ctype), b"1980-05-17")
            assert masked is not None
            parse(masked.decode())
            assert b"1980" not in masked
    time = Masker(Strategy.HMAC, key=KEY).mask_text(column("t", MYSQL_TYPE_TIME), b"-12:00:01")
    assert time is not None and len(time.split(b":")) == 3
    with pytest.raises(MaskingError, match="malformed number"):
        Masker(Strategy.REDACT).mask_text(column("n", MYSQL_TYPE_LONG), b"12abc")


def test_types_no_stand_in_can_imitate_become_null_and_their_columns_nullable() -> None:
    for ctype in (MYSQL_TYPE_BIT, MYSQL_TYPE_GEOMETRY):
        c = column("g", ctype, flags=NOT_NULL_FLAG, charset=BINARY)
        assert Masker(Strategy.REDACT).mask_text(c, b"\x01\x02") is None
        plan = MaskingPolicy((rule("g"),)).plan([encode_column_definition(c)])
        assert plan is not None
        rewritten = decode_column_definition(plan.definitions[0], extended_metadata=False)
        assert not rewritten.flags & NOT_NULL_FLAG


def test_column_definitions_make_room_for_the_stand_in() -> None:
    c = column("pin", flags=NOT_NULL_FLAG, length=4)
    plan = MaskingPolicy((rule("pin", masker=Masker(Strategy.HMAC, key=KEY)),)).plan(
        [encode_column_definition(c)]
    )
    assert plan is not None
    rewritten = decode_column_definition(plan.definitions[0], extended_metadata=False)
    assert rewritten.length >= 18 and rewritten.flags & NOT_NULL_FLAG
    null_plan = MaskingPolicy((rule("pin", masker=Masker(Strategy.NULL)),)).plan(
        [encode_column_definition(c)]
    )
    assert null_plan is not None
    assert not decode_column_definition(null_plan.definitions[0], extended_metadata=False).flags & (
        NOT_NULL_FLAG
    )


@given(st.text(min_size=5, max_size=60).filter(lambda s: not set(s) <= set("0123456789abcdefh:*")))
def test_a_masked_string_never_contains_the_value(value: str) -> None:
    c = column("secret")
    data = value.encode()
    for masker in (Masker(Strategy.REDACT), Masker(Strategy.HMAC, key=KEY), Masker(Strategy.NULL)):
        masked = masker.mask_text(c, data)
        assert masked is None or data not in masked


# --- rows, both protocols -----------------------------------------------------------------


def test_plans_rewrite_text_and_binary_rows() -> None:
    columns = [
        column("id", MYSQL_TYPE_LONGLONG, flags=UNSIGNED_FLAG),
        column("email", alias="e"),
        column("score", MYSQL_TYPE_DOUBLE),
        column("born", MYSQL_TYPE_DATE),
        column("note"),
    ]
    policy = MaskingPolicy(
        (
            rule("email", masker=Masker(Strategy.HMAC, key=KEY)),
            rule("score", "born"),
        )
    )
    plan = policy.plan([encode_column_definition(c) for c in columns])
    assert plan is not None
    text = encode_text_row([b"7", b"a@b.c", b"1.5", b"1980-05-17", None])
    rewritten, counts = plan.text_row(text)
    assert counts == {"pii/r": 3}  # email, score, born: one value each
    masked = decode_text_row(rewritten, 5)
    assert masked[0] == b"7" and masked[4] is None
    assert masked[1] is not None and masked[1].startswith(b"h:")
    assert masked[2:4] == [b"0", b"1970-01-01"]
    types = [c.type for c in columns]
    binary = encode_binary_row(
        [
            binary_encoding(MYSQL_TYPE_LONGLONG, True, 2**64 - 1),
            binary_encoding(MYSQL_TYPE_VAR_STRING, False, "a@b.c"),
            binary_encoding(MYSQL_TYPE_DOUBLE, False, 1.5),
            binary_encoding(MYSQL_TYPE_DATE, False, "1980-05-17"),
            None,
        ]
    )
    cells = decode_binary_row(plan.binary_row(binary)[0], types)
    assert binary_value(MYSQL_TYPE_LONGLONG, True, cells[0] or b"") == 2**64 - 1
    assert binary_value(MYSQL_TYPE_VAR_STRING, False, cells[1] or b"") == masked[1].decode()
    assert binary_value(MYSQL_TYPE_DOUBLE, False, cells[2] or b"") == 0.0
    assert binary_value(MYSQL_TYPE_DATE, False, cells[3] or b"") == "1970-01-01"
    assert cells[4] is None
    with pytest.raises(MaskingError):
        plan.text_row(text[:-1] + b"\x05")
    with pytest.raises(MaskingError):
        plan.binary_row(binary[:-2])


# --- what a real MariaDB reports ----------------------------------------------------------


def test_origins_as_mariadb_reports_them(mariadb: MariaDBServer, fresh_db: str) -> None:
    client = RawClient(mariadb.host, mariadb.port, "app", APP_PASSWORD, fresh_db, BASE_CAPS)
    for sql in (
        "CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(80) NOT NULL)",
        "INSERT INTO customers VALUES (1, 'alice@example.com')",
        "CREATE VIEW v AS SELECT email AS mail FROM customers",
    ):
        assert count_response(client, b"\x03" + sql.encode())[-1][1][0] == 0x00
    policy = MaskingPolicy((rule("customers.email"),))

    def plan_of(sql: str, command: bytes = b"\x03") -> list[str]:
        packets = [p for _, p in count_response(client, command + sql.encode())]
        count = packets[0][0]
        plan = policy.plan(packets[1 : 1 + count])
        if plan is None:
            return []
        if command == b"\x03":
            for row in packets[2 + count : -1]:
                assert b"alice" not in plan.text_row(row)[0]
        return [m for names in plan.rules.values() for m in names]

    assert plan_of("SELECT email AS e, id FROM customers") == ["e"]
    assert plan_of("SELECT c.email FROM customers c") == ["email"]
    assert plan_of("SELECT id FROM customers") == []

    def origin(sql: str) -> tuple[bytes, bytes]:
        packets = [p for _, p in count_response(client, b"\x03" + sql.encode())]
        c = decode_column_definition(packets[1], extended_metadata=False)
        return c.org_table, c.org_name

    # What column definitions cannot say (the reason masking traces lineage): a derived
    # table, a CTE and a view report themselves as the origin; a UNION and an expression
    # report no table. Only open patterns ("email") match these by the definition alone.
    assert origin("SELECT * FROM (SELECT email FROM customers) d") == (b"d", b"email")
    assert origin("WITH c AS (SELECT email FROM customers) SELECT * FROM c") == (b"c", b"email")
    assert origin("SELECT mail FROM v") == (b"v", b"mail")
    assert origin("SELECT email FROM customers UNION SELECT 'x'") == (b"", b"email")
    assert origin("SELECT CONCAT(email, '') AS email2 FROM customers") == (b"", b"")
    open_policy = MaskingPolicy((rule("email"),))
    packets = [p for _, p in count_response(client, b"\x03SELECT * FROM (SELECT email FROM customers) d")]
    assert open_policy.plan(packets[1:2]) is not None
    client.close()
