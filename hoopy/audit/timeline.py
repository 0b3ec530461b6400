"""A recorded session as a timeline: its statements paired with their outcomes.

Pure: turns audit records (from ``index.session_records`` or a ``SessionFeed``) into
``Step``s, and decides which steps a re-run may send (``plan``). The I/O of re-running lives
in ``hoopy/gateway/replay.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoopy.audit.index import AuditIndex, SessionSummary, records_after, session_records
from hoopy.audit.lines import audit_files

# Polling period when following a live session.
FOLLOW_POLL = 0.5


@dataclass
class Step:
    """One statement of the session and, once it has arrived, its outcome."""

    seq: int
    statement: dict[str, Any]
    outcome: dict[str, Any] | None = None
    # The approval records of this statement (kind "approval", gateway/approvals.py): the
    # steps of the request it made (requested, approval_added, approved, denied, expired,
    # cancelled), or the "used" of the approval it ran under.
    approvals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def command(self) -> str:
        return str(self.statement.get("command", "?"))

    @property
    def sql(self) -> str | None:
        sql = self.statement.get("sql")
        return sql if isinstance(sql, str) else None

    @property
    def error(self) -> dict[str, Any] | None:
        if self.outcome is None:
            return None
        error = self.outcome.get("error")
        return error if isinstance(error, dict) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "statement": self.statement,
            "outcome": self.outcome,
            "approvals": self.approvals,
        }


@dataclass
class Timeline:
    """Accumulates a session's records into steps (records may arrive over time)."""

    session: str
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    steps: list[Step] = field(default_factory=list)
    _by_seq: dict[int, Step] = field(default_factory=dict)
    # Approval records written before their statement's record (a request is recorded, and
    # an approval's use, before the statement they belong to).
    _early: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> Step | None:
        """Take one record; returns the step it created or completed, if any."""
        kind = record.get("kind")
        if kind == "session_start":
            self.start = record
        elif kind == "session_end":
            self.end = record
        elif kind == "statement" and isinstance(record.get("seq"), int):
            step = Step(record["seq"], record, approvals=self._early.pop(record["seq"], []))
            self.steps.append(step)
            self._by_seq[step.seq] = step
            return step
        elif kind == "outcome" and isinstance(record.get("seq"), int):
            found = self._by_seq.get(record["seq"])
            if found is not None:
                found.outcome = record
                return found
        elif kind == "approval" and isinstance(record.get("seq"), int):
            found = self._by_seq.get(record["seq"])
            if found is None:
                self._early.setdefault(record["seq"], []).append(record)
            else:
                found.approvals.append(record)
                return found
        return None

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.add(record)

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "start": self.start,
            "end": self.end,
            "steps": [s.to_json() for s in self.steps],
        }


class SessionFeed:
    """A session's records: what is there now, then (``poll``) what was appended since.

    Follows the audit directory through rotation: after the files the index named, it
    reads on from where the index stopped, file by file.
    """

    def __init__(self, directory: Path, summary: SessionSummary, index: AuditIndex) -> None:
        # The session's own chain (with several gateway workers, one of the trails).
        directory = index.trail_of(summary) if summary.spans else directory
        self.directory = directory
        self.summary = summary
        self._initial: Iterator[dict[str, Any]] | None = session_records(summary)
        files = index.trails.get(directory, index.files)
        newest = files[-1] if files else None
        self._file = directory / newest.name if newest is not None else None
        self._offset = newest.size if newest is not None else 0

    def poll(self) -> list[dict[str, Any]]:
        """The records not returned yet (the first call returns the recorded session)."""
        records: list[dict[str, Any]] = []
        if self._initial is not None:
            records.extend(self._initial)
            self._initial = None
            return records
        files = audit_files(self.directory)
        if self._file is None:
            if not files:
                return records
            self._file, self._offset = files[0], 0
        for path in files:
            if path.name < self._file.name:
                continue
            if path.name > self._file.name:
                self._file, self._offset = path, 0
            try:
                for offset, record in records_after(path, self._offset, self.summary.session):
                    self._offset = offset
                    records.append(record)
            except OSError as exc:
                logging.getLogger("hoopy.replay").warning("cannot read %s: %s", path, exc)
                break
        return records

    def follow(self, timeline: Timeline, *, poll: float = FOLLOW_POLL) -> Iterator[Step]:
        """Steps as they are recorded until the session ends (blocking; for the CLI)."""
        while True:
            for record in self.poll():
                step = timeline.add(record)
                if step is not None:
                    yield step
            if timeline.end is not None:
                return
            time.sleep(poll)


# --- what a re-run may send -------------------------------------------------------------------

# Commands a re-run sends, with what they need from the record.
REPLAYED_COMMANDS = frozenset(
    {
        "COM_QUERY",
        "COM_STMT_PREPARE",
        "COM_STMT_EXECUTE",
        "COM_STMT_FETCH",
        "COM_STMT_CLOSE",
        "COM_STMT_RESET",
        "COM_STMT_SEND_LONG_DATA",
        "COM_INIT_DB",
        "COM_PING",
        "COM_RESET_CONNECTION",
    }
)


