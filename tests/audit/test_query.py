"""Session and statement search over an audit directory (what `hoopy sessions` and
`hoopy audit search` run), including time windows that skip whole files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hoopy.audit.index import AuditIndex, IndexKeeper
from hoopy.audit.query import SessionFilter, StatementFilter, find_sessions, parse_time, search
from hoopy.audit.writer import AuditWriter

T0 = 1_795_000_000.0  # 2026-11-18T08:53:20Z
HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """Three sessions an hour apart, each in its own file (rotation by size), one with an
    error and one with a denied statement."""
    clock = Clock()
    writer = AuditWriter(tmp_path / "audit", rotate_bytes=600, clock=clock, index=IndexKeeper())
    writer.open()
    plan = [
        ("s-1", "ci-build", "app", ["SELECT 1", "INSERT INTO t VALUES (1)"], None, None),
        ("s-2", "alice", "app", ["DELETE FROM t", "SELECT 2"], 2, None),
        ("s-3", "ci-deploy", "reports", ["LOAD DATA LOCAL INFILE 'x' INTO TABLE t"], None, 1),
    ]
    for session, who, target, sqls, error_at, denied_at in plan:
        writer.append(
            {
                "kind": "session_start",
                "session": session,
                "principal": {"name": who},
                "target": target,
                "client": {"address": "10.0.0.1:5"},
            }
        )
        for seq, sql in enumerate(sqls, start=1):
            clock.now += 1
            denied = seq == denied_at
            writer.append(
                {
                    "kind": "statement",
                    "session": session,
                    "seq": seq,
                    "command": "COM_QUERY",
                    "sql": sql,
                    "verdict": "deny" if denied else "allow",
                    "rule": "local_infile" if denied else None,
                }
            )
            error = {"code": 1148 if denied else 1213} if seq in (error_at, denied_at) else None
            writer.append({"kind": "outcome", "session": session, "seq": seq, "error": error})
        writer.append({"kind": "session_end", "session": session, "reason": "client quit"})
        clock.now += HOUR
    writer.close()
    return tmp_path / "audit"


def sessions(directory: Path, **where: object) -> list[str]:
    return [s.session for s in find_sessions(AuditIndex.load(directory), SessionFilter(**where))]  # type: ignore[arg-type]


def test_session_filters(directory: Path) -> None:
    assert sessions(directory) == ["s-3", "s-2", "s-1"]
    assert sessions(directory, who="ci-*") == ["s-3", "s-1"]
    assert sessions(directory, target="reports") == ["s-3"]
    assert sessions(directory, errors=True) == ["s-3", "s-2"]
    assert sessions(directory, denied=True) == ["s-3"]
    assert sessions(directory, live=True) == []
    # Time windows: s-2 ran in the second hour.
    assert sessions(directory, since=iso(T0 + HOUR), until=iso(T0 + 2 * HOUR)) == ["s-2"]
    assert sessions(directory, until=iso(T0 - 1)) == []


def hits(directory: Path, **where: object) -> list[tuple[str, int]]:
    sessions_filter = SessionFilter(
        **{k: v for k, v in where.items() if k in ("who", "target", "since", "until")}  # type: ignore[arg-type]
    )
    statement_filter = StatementFilter(
        sessions=sessions_filter,
        **{k: v for k, v in where.items() if k not in ("who", "target", "since", "until")},  # type: ignore[arg-type]
    )
    return [
        (str(h.step.statement["session"]), h.step.seq)
        for h in search(AuditIndex.load(directory), statement_filter)
    ]


def test_statement_filters(directory: Path) -> None:
    assert len(hits(directory)) == 5
    assert hits(directory, sql="insert into") == [("s-1", 2)]
    assert hits(directory, regex=re.compile(r"^SELECT \d$")) == [("s-1", 1), ("s-2", 2)]
    assert hits(directory, verdict="deny") == [("s-3", 1)]
    assert hits(directory, error=True) == [("s-2", 2), ("s-3", 1)]
    assert hits(directory, error_code=1213) == [("s-2", 2)]
    assert hits(directory, who="alice") == [("s-2", 1), ("s-2", 2)]
    assert hits(directory, session="s-3") == [("s-3", 1)]
    assert hits(directory, command="query", target="reports") == [("s-3", 1)]


def test_a_time_window_reads_only_the_files_it_overlaps(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_open = Path.open

    def tracking_open(self: Path, *args: object, **kwargs: object) -> object:
        if self.suffix == ".jsonl":
            opened.append(self.name)
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    index = AuditIndex.load(directory)  # before tracking: the sidecars cover everything
    monkeypatch.setattr(Path, "open", tracking_open)
    window = StatementFilter(
        sessions=SessionFilter(since=iso(T0 + HOUR), until=iso(T0 + HOUR + 60))
    )
    found = [(h.step.statement["session"], h.step.seq) for h in search(index, window)]
    assert found == [("s-2", 1), ("s-2", 2)]
    files = sorted(p.name for p in directory.glob("audit-*.jsonl"))
    assert len(files) >= 3 and 0 < len(set(opened)) < len(files)


def test_limits_stop_early(directory: Path) -> None:
    index = AuditIndex.load(directory)
    assert len(list(search(index, StatementFilter(sessions=SessionFilter()), limit=2))) == 2


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_time("last tuesday")
