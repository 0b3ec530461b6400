"""Row estimates without I/O: which texts may follow EXPLAIN, reading EXPLAIN's result,
and how rows_above rules use an estimate or its absence."""

from __future__ import annotations

import pytest

from hoopy.gateway.estimates import explainable, rows_estimate
from hoopy.policy.analysis import analyse
from hoopy.policy.rules import Action, Policy, Rule, RuleSet
from hoopy.wire.packets import frame, lenenc_str


@pytest.mark.parametrize(
    ("sql", "ok"),
    [
        (b"UPDATE t SET a = 1 WHERE id > 5", True),
        (b"  delete from t where id = 1", True),
        (b"SELECT * FROM t WHERE a = 'x'", True),
        (b"UPDATE t SET a = 1 /* c */ WHERE id = 1", False),  # /*!ANALYZE*/ would run it
        (b"/*!ANALYZE*/ DELETE FROM t", False),
        (b"ANALYZE DELETE FROM t", False),
        (b"EXPLAIN ANALYZE DELETE FROM t", False),
        (b"DELETE FROM t WHERE id = 1; DELETE FROM t", False),
        (b"UPDATE t SET a = f(1) WHERE id = 1", False),  # the optimizer may call f
        (b"SELECT * FROM t INTO OUTFILE '/tmp/x'", False),
        (b"SET STATEMENT x = 1 FOR DELETE FROM t", False),
        (b"WITH x AS (SELECT 1) DELETE FROM t", False),
        (b"DELETE FROM t WHERE a = 'x\\' -- '", False),
        (b"DROP TABLE t", False),
    ],
)
def test_only_texts_explain_cannot_run_are_explained(sql: bytes, ok: bool) -> None:
    assert explainable(sql, analyse(sql)) is ok


# EOF_Packet: 0xFE, warnings, status flags (protocol docs, "EOF_Packet").
EOF = b"\xfe\x00\x00\x02\x00"


def explain_result(columns: list[str], rows: list[list[bytes | None]]) -> bytes:
    payloads = [bytes((len(columns),))]
    for name in columns:
        payloads.append(b"".join(lenenc_str(x) for x in (b"def", b"", b"", b"", name.encode(), name.encode())) + b"\x0c\x21\x00\x00\x00\x00\x00\xfd\x00\x00\x00\x00\x00")
    payloads.append(EOF)
    for row in rows:
        payloads.append(b"".join(b"\xfb" if v is None else lenenc_str(v) for v in row))
    payloads.append(EOF)
    out, seq = b"", 1
    for payload in payloads:
        data, seq = frame(payload, seq)
        out += data
    return out


def test_rows_estimate_reads_explains_rows_and_filtered() -> None:
    mariadb = explain_result(["id", "table", "rows", "Extra"], [[b"1", b"t", b"3", None]])
    assert rows_estimate(mariadb) == 3
    mysql = explain_result(
        ["id", "table", "rows", "filtered"], [[b"1", b"t", b"1000", b"10.00"], [b"1", b"u", b"5", b"100.00"]]
    )
    assert rows_estimate(mysql) == 100
    assert rows_estimate(explain_result(["id", "rows"], [[b"1", None]])) is None


def test_rows_above_with_and_without_an_estimate() -> None:
    deny = Policy((RuleSet("s", (Rule("big", Action.DENY, kinds=("update",), rows_above=10),)),))
    update = analyse(b"UPDATE t SET a = 1 WHERE id > 0")
    assert deny.judge(update, "db", rows=11).action is Action.DENY
    assert deny.judge(update, "db", rows=10).action is Action.ALLOW
    assert deny.judge(update, "db").action is Action.DENY  # no estimate: unknown
    assert deny.wants_estimate("update") and not deny.wants_estimate("delete")
    allow = Policy(
        (RuleSet("s", (Rule("small", Action.ALLOW, rows_above=0),), default=Action.DENY),)
    )
    assert allow.judge(update, "db").action is Action.DENY  # unknown never allows
