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
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from hoopy.audit import _canon, events
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
from hoopy.wire.command import ClientCommand, PreparedStatement, SessionCommands
from hoopy.wire.errors import ErrorKind
from hoopy.wire.messages import ErrPacket
from hoopy.wire.packets import ProtocolError
from hoopy.wire.params import Param, decode_execute
from hoopy.wire.response import (
    COM_QUERY,
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA,
    COMMAND_NAMES,
    ResponseSummary,
)

log = logging.getLogger("hoopy.audit")

# The long-data type: what a COM_STMT_SEND_LONG_DATA chunk is recorded as (its real type is
# only bound by the EXECUTE that follows).
_LONG_DATA_TYPE = 0xFC  # BLOB


@dataclass(frozen=True, slots=True)
class RecordedPrepare:
    """What the audit notes on a prepared statement (``PreparedStatement.recorded``)."""

    sql: str | None  # as recorded (redacted when the prepare's SQL was)
    credential: bool = False  # credential-bearing text: its parameters are credentials
    cut_from: int | None = None  # sql is cut ([audit] max_sql_bytes) from this many bytes


# A statement whose PREPARE was not recorded: nothing of its text, its parameters secret.
_UNRECORDED = RecordedPrepare(None, credential=True)


class SessionAudit:
    def __init__(
        self,
        audit: AuditLog,
        session: str,
        settings: AuditSettings,
        capabilities: int,
        server: ServerVersion | None = None,
        commands: SessionCommands | None = None,
    ) -> None:
        self.audit = audit
        self.session = session
        self.settings = settings
        self.capabilities = capabilities
        self.server = server  # the target's version: which executable comments run
        # The session's decoder and prepared-statement table (its own when not given).
        self.commands = commands if commands is not None else SessionCommands(capabilities)
        self._hide_error = False  # the current statement's error may quote redacted text
        self._detectors = detectors_named(settings.redact)  # validated when the config loaded
        self._started = 0  # time.monotonic_ns() when the current statement was forwarded
        self._json = _Texts(session)

    # --- records ---------------------------------------------------------------------------

    def session_start(self, principal: Principal, **fields: Any) -> None:
        self._best_effort(events.session_start(self.session, principal, **fields))

    def session_end(self, reason: str, statements: int, errors: int, duration: float) -> None:
        self._best_effort(events.session_end(self.session, reason, statements, errors, duration))

    async def build(
        self,
        seq: int,
        principal: Principal,
        payload: bytes,
        *,
        command: ClientCommand | None = None,
        verdict: str = "allow",
        rule: str | None = None,
    ) -> dict[str, Any]:
        """The statement's record (``before`` writes it). Raises ``AuditUnavailable``."""
        if len(payload) < offload.OFF_LOOP_BYTES:  # most: no coroutine, no closure
            return self._checked(seq, principal, payload, command, verdict, rule)
        try:
            return await self._build(
                seq, principal, payload, decoded=command, verdict=verdict, rule=rule
            )
        except Exception as exc:
            raise _unbuildable(self.session, exc) from None

    def _checked(
        self,
        seq: int,
        principal: Principal,
        payload: bytes,
        command: ClientCommand | None,
        verdict: str,
        rule: str | None,
    ) -> dict[str, Any]:
        try:
            return self._statement(
                seq, principal, payload, decoded=command, verdict=verdict, rule=rule
            )
        except Exception as exc:  # a bug here must refuse the statement, not end the session
            raise _unbuildable(self.session, exc) from None

    async def before(
        self,
        seq: int,
        principal: Principal,
        payload: bytes,
        *,
        command: ClientCommand | None = None,
        verdict: str = "allow",
        rule: str | None = None,
        record: dict[str, Any] | None = None,
        approval: str | None = None,
    ) -> None:
        """Write the statement's record, durably as configured, before it is forwarded.
        ``command``: the session's decoded command (decoded here when not given); ``verdict``
        and ``rule``: the guardrails' (``log`` flags an allowed statement); ``record``: one
        ``build`` made already (an approval showed it); ``approval``: the approval's id.

        Raises ``AuditUnavailable`` (the caller refuses the statement)."""
        if record is None and approval is None and len(payload) < offload.OFF_LOOP_BYTES:
            # The hot path: no extra coroutine, and most records encoded without a dict.
            try:
                found = self._encoded(seq, principal, payload, command, verdict, rule)
            except Exception as exc:  # a bug here must refuse the statement, not end it
                raise _unbuildable(self.session, exc) from None
            if isinstance(found, tuple):
                await self.audit.write_durable_encoded(
                    _canon.statement_line, found, self.session
                )
                self._started = time.monotonic_ns()
                return
            record = found
        elif record is None:
            record = (
                self._checked(seq, principal, payload, command, verdict, rule)
                if len(payload) < offload.OFF_LOOP_BYTES
                else await self.build(
                    seq, principal, payload, command=command, verdict=verdict, rule=rule
                )
            )
        else:
            record["verdict"], record["rule"] = verdict, rule
        if approval is not None:
            record["approval"] = approval
        await self.audit.write_durable(record)
        self._started = time.monotonic_ns()

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
        record: dict[str, Any] | None = None,
        approval: str | None = None,
    ) -> None:
        """A statement hoopy refused without forwarding: its record and its error outcome
        (``verdict``: ``deny``, or ``review`` for a statement held for approval;
        ``record``, ``approval``: as for ``before``)."""
        if record is not None:
            record["verdict"], record["rule"] = verdict, rule
        else:
            try:
                record = await self._build(
                    seq, principal, payload, verdict=verdict, rule=rule, decoded=command
                )
            except Exception:  # the refusal stands; record what is certain
                log.exception("session %s: cannot build the audit record", self.session)
                record = events.statement(
                    self.session, seq, principal, payload[0], verdict=verdict, rule=rule
                )
        if approval is not None:
            record["approval"] = approval
        self._best_effort(record)
        # The client got exactly this error, and nothing else: the outcome of a response
        # that is one ERR packet.
        answer = ResponseSummary(error=ErrPacket(kind.code, kind.sqlstate, message))
        self._best_effort(events.outcome(self.session, seq, answer, 0))

    def changed_user(self, seq: int, principal: Principal) -> None:
        """COM_CHANGE_USER succeeded: the session now acts for ``principal``."""
        self._best_effort(
            {
                "kind": "outcome",
                "session": self.session,
                "seq": seq,
                "duration_ms": (time.monotonic_ns() - self._started) // 1000 / 1000,
                "principal": events.principal_fields(principal),
            }
        )

    def new_digest(self) -> Any:
        return hashlib.sha256()

    def after(self, seq: int, command: int, summary: ResponseSummary, digest: Any) -> None:
        """The outcome record (held back until the next write)."""
        duration = (time.monotonic_ns() - self._started) // 1000  # us
        results = summary.results
        if (
            len(results) == 1
            and summary.error is None
            and summary.prepared is None
            and not summary.masked
        ):  # nearly every response: encoded without a dict
            only = results[0]
            fields = (
                self._json.session,
                seq,
                duration,
                only.rows,
                only.affected_rows,
                only.last_insert_id,
                only.warnings,
                digest.hexdigest()
                if digest is not None and only.columns and command != COM_STMT_PREPARE
                else None,
            )
            try:
                self.audit.defer(_canon.outcome_line, fields, self.session)
            except AuditUnavailable as exc:
                _outcome_lost(self.session, seq, exc)
            return
        record = events.outcome(self.session, seq, summary, duration)
        if digest is not None and has_rows(command, summary):
            record["digest"] = digest.hexdigest()
        if self._hide_error and "error" in record:
            # An error about a statement with redacted text may quote it ("near '...'").
            record["error"]["message"] = "<redacted: the statement carried redacted values>"
        try:
            self.audit.write_later(record)
        except AuditUnavailable as exc:
            _outcome_lost(self.session, seq, exc)

    # --- building the statement record ------------------------------------------------------

    def _encoded(
        self,
        seq: int,
        principal: Principal,
        payload: bytes,
        decoded: ClientCommand | None,
        verdict: str,
        rule: str | None,
    ) -> tuple[Any, ...] | dict[str, Any]:
        """The statement's record as the fields of ``_canon.statement_line`` when it is a
        query or an execute of the usual shape (nearly all), else as a dict (``_statement``).
        The same record either way: tests/gateway/test_session_audit_encoded.py."""
        command = payload[0]
        if command != COM_QUERY and command != COM_STMT_EXECUTE:
            return self._statement(
                seq, principal, payload, verdict=verdict, rule=rule, decoded=decoded
            )
        if decoded is None:
            decoded = self.commands.decode(payload)
        texts = self._json
        if command == COM_QUERY:
            attributes, sql = self._query(decoded)
            redacted: list[str] = []
            text = self._sql(sql, redacted)
            if attributes or text.truncated:
                record = events.statement(
                    self.session, seq, principal, command, verdict=verdict, rule=rule
                )
                return self._query_record(record, attributes, sql, text, redacted)
            self._hide_error = bool(redacted) or "<redacted:" in text.sql
            return (
                _QUERY_JSON,
                texts.principal(principal),
                texts.session,
                seq,
                text.sql,
                _word(verdict),
                "null" if rule is None else encode_basestring(rule),
                None,
                -1,
                0,
                sorted(set(redacted)) if redacted else None,
            )
        statement = decoded.prepared
        if len(payload) < 5 or statement is None:
            return self._statement(
                seq, principal, payload, verdict=verdict, rule=rule, decoded=decoded
            )
        recorded = _recorded(statement)
        if recorded.sql is None or recorded.cut_from is not None:
            return self._statement(
                seq, principal, payload, verdict=verdict, rule=rule, decoded=decoded
            )
        try:
            request = decode_execute(
                payload,
                statement.num_params,
                statement.types,
                statement.long_data,
                capabilities=self.capabilities,
            )
        except ProtocolError:  # recorded by the general path (it decodes it again)
            return self._statement(
                seq, principal, payload, verdict=verdict, rule=rule, decoded=decoded
            )
        self.commands.executed(decoded, list(request.types))
        decoded.params = request.params
        redacted = []
        params = (
            self._params(request.params, redacted, secret=recorded.credential)
            if request.params
            else None
        )
        self._hide_error = bool(redacted) or "<redacted:" in recorded.sql
        return (
            _EXECUTE_JSON,
            texts.principal(principal),
            texts.session,
            seq,
            recorded.sql,
            _word(verdict),
            "null" if rule is None else encode_basestring(rule),
            params,
            decoded.statement_id,
            request.flags,
            sorted(set(redacted)) if redacted else None,
        )

    def _query_record(
        self,
        record: dict[str, Any],
        attributes: tuple[Param, ...],
        sql: bytes,
        text: RedactedStatement,
        redacted: list[str],
    ) -> dict[str, Any]:
        _set_sql(record, text, len(sql))
        if attributes:
            record["attributes"] = self._params(attributes, redacted)
        return self._finished(record, redacted)

    def _finished(self, record: dict[str, Any], redacted: list[str]) -> dict[str, Any]:
        if redacted:
            record["redacted"] = sorted(set(redacted))
        # An error about a statement with redacted text or values may quote them.
        self._hide_error = bool(redacted) or "<redacted:" in record.get("sql", "")
        return record

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
            decoded = self.commands.decode(payload)
        command = payload[0]
        record = events.statement(self.session, seq, principal, command, verdict=verdict, rule=rule)
        redacted: list[str] = []
        if command == COM_QUERY:
            attributes, sql = self._query(decoded)
            return self._query_record(record, attributes, sql, self._sql(sql, redacted), redacted)
        if command == COM_STMT_PREPARE:
            text = decoded.sql()
            assert text is not None
            prepared = self._sql(text, redacted)
            cut_from = _set_sql(record, prepared, len(payload) - 1)
            decoded.recorded = RecordedPrepare(
                prepared.sql, prepared.credential_bearing, cut_from
            )
        elif command == COM_STMT_EXECUTE:
            self._execute(decoded, record, redacted)
        elif command in (COM_STMT_FETCH, COM_STMT_CLOSE, COM_STMT_RESET) and len(payload) >= 5:
            record["statement_id"] = decoded.statement_id
            if command == COM_STMT_FETCH and len(payload) >= 9:
                record["fetch_rows"] = int.from_bytes(payload[5:9], "little")
        elif command == COM_STMT_SEND_LONG_DATA and len(payload) >= 7:
            record["statement_id"] = decoded.statement_id
            record["param"] = int.from_bytes(payload[5:7], "little")
            chunk = Param(_LONG_DATA_TYPE, False, _text_or_bytes(payload[7:]))
            statement = decoded.prepared
            secret = statement is not None and _recorded(statement).credential
            record["data"] = self._params((chunk,), redacted, secret=secret)[0]
        else:
            argument = events.argument(command, payload)
            if argument is not None:
                record["argument"] = argument
        return self._finished(record, redacted)

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
            multibyte=self.commands.multibyte,
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

    def _execute(
        self, decoded: ClientCommand, record: dict[str, Any], redacted: list[str]
    ) -> None:
        payload = decoded.payload
        if len(payload) < 5:
            return
        record["statement_id"] = decoded.statement_id
        statement = decoded.prepared
        if statement is None:
            record["params_error"] = "unknown statement id (the server will refuse it)"
            return
        recorded = _recorded(statement)
        if recorded.sql is not None:
            record["sql"] = recorded.sql
            if recorded.cut_from is not None:
                record["sql_truncated"] = True
                record["sql_length"] = recorded.cut_from
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
        self.commands.executed(decoded, list(request.types))
        decoded.params = request.params
        if request.params:
            record["params"] = self._params(request.params, redacted, secret=recorded.credential)
        if request.flags:
            record["cursor"] = request.flags

    def _best_effort(self, record: dict[str, Any]) -> None:
        try:
            self.audit.write(record)
        except AuditUnavailable as exc:
            log.error("session %s: %s record not written: %s", self.session, record["kind"], exc)


