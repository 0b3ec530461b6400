"""What a session records: pure builders for session_start, statement, outcome, session_end.

Nothing secret goes in: no passwords or tokens (the principal carries neither). The SQL
text and parameters a session adds are redacted first (``redact.redact_statement``:
credential literals from the statement's syntax, secrets by pattern).
"""

from __future__ import annotations

from typing import Any

from hoopy.identity.principal import Principal
from hoopy.wire.response import (
    COM_CHANGE_USER,
    COM_FIELD_LIST,
    COM_INIT_DB,
    COM_PROCESS_KILL,
    COMMAND_NAMES,
    ResponseSummary,
)


def principal_fields(principal: Principal) -> dict[str, Any]:
    return {
        "name": principal.name,
        "method": principal.method,
        "groups": list(principal.groups),
        "roles": list(principal.roles),
        "issuer": principal.issuer,
        "token_id": principal.token_id,
        "client_id": principal.client_id,
        "expires_at": principal.expires_at,
    }


def session_start(
    session: str,
    principal: Principal,
    *,
    client: str,
    tls: bool,
    capabilities: int,
    target: str,
    database: str | None,
    connect_attrs: dict[str, str],
) -> dict[str, Any]:
    return {
        "kind": "session_start",
        "session": session,
        "principal": principal_fields(principal),
        "client": {"address": client, "tls": tls, "capabilities": capabilities},
        "target": target,
        "database": database,
        "connect_attrs": connect_attrs,
    }


def statement(
    session: str,
    seq: int,
    principal: Principal,
    command: int,
    *,
    verdict: str = "allow",
    rule: str | None = None,
) -> dict[str, Any]:
    """The record written before a command is forwarded (the command's own fields, such as
    its SQL and parameters, are added by the session's ``SessionAudit``)."""
    return {
        "kind": "statement",
        "session": session,
        "seq": seq,
        "principal": principal.name,
        "command": COMMAND_NAMES.get(command, f"0x{command:02x}"),
        "verdict": verdict,
        "rule": rule,
    }


def argument(command: int, payload: bytes) -> str | None:
    """The argument of the simple commands, as text (None for commands without one)."""
    if command in (COM_INIT_DB, COM_FIELD_LIST, COM_CHANGE_USER):
        return payload[1:].split(b"\x00", 1)[0].decode("utf-8", "replace")
    if command == COM_PROCESS_KILL and len(payload) >= 5:
        return str(int.from_bytes(payload[1:5], "little"))
    return None


def outcome(
    session: str, seq: int, summary: ResponseSummary, duration_us: int
) -> dict[str, Any]:
    """``duration_us``: from forwarding to the end of the response, in microseconds (recorded
    in milliseconds)."""
    results = summary.results
    if len(results) == 1:  # most responses: one result, its counts as they are
        only = results[0]
        rows, affected, insert_id, warnings = (
            only.rows,
            only.affected_rows,
            only.last_insert_id,
            only.warnings,
        )
    else:
        rows, affected = summary.rows, summary.affected_rows
        insert_id, warnings = summary.last_insert_id, summary.warnings
    record: dict[str, Any] = {
        "kind": "outcome",
        "session": session,
        "seq": seq,
        "duration_ms": duration_us / 1000,
        "rows": rows,
        "affected_rows": affected,
        "last_insert_id": insert_id,
        "warnings": warnings,
        "results": len(results),
    }
    if summary.prepared is not None:
        record["statement_id"] = summary.prepared.statement_id
    if summary.error is not None:
        record["error"] = {
            "code": summary.error.code,
            "sqlstate": summary.error.sqlstate,
            "message": summary.error.message,
        }
    if summary.masked:
        # Which columns each masking rule rewrote and how many values: never the values.
        record["masked"] = summary.masked
    return record


def session_end(
    session: str, reason: str, statements: int, errors: int, duration: float
) -> dict[str, Any]:
    return {
        "kind": "session_end",
        "session": session,
        "reason": reason,
        "statements": statements,
        "errors": errors,
        "duration_s": round(duration, 3),
    }
