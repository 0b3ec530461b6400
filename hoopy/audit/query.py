"""Finding sessions and statements in an audit directory (``hoopy sessions``, ``hoopy audit
search``). Plain blocking reads; the session index (``index.py``) narrows what is read."""

from __future__ import annotations

import fnmatch
import heapq
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hoopy.audit.index import AuditIndex, SessionSummary, session_records
from hoopy.audit.lines import audit_files, audit_trails, parse_line
from hoopy.audit.timeline import Step

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, *, now: datetime | None = None) -> str:
    """A time filter as the audit's timestamp text (UTC, sortable).

    Accepts ISO 8601 (``2026-11-26``, ``2026-11-26T10:00``, with or without an offset;
    without one it is UTC) or an age such as ``15m``, ``2h``, ``3d`` (that long ago).
    Raises ValueError with a message for the user.
    """
    text = text.strip()
    match = _RELATIVE.fullmatch(text)
    if match:
        now = now or datetime.now(UTC)
        moment = now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"cannot read time {text!r}: "
                "use ISO 8601 (2026-11-26T10:00) or an age (15m, 2h, 3d)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class SessionFilter:
    who: str | None = None  # glob on the principal name
    target: str | None = None
    since: str | None = None  # timestamps as ``parse_time`` gives
    until: str | None = None
    errors: bool = False  # only sessions with an error
    denied: bool = False  # only sessions with a refused statement
    live: bool = False  # only sessions without a session_end record

    def matches(self, s: SessionSummary) -> bool:
        start = s.start
        if self.who and not fnmatch.fnmatchcase(str(start.get("principal") or ""), self.who):
            return False
        if self.target and start.get("target") != self.target:
            return False
        # A session overlaps [since, until] when it was active at some point in between.
        if self.since and s.last_activity < self.since:
            return False
        if self.until and s.started > self.until:
            return False
        if self.errors and not s.total("errors"):
            return False
        if self.denied and not s.total("denied"):
            return False
        return not (self.live and s.end is not None)


def find_sessions(index: AuditIndex, where: SessionFilter) -> list[SessionSummary]:
    """Matching sessions, newest first."""
    return [s for s in index.newest_first() if where.matches(s)]


@dataclass(frozen=True)
class StatementFilter:
    sessions: SessionFilter
    session: str | None = None  # id prefix
    sql: str | None = None  # case-insensitive substring
    regex: re.Pattern[str] | None = None
    verdict: str | None = None
    error: bool = False
    error_code: int | None = None
    command: str | None = None
    approval: str | None = None  # the id of an approval the statement asked for or ran under

    def matches(self, step: Step) -> bool:
        s = step.statement
        if self.approval and s.get("approval") != self.approval:
            return False
        ts = str(s.get("ts", ""))
        if self.sessions.since and ts < self.sessions.since:
            return False
        if self.sessions.until and ts > self.sessions.until:
            return False
        sql = step.sql or ""
        if self.sql and self.sql.lower() not in sql.lower():
            return False
        if self.regex and not self.regex.search(sql):
            return False
        if self.verdict and s.get("verdict") != self.verdict:
            return False
        if self.command and step.command.upper() not in (
            self.command.upper(),
            "COM_" + self.command.upper(),
        ):
            return False
        error = step.error
        if (self.error or self.error_code is not None) and error is None:
            return False
        return not (
            self.error_code is not None
            and error is not None
            and error.get("code") != self.error_code
        )


@dataclass
class Hit:
    step: Step
    session: SessionSummary | None

    def to_json(self) -> dict[str, Any]:
        start = self.session.start if self.session else {}
        return {
            "session": self.step.statement.get("session"),
            "principal": start.get("principal") or self.step.statement.get("principal"),
            "target": start.get("target"),
            **self.step.to_json(),
        }


def search(index: AuditIndex, where: StatementFilter, *, limit: int | None = None) -> Iterator[Hit]:
    """Statements matching ``where``, oldest first, each joined with its outcome."""
    wanted: dict[str, SessionSummary] | None = None
    narrowed = where.session or where.sessions.who or where.sessions.target
    session_only = SessionFilter(
        who=where.sessions.who,
        target=where.sessions.target,
        since=where.sessions.since,
        until=where.sessions.until,
        errors=where.sessions.errors,
        denied=where.sessions.denied,
        live=where.sessions.live,
    )
    if narrowed:
        wanted = {
            s.session: s
            for s in index.sessions.values()
            if session_only.matches(s)
            and (not where.session or s.session.startswith(where.session))
        }
    found = 0
    for step in _steps(index, wanted, where.sessions.since, where.sessions.until):
        session = index.sessions.get(str(step.statement.get("session")))
        if wanted is None and session is not None and not session_only.matches(session):
            continue
        if where.matches(step):
            yield Hit(step, session)
            found += 1
            if limit is not None and found >= limit:
                return


def _steps(
    index: AuditIndex,
    wanted: dict[str, SessionSummary] | None,
    since: str | None,
    until: str | None,
) -> Iterator[Step]:
    """Statements joined with their outcomes, in log order."""
    pending: dict[tuple[str, int], Step] = {}
    order: deque[Step] = deque()

    def take(record: dict[str, Any]) -> Iterator[Step]:
        kind = record.get("kind")
        key = (str(record.get("session")), record.get("seq"))
        if kind == "statement" and isinstance(key[1], int):
            step = Step(key[1], record)
            pending[(key[0], key[1])] = step
            order.append(step)
        elif kind == "outcome" and isinstance(key[1], int):
            waiting = pending.pop((key[0], key[1]), None)
            if waiting is not None:
                waiting.outcome = record
        # Emit steps in order once complete (or once far behind: an outcome never came).
        while order and (order[0].outcome is not None or len(order) > 1024):
            yield order.popleft()

    if wanted is not None:
        for summary in sorted(wanted.values(), key=lambda s: s.started):
            for record in session_records(summary):
                yield from take(record)
    else:
        # One stream per chain (a gateway worker's), merged by time: each is in time order.
        streams = [
            _statement_records(_trail_files_in_window(trail, since, until))
            for trail in audit_trails(index.directory)
        ]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=_ts)
        for record in merged:
            yield from take(record)
    while order:
        yield order.popleft()


def _statement_records(paths: list[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        with path.open("rb") as f:
            for line in f:
                if line.endswith(b"\n") and (
                    b'"kind":"statement"' in line or b'"kind":"outcome"' in line
                ):
                    parsed = parse_line(line[:-1])
                    if parsed is not None:
                        yield parsed


def _ts(record: dict[str, Any]) -> str:
    ts = record.get("ts")
    return ts if isinstance(ts, str) else ""


def _trail_files_in_window(trail: Path, since: str | None, until: str | None) -> list[Path]:
    """One chain's audit files whose time span can overlap [since, until]: file names carry
    their start time, and a file ends where the next one starts."""
    files = audit_files(trail)
    keep = []
    for i, path in enumerate(files):
        start = _name_time(path.name)
        end = _name_time(files[i + 1].name) if i + 1 < len(files) else None
        if until and start > until:
            continue
        if since and end is not None and end < since:
            continue
        keep.append(path)
    return keep


def _name_time(name: str) -> str:
    stamp = name[len("audit-") : len("audit-") + 15]
    moment = datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