_QUERY_JSON = encode_basestring(COMMAND_NAMES[COM_QUERY])
_EXECUTE_JSON = encode_basestring(COMMAND_NAMES[COM_STMT_EXECUTE])
_WORDS: dict[str, str] = {}


def _word(word: str) -> str:
    """A verdict as JSON text (a few words, encoded once)."""
    text = _WORDS.get(word)
    if text is None:
        text = encode_basestring(word)
        if len(_WORDS) < 64:
            _WORDS[word] = text
    return text


class _Texts:
    """The JSON text of what every record of a session repeats, encoded once."""

    __slots__ = ("_principal", "_principal_json", "session")

    def __init__(self, session: str) -> None:
        self.session = encode_basestring(session)
        self._principal: Principal | None = None
        self._principal_json = ""

    def principal(self, principal: Principal) -> str:
        """The principal's name (it changes only with COM_CHANGE_USER)."""
        if principal is not self._principal:
            self._principal = principal
            self._principal_json = encode_basestring(principal.name)
        return self._principal_json


def _outcome_lost(session: str, seq: int, exc: AuditUnavailable) -> None:
    # The statement ran; the next one is refused while the log stays unwritable.
    log.error("session %s: outcome of statement %d not recorded: %s", session, seq, exc)


def _unbuildable(session: str, exc: Exception) -> AuditUnavailable:
    log.error("session %s: cannot build the audit record", session, exc_info=exc)
    return AuditUnavailable(
        f"cannot build the audit record ({type(exc).__name__}); see the gateway log"
    )


def _recorded(statement: PreparedStatement) -> RecordedPrepare:
    recorded = statement.recorded
    return recorded if isinstance(recorded, RecordedPrepare) else _UNRECORDED


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
    if command == COM_STMT_PREPARE:
        return False
    for r in summary.results:  # noqa: SIM110 (no generator per statement)
        if r.columns:
            return True
    return False


def _text_or_bytes(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(data)  # a large packet's payload is a bytearray (wire/packets.py)
