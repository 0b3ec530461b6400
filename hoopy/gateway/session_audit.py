"""What one session records in the audit log, and the state it needs to record it well.

Resource handling: holds no resources; it writes through the gateway's shared ``AuditLog``.
Error handling: ``before`` raises ``AuditUnavailable`` when the statement's record cannot be
written, and the session then refuses the statement (fail closed). Records written after the
fact (outcomes, refusals, session boundaries) are best effort: a failure is logged, and the
next statement finds the log unwritable and is refused.

To record a prepared statement's parameters, the session remembers each statement's SQL and
parameter count from its prepare response, and the parameter types last bound (an EXECUTE
may omit them: "new_params_bound_flag" 0 in the protocol docs' COM_STMT_EXECUTE). A
statement whose text is credential-bearing (``hoopy.sql.credentials``: ``SELECT
PASSWORD(?)``, ``UPDATE users SET password = ?``) has every parameter of its executions,
and its long data, recorded as ``<redacted:credential>``.

Building a record costs time linear in the statement (redaction lexes it): a statement of
``offload.OFF_LOOP_BYTES`` or more is recorded from a worker thread, so that one client's huge
statements do not stall the event loop that serves every other session.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from hoopy.audit import events
from hoopy.audit.redact import (
    CREDENTIAL,
    RedactedStatement,
    detectors_named,
    redact_statement,
    redact_value,
)
from hoopy.audit.redact import marker as redaction_marker
from hoopy.audit.values import param_to_json
from hoopy.audit.writer import AuditUnavailable
from hoopy.config.model import AuditSettings
from hoopy.gateway import offload
from hoopy.gateway.audit_log import AuditLog
from hoopy.identity.principal import Principal
from hoopy.sql.lexer import ServerVersion
from hoopy.wire.command import ClientCommand
from hoopy.wire.errors import ErrorKind
from hoopy.wire.messages import ErrPacket
from hoopy.wire.packets import ProtocolError
from hoopy.wire.params import Param, decode_execute, named_statement
from hoopy.wire.response import (
    COM_CHANGE_USER,
    COM_QUERY,
    COM_RESET_CONNECTION,
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA,
    ResponseSummary,
)

log = logging.getLogger("hoopy.audit")

# The long-data type: what a COM_STMT_SEND_LONG_DATA chunk is recorded as (its real type is
# only bound by the EXECUTE that follows).
_LONG_DATA_TYPE = 0xFC  # BLOB


@dataclass
class PreparedStatement:
    sql: str | None  # as recorded (redacted when the prepare's SQL was)
    num_params: int
    credential: bool = False  # credential-bearing text: its parameters are credentials
    cut_from: int | None = None  # sql is cut ([audit] max_sql_bytes) from this many bytes
    types: list[tuple[int, bool]] | None = None  # bound by the last EXECUTE that sent them
    long_data: set[int] = field(default_factory=set)  # params sent by SEND_LONG_DATA


class SessionAudit:
    def __init__(
        self,
        audit: AuditLog,
        session: str,
        settings: AuditSettings,
        capabilities: int,
        server: ServerVersion | None = None,
    ) -> None:
        self.audit = audit
        self.session = session
        self.settings = settings
        self.capabilities = capabilities
        self.server = server  # the target's version: which executable comments run
        self.prepared: dict[int, PreparedStatement] = {}
        # Recorded SQL of a PREPARE in flight (with whether it is credential-bearing), and
        # the length of the text sent when the record cut it.
        self._pending_prepare: tuple[RedactedStatement, int | None] | None = None
        self._last_prepared: int | None = None
        self._hide_error = False  # the current statement's error may quote redacted text
        self._detectors = detectors_named(settings.redact)  # validated when the config loaded
        self._started = 0.0

    # --- records ---------------------------------------------------------------------------

    def session_start(self, principal: Principal, **fields: Any) -> None:
        self._best_effort(events.session_start(self.session, principal, **fields))

    def session_end(self, reason: str, statements: int, errors: int, duration: float) -> None:
        self._best_effort(events.session_end(self.session, reason, statements, errors, duration))

    async def before(
        self,
        seq: int,
        principal: Principal,
        payload: bytes,
        *,
        command: ClientCommand | None = None,
        verdict: str = "allow",
        rule: str | None = None,
    ) -> None:
        """Write the statement's record, durably as configured, before it is forwarded.
        ``command``: the session's decoded command (decoded here when not given); ``verdict``
        and ``rule``: the guardrails' (``log`` flags an allowed statement).

        Raises ``AuditUnavailable`` (the caller refuses the statement)."""
        try:
            record = (
                self._statement(
                    seq, principal, payload, decoded=command, verdict=verdict, rule=rule
                )
                if len(payload) < offload.OFF_LOOP_BYTES  # most: no coroutine, no closure
                else await self._build(
                    seq, principal, payload, decoded=command, verdict=verdict, rule=rule
                )
            )
        except Exception as exc:  # a bug here must refuse the statement, not end the session
            log.exception("session %s: cannot build the audit record", self.session)
            raise AuditUnavailable(
                f"cannot build the audit record ({type(exc).__name__}); see the gateway log"
            ) from None
        await self.audit.write_durable(record)
        self._started = time.monotonic()

    async def _build(
        self, seq: int, principal: Principal, payload: bytes, **options: Any
    ) -> dict[str, Any]:
        return await offload.run(
            len(payload), lambda: self._statement(seq, principal, payload, **options)
        )

    async def refused(
        self,
        seq: int,
        principal: Principal,
        payload: bytes,
        rule: str,
        kind: ErrorKind,
        message: str,
        *,
        verdict: str = "deny",
        command: ClientCommand | None = None,
    ) -> None:
        """A statement hoopy refused without forwarding: its record and its error outcome
        (``verdict``: ``deny``, or ``review`` for a statement held for approval)."""
        try:
            record = await self._build(
                seq, principal, payload, verdict=verdict, rule=rule, decoded=command
            )
        except Exception:  # the refusal stands; record what is certain
            log.exception("session %s: cannot build the audit record", self.session)
            record = events.statement(
                self.session, seq, principal, payload[0], verdict=verdict, rule=rule
            )
        self._best_effort(record)
        # The client got exactly this error, and nothing else: the outcome of a response
        # that is one ERR packet.
        answer = ResponseSummary(error=ErrPacket(kind.code, kind.sqlstate, message))
        self._best_effort(events.outcome(self.session, seq, answer, 0.0))

    def changed_user(self, seq: int, principal: Principal) -> None:
        """COM_CHANGE_USER succeeded: the session now acts for ``principal``."""
        self.reset()
        self._best_effort(
            {
                "kind": "outcome",
                "session": self.session,
                "seq": seq,
                "duration_ms": round((time.monotonic() - self._started) * 1000, 3),
                "principal": events.principal_fields(principal),
            }
        )

    def new_digest(self) -> Any:
        return hashlib.sha256()

    def after(self, seq: int, command: int, summary: ResponseSummary, digest: Any) -> None:
        """The outcome record (held back until the next write), and prepared-statement state."""
        duration = time.monotonic() - self._started
        self._track(command, summary)
        record = events.outcome(self.session, seq, summary, duration)
        if digest is not None and has_rows(command, summary):
            record["digest"] = digest.hexdigest()
        if self._hide_error and "error" in record:
            # An error about a statement with redacted text may quote it ("near '...'").
            record["error"]["message"] = "<redacted: the statement carried redacted values>"
        try:
            self.audit.write_later(record)
        except AuditUnavailable as exc:
            # The statement ran; the next one is refused while the log stays unwritable.
            log.error(
                "session %s: outcome of statement %d not recorded: %s", self.session, seq, exc
            )

    def no_response(self, command: int, payload: bytes) -> None:
        """State changes of the commands the server does not answer."""
        if command == COM_STMT_CLOSE and len(payload) >= 5:
            self.prepared.pop(self._statement_id(payload), None)
        elif command == COM_STMT_SEND_LONG_DATA and len(payload) >= 7:
            statement = self.prepared.get(self._statement_id(payload))
            if statement is not None:
                statement.long_data.add(int.from_bytes(payload[5:7], "little"))

    def _statement_id(self, payload: bytes) -> int:
        """The statement a command names (callers check that the payload names one)."""
        statement_id = named_statement(payload, self._last_prepared)
        assert statement_id is not None
        return statement_id

    def reset(self) -> None:
        """COM_CHANGE_USER / COM_RESET_CONNECTION: the server closed every statement."""
        self.prepared.clear()

    # --- building the statement record ------------------------------------------------------

    def _statement(
        self,
        seq: int,
        principal: Principal,
        payload: bytes,
        *,
        verdict: str = "allow",
        rule: str | None = None,
        decoded: ClientCommand | None = None,
    ) -> dict[str, Any]:
        if decoded is None:
            decoded = ClientCommand(payload, self.capabilities)
        command = payload[0]
        record = events.statement(self.session, seq, principal, command, verdict=verdict, rule=rule)
        redacted: list[str] = []
        if command == COM_QUERY:
            attributes, sql = self._query(decoded)
            _set_sql(record, self._sql(sql, redacted), len(sql))
            if attributes:
                record["attributes"] = self._params(attributes, redacted)
        elif command == COM_STMT_PREPARE:
            text = decoded.sql()
            assert text is not None
            prepared = self._sql(text, redacted)
            cut_from = _set_sql(record, prepared, len(payload) - 1)
            self._pending_prepare = prepared, cut_from
        elif command == COM_STMT_EXECUTE:
            self._execute(payload, record, redacted)
        elif command in (COM_STMT_FETCH, COM_STMT_CLOSE, COM_STMT_RESET) and len(payload) >= 5:
            statement_id = self._statement_id(payload)
            record["statement_id"] = statement_id
            if command == COM_STMT_FETCH and len(payload) >= 9:
                record["fetch_rows"] = int.from_bytes(payload[5:9], "little")
            if command == COM_STMT_RESET and statement_id in self.prepared:
                self.prepared[statement_id].long_data.clear()
        elif command == COM_STMT_SEND_LONG_DATA and len(payload) >= 7:
            statement_id = self._statement_id(payload)
            record["statement_id"] = statement_id
            record["param"] = int.from_bytes(payload[5:7], "little")
            chunk = Param(_LONG_DATA_TYPE, False, _text_or_bytes(payload[7:]))
            statement = self.prepared.get(statement_id)
            secret = statement is not None and statement.credential
            record["data"] = self._params((chunk,), redacted, secret=secret)[0]
        else:
            argument = events.argument(command, payload)
            if argument is not None:
                record["argument"] = argument
        if redacted:
            record["redacted"] = sorted(set(redacted))
        # An error about a statement with redacted text or values may quote them.
        self._hide_error = bool(redacted) or "<redacted:" in record.get("sql", "")
        return record

    def _query(self, command: ClientCommand) -> tuple[tuple[Param, ...], bytes]:
        try:
            return command.query()
        except ProtocolError:
            sql = command.sql()  # the server will reject it; record what was sent
            assert sql is not None
            return (), sql

    def _sql(self, raw: bytes, redacted: list[str]) -> RedactedStatement:
        """The text to record (redacted, cut at ``max_sql_bytes``)."""
        statement = redact_statement(
            raw,
            self._detectors,
            self.server,
            max_literal_bytes=self.settings.max_value_bytes,
            max_text_bytes=self.settings.max_sql_bytes,
        )
        redacted.extend(statement.kinds)
        return statement

    def _params(
        self, params: tuple[Param, ...], redacted: list[str], *, secret: bool = False
    ) -> list[dict[str, Any]]:
        out = []
        for p in params:
            data = param_to_json(p, max_bytes=self.settings.max_value_bytes)
            if secret and (data.get("value") is not None or "hex" in data):
                # A parameter of a credential-bearing statement: nothing of it is recorded
                # (not even its length), only its type.
                for key in ("value", "hex", "truncated", "length"):
                    data.pop(key, None)
                data["value"] = redaction_marker(CREDENTIAL)
                data["redacted"] = True
                redacted.append(CREDENTIAL)
            elif self._detectors and isinstance(data.get("value"), str):
                marker, kind = redact_value(data["value"], self._detectors)
                if kind is not None:
                    data["value"] = marker
                    data["redacted"] = True
                    redacted.append(kind)
            out.append(data)
        return out

    def _execute(self, payload: bytes, record: dict[str, Any], redacted: list[str]) -> None:
        if len(payload) < 5:
            return
        statement_id = self._statement_id(payload)
        record["statement_id"] = statement_id
        statement = self.prepared.get(statement_id)
        if statement is None:
            record["params_error"] = "unknown statement id (the server will refuse it)"
            return
        if statement.sql is not None:
            record["sql"] = statement.sql
            if statement.cut_from is not None:
                record["sql_truncated"] = True
                record["sql_length"] = statement.cut_from
        try:
            request = decode_execute(
                payload,
                statement.num_params,
                statement.types,
                statement.long_data,
                capabilities=self.capabilities,
            )
        except ProtocolError as exc:
            record["params_error"] = str(exc)
            return
        statement.types = list(request.types)
        statement.long_data.clear()  # consumed by this execution
        if request.params:
            record["params"] = self._params(request.params, redacted, secret=statement.credential)
        if request.flags:
            record["cursor"] = request.flags

    def _track(self, command: int, summary: ResponseSummary) -> None:
        if command == COM_STMT_PREPARE:
            pending, self._pending_prepare = self._pending_prepare, None
            if summary.prepared is not None:
                self._last_prepared = summary.prepared.statement_id
                self.prepared[summary.prepared.statement_id] = (
                    PreparedStatement(None, summary.prepared.num_params, True)
                    if pending is None
                    else PreparedStatement(
                        pending[0].sql,
                        summary.prepared.num_params,
                        pending[0].credential_bearing,
                        cut_from=pending[1],
                    )
                )
        elif command in (COM_CHANGE_USER, COM_RESET_CONNECTION) and summary.error is None:
            self.reset()

    def _best_effort(self, record: dict[str, Any]) -> None:
        try:
            self.audit.write(record)
        except AuditUnavailable as exc:
            log.error("session %s: %s record not written: %s", self.session, record["kind"], exc)


def _set_sql(record: dict[str, Any], statement: RedactedStatement, length: int) -> int | None:
    """Put the statement's recorded text in ``record``; the length of the text sent when the
    record has it cut (``sql_truncated``, ``sql_length``: docs/audit-format.md)."""
    record["sql"] = statement.sql
    if not statement.truncated:
        return None
    record["sql_truncated"] = True
    record["sql_length"] = length
    return length


def has_rows(command: int, summary: ResponseSummary) -> bool:
    """Whether the response carried a result set (so its row digest means something)."""
    return command != COM_STMT_PREPARE and any(r.columns for r in summary.results)


def _text_or_bytes(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(data)  # a large packet's payload is a bytearray (wire/packets.py)