# Commands that name a prepared statement by id.
_STATEMENT_COMMANDS = frozenset(
    {
        "COM_STMT_EXECUTE",
        "COM_STMT_FETCH",
        "COM_STMT_CLOSE",
        "COM_STMT_RESET",
        "COM_STMT_SEND_LONG_DATA",
    }
)


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    run: bool
    write: bool
    reason: str | None = None  # why it is skipped


def plan(steps: Iterable[Step], *, allow_writes: bool, skip_writes: bool) -> list[PlannedStep]:
    """Decide, per step, whether a re-run sends it.

    Skipped: statements hoopy refused when recorded, commands a re-run cannot reproduce
    (COM_CHANGE_USER, KILL, ...), statements whose recorded text or parameters were
    redacted or cut (re-running them would run something else), and writes unless allowed.
    A write the caller neither allowed nor skipped is planned as not run with reason
    ``"write"``: the caller refuses the whole replay.
    """
    prepared_writes: dict[int, bool] = {}
    not_prepared: dict[int, int] = {}  # recorded statement id -> seq of its skipped PREPARE
    planned: list[PlannedStep] = []
    for step in steps:
        s = step.statement
        command = step.command
        statement_id = s.get("statement_id") if command in _STATEMENT_COMMANDS else None
        write = False
        if command in ("COM_QUERY", "COM_STMT_PREPARE"):
            write = not is_read_only(step.sql or "")
        elif command in ("COM_STMT_EXECUTE", "COM_STMT_SEND_LONG_DATA"):
            write = prepared_writes.get(statement_id if isinstance(statement_id, int) else -1, True)
        reason: str | None = None
        if isinstance(statement_id, int) and statement_id in not_prepared:
            reason = f"its statement was not prepared (#{not_prepared[statement_id]} is skipped)"
        elif s.get("verdict") in ("deny", "review"):
            # Refused (or held for a review that never let it through): it never ran.
            reason = f"refused when recorded ({s.get('rule')})"
        elif command not in REPLAYED_COMMANDS:
            reason = f"{command} is not re-run"
        elif s.get("sql_truncated"):
            reason = "its text was recorded cut (max_sql_bytes)"
        elif "oversize" in (s.get("redacted") or ()):
            reason = "a literal was too long to record (max_value_bytes)"
        elif s.get("redacted") or (step.sql is not None and "<redacted" in step.sql):
            reason = "recorded with redacted values"
        elif _has_cut_values(s):
            reason = "a parameter was recorded cut (max_value_bytes)"
        elif s.get("params_error"):
            reason = f"parameters not decodable: {s['params_error']}"
        elif write and skip_writes:
            reason = "write skipped (--skip-writes)"
        elif write and not allow_writes:
            reason = "write"
        if command == "COM_STMT_PREPARE" and step.outcome is not None:
            recorded_id = step.outcome.get("statement_id")
            if isinstance(recorded_id, int):
                prepared_writes[recorded_id] = write
                if reason is None:
                    not_prepared.pop(recorded_id, None)
                else:
                    not_prepared[recorded_id] = step.seq
        planned.append(PlannedStep(step, reason is None, write, reason))
    return planned


def _has_cut_values(statement: dict[str, Any]) -> bool:
    values = [*statement.get("params", []), *statement.get("attributes", [])]
    if isinstance(statement.get("data"), dict):
        values.append(statement["data"])
    return any(isinstance(v, dict) and v.get("truncated") for v in values)


def is_read_only(sql: str) -> bool:
    """True only when every statement in ``sql`` certainly changes no data or server state.

    Unparseable SQL, procedure calls and anything unknown count as writes (a re-run against
    a production target must never write by accident).
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    read_only = (
        exp.Select,
        exp.Union,
        exp.Intersect,
        exp.Except,
        exp.Subquery,
        exp.Show,
        exp.Use,
        exp.Transaction,
        exp.Commit,
        exp.Rollback,
    )
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "falling back to parsing as a Command" is our answer
    try:
        statements = sqlglot.parse(sql, read="mysql")
    except SqlglotError:
        return False
    finally:
        logger.setLevel(level)
    if not statements:
        return False
    for statement in statements:
        if statement is None:
            continue
        if isinstance(statement, exp.Describe):
            target = statement.this
            if statement.args.get("style") is not None or not isinstance(
                target, exp.Table | exp.Select | exp.Union
            ):
                return False
            continue
        if isinstance(statement, exp.Set):
            kinds = {str(item.args.get("kind") or "").upper() for item in statement.expressions}
            if kinds & {"GLOBAL", "PERSIST", "PERSIST_ONLY"}:
                return False
            continue
        if not isinstance(statement, read_only):
            return False
        if any(select.args.get("into") is not None for select in statement.find_all(exp.Select)):
            return False
        if statement.find(exp.Insert, exp.Update, exp.Delete, exp.Merge) is not None:
            return False
    return True
