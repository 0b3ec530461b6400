"""Timelines and re-run plans from records; the read-only classifier that guards re-runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hoopy.audit.query import parse_time
from hoopy.audit.timeline import Step, Timeline, is_read_only, plan


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select * from t where id = 3 for update",
        "/* tag */ SELECT a FROM t UNION SELECT b FROM u",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "SHOW TABLES",
        "DESCRIBE t",
        "EXPLAIN SELECT * FROM t",
        "BEGIN",
        "START TRANSACTION READ ONLY",
        "COMMIT",
        "ROLLBACK",
        "SET @a = 1",
        "SET SESSION sql_mode = ''",
        "SET NAMES utf8mb4",
        "USE app",
        "SELECT 1; SELECT 2",
        "",  # the server answers 1065 "Query was empty"
    ],
)
def test_reads(sql: str) -> None:
    assert is_read_only(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (1)",
        "update t set a = 1",
        "DELETE FROM t",
        "REPLACE INTO t VALUES (1)",
        "SELECT 1; DELETE FROM t",
        "CREATE TABLE x (a INT)",
        "DROP TABLE t",
        "TRUNCATE t",
        "ALTER TABLE t ADD c INT",
        "CALL p()",
        "SELECT 1 INTO @x",
        "SELECT * FROM t INTO OUTFILE '/tmp/x'",
        "SET GLOBAL max_connections = 1",
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN DELETE FROM t",
        "LOCK TABLES t WRITE",
        "GRANT ALL ON *.* TO x",
        "WITH x AS (SELECT 1) DELETE FROM t",
        "this is not sql",
    ],
)
def test_writes_and_unknowns(sql: str) -> None:
    assert not is_read_only(sql)


def statement(seq: int, command: str = "COM_QUERY", **fields: object) -> dict[str, object]:
    return {"kind": "statement", "session": "s", "seq": seq, "command": command, **fields}


def test_timeline_pairs_outcomes_with_statements() -> None:
    t = Timeline("s")
    t.extend(
        [
            {"kind": "session_start", "session": "s"},
            statement(1, sql="SELECT 1"),
            statement(2, sql="SELECT 2"),
            {"kind": "outcome", "session": "s", "seq": 2, "rows": 1},
            {"kind": "outcome", "session": "s", "seq": 1, "error": {"code": 1064}},
            {"kind": "session_end", "session": "s"},
        ]
    )
    assert [s.seq for s in t.steps] == [1, 2]
    assert t.steps[0].error == {"code": 1064}
    assert t.steps[1].outcome == {"kind": "outcome", "session": "s", "seq": 2, "rows": 1}
    assert t.start is not None and t.end is not None


def approval(seq: int, step: str, session: str = "s", **fields: object) -> dict[str, object]:
    return {"kind": "approval", "session": session, "seq": seq, "approval": "ap-1", "step": step,
            **fields}  # fmt: skip


def test_approval_steps_join_their_statement_whenever_they_were_written() -> None:
    t = Timeline("s")
    t.extend(
        [
            approval(1, "requested", mode="retry"),  # written before the refused statement
            statement(1, sql="DELETE FROM t WHERE id = 1", verdict="review", approval="ap-1"),
            {"kind": "outcome", "session": "s", "seq": 1, "error": {"code": 1290}},
            statement(2, sql="SELECT 1"),
            approval(1, "approval_added", approvals=1, needed=2),  # decided later on
            approval(1, "approved", approvals=2, needed=2),
            approval(3, "used", requested={"session": "s", "seq": 1}),
            statement(3, sql="DELETE FROM t WHERE id = 1", verdict="approved", approval="ap-1"),
            approval(9, "expired"),  # a statement this session never recorded: kept aside
        ]
    )
    by_seq = {step.seq: step for step in t.steps}
    assert [a["step"] for a in by_seq[1].approvals] == ["requested", "approval_added", "approved"]
    assert by_seq[2].approvals == []
    assert [a["step"] for a in by_seq[3].approvals] == ["used"]
    assert [s.seq for s in t.steps] == [1, 2, 3]
    assert t.to_json()["steps"][2]["approvals"][0]["requested"] == {"session": "s", "seq": 1}


def steps(*statements: dict[str, object]) -> list[Step]:
    return [Step(int(s["seq"]), s) for s in statements]  # type: ignore[call-overload]


def test_plan_skips_what_cannot_be_reproduced_and_holds_writes() -> None:
    prepare = Step(
        3, statement(3, "COM_STMT_PREPARE", sql="UPDATE t SET a = ?"), {"statement_id": 7}
    )
    planned = plan(
        [
            *steps(
                statement(1, sql="SELECT 1"),
                statement(2, sql="INSERT INTO t VALUES (1)"),
            ),
            prepare,
            *steps(
                statement(4, "COM_STMT_EXECUTE", statement_id=7, params=[]),
                statement(
                    5,
                    sql="LOAD DATA LOCAL INFILE 'x' INTO TABLE t",
                    verdict="deny",
                    rule="local_infile",
                ),
                statement(6, "COM_CHANGE_USER", argument="bob"),
                statement(7, sql="SELECT '<redacted:email>'", redacted=["email"]),
                statement(
                    8,
                    "COM_STMT_EXECUTE",
                    statement_id=9,
                    params=[{"type": "BLOB", "value": "x", "truncated": True}],
                ),
            ),
        ],
        allow_writes=False,
        skip_writes=False,
    )
    by_seq = {p.step.seq: p for p in planned}
    assert by_seq[1].run and not by_seq[1].write
    assert by_seq[2].reason == "write" and by_seq[3].reason == "write"
    assert by_seq[4].write, "an EXECUTE inherits its PREPARE's classification"
    assert "refused" in (by_seq[5].reason or "")
    assert "not re-run" in (by_seq[6].reason or "")
    assert "redacted" in (by_seq[7].reason or "")
    assert "cut" in (by_seq[8].reason or "")
    allowed = plan([s.step for s in planned[:4]], allow_writes=True, skip_writes=False)
    assert all(p.run for p in allowed)
    skipped = plan([s.step for s in planned[:4]], allow_writes=False, skip_writes=True)
    assert [p.run for p in skipped] == [True, False, False, False]


def test_parse_time_accepts_iso_and_ages() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert parse_time("2h", now=now) == "2026-11-26T10:00:00.000000Z"
    assert parse_time("2026-11-26T10:00", now=now) == "2026-11-26T10:00:00.000000Z"
    assert parse_time("2026-11-26T11:00+01:00") == "2026-11-26T10:00:00.000000Z"
    assert parse_time("2026-11-26") == "2026-11-26T00:00:00.000000Z"
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_plan_skips_statements_a_guardrail_refused_or_held_and_runs_flagged_ones() -> None:
    planned = plan(
        steps(
            statement(1, sql="DELETE FROM t", verdict="deny", rule="default/unbounded-write"),
            statement(2, sql="ALTER TABLE t ADD c INT", verdict="review", rule="default/x"),
            statement(3, sql="SELECT 1", verdict="log", rule="mine/flag"),
            statement(4, sql="DELETE FROM t WHERE id = 2", verdict="approved", approval="ap-1"),
        ),
        allow_writes=True,
        skip_writes=False,
    )
    by_seq = {p.step.seq: p for p in planned}
    assert by_seq[1].reason == "refused when recorded (default/unbounded-write)"
    assert by_seq[2].reason == "refused when recorded (default/x)"  # it never ran
    assert by_seq[3].run  # log: it ran, so it is re-run
    assert by_seq[4].run  # it ran under a human's approval
