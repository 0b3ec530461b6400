"""Client commands, decoded once for every stage that reads them (DESIGN.md, "The command
pipeline"), and the session state that decoding needs.

Sans-IO. ``SessionCommands.decode(payload)`` gives a ``ClientCommand``: its kind, lazily its
SQL text (COM_QUERY after its query attributes, COM_STMT_PREPARE), and for the COM_STMT_*
commands the prepared statement it names (``LAST_STATEMENT_ID`` resolved). The guardrails,
the audit and the KILL mapping share that one object. ``completed`` and ``no_response`` keep
the state current from what the server did: the prepared-statement table (each statement's
SQL, parameter count, the types its last EXECUTE bound, the parameters sent as long data, and
what the stages noted about it at PREPARE), the current database (COM_INIT_DB), and the
resets (COM_RESET_CONNECTION, COM_CHANGE_USER).

Decoding is lazy and cached: the relay of a command no stage reads costs nothing, and the
first stage that asks for the SQL text (in a worker thread for a huge statement:
``copy_from`` copies it a MiB at a time) decodes it for all the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hoopy.wire.packets import ProtocolError, copy_from
from hoopy.wire.params import (
    STATEMENT_ID_END,
    Param,
    decode_query_attributes,
    named_statement,
)
from hoopy.wire.response import (
    COM_CHANGE_USER,
    COM_INIT_DB,
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

# Collation ids (the handshake's one-byte charset) of big5, sjis, gbk, cp932 and gb18030.
MULTIBYTE_COLLATIONS = frozenset((1, 13, 28, 84, 87, 88, 95, 96, 248, 249, 250))

# Commands whose payload names a prepared statement in bytes 1-4.
STATEMENT_COMMANDS = frozenset(
    (COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_CLOSE, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA)
)


@dataclass(slots=True)
class PreparedStatement:
    """A statement the server prepared for this session."""

    statement_id: int
    num_params: int
    sql: bytes | None  # the text the client prepared (None: not known)
    types: list[tuple[int, bool]] | None = None  # bound by the last EXECUTE that sent them
    long_data: set[int] = field(default_factory=set)  # params sent by SEND_LONG_DATA
    # What stages noted at PREPARE, kept for its executions: the audit's recorded text
    # (hoopy.gateway.session_audit), the guardrails' verdict (hoopy.policy.rules).
    recorded: Any = None
    verdict: Any = None
    lineage: Any = None  # the masking's lineage of its text (hoopy.policy.lineage)
    # The types the client bound were in an EXECUTE hoopy refused: the server lacks them, so
    # the next EXECUTE that reuses them has them written in (params.bind_types).
    types_unsent: bool = False


class ClientCommand:
    """One command from the client. Stages may note facts on it for later stages and for the
    prepared statement a PREPARE creates (``recorded``, ``verdict``)."""

    __slots__ = (
        "_query",
        "_sql",
        "capabilities",
        "kind",
        "lineage",
        "loads_local",
        "params",
        "payload",
        "prepared",
        "recorded",
        "statement_id",
        "switches_multibyte",
        "use_database",
        "use_in_several",
        "use_uncertain",
        "verdict",
    )

    def __init__(
        self,
        payload: bytes,
        capabilities: int,
        statement_id: int | None = None,
        prepared: PreparedStatement | None = None,
    ) -> None:
        self.payload = payload
        self.kind = payload[0]
        self.capabilities = capabilities
        self.statement_id = statement_id  # COM_STMT_*: the statement named, if any
        self.prepared = prepared  # and the session's record of it, if it has one
        self.recorded: Any = None
        self.verdict: Any = None
        self.lineage: Any = None  # masking sessions: per statement, what feeds its columns
        self.params: Any = None  # an EXECUTE's parameters, once the audit decoded them
        # Whether the text holds a LOAD DATA|XML LOCAL (None: not analysed; the session
        # then runs hoopy.sql.checks itself).
        self.loads_local: bool | None = None
        self.use_database: str | None = None  # a COM_QUERY's USE (noted by its analysis)
        self.use_in_several = False  # ... among other statements of the same COM_QUERY
        self.use_uncertain = False  # its readings disagree on the database a USE selects
        self.switches_multibyte = False  # it sets a multibyte client character set, or one
        # hoopy cannot name
        self._query: tuple[tuple[Param, ...], bytes] | ProtocolError | None = None
        self._sql: bytes | None = None

    def query(self) -> tuple[tuple[Param, ...], bytes]:
        """A COM_QUERY's query attributes and SQL text. Raises ``ProtocolError`` when the
        attributes are malformed (the server will reject the command)."""
        if self._query is None:
            try:
                self._query = decode_query_attributes(self.payload, self.capabilities)
            except ProtocolError as exc:
                self._query = exc
        if isinstance(self._query, ProtocolError):
            raise self._query
        return self._query

    def sql(self) -> bytes | None:
        """The SQL text of a COM_QUERY or COM_STMT_PREPARE (None for other commands). A
        COM_QUERY whose attributes cannot be decoded gives everything after its command
        byte: what was sent, for the stages that must judge or record it anyway."""
        if self._sql is None:
            if self.kind == COM_QUERY:
                try:
                    self._sql = self.query()[1]
                except ProtocolError:
                    self._sql = copy_from(self.payload, 1)
            elif self.kind == COM_STMT_PREPARE:
                self._sql = copy_from(self.payload, 1)
        return self._sql


class SessionCommands:
    """The session's decoder and the state it keeps (see the module docstring)."""

    def __init__(self, capabilities: int, database: str | None = None) -> None:
        self.capabilities = capabilities
        self.database = database or None
        # The client character set is (or may have become) one whose characters' second
        # byte can be a quote or backslash (big5, sjis, cp932, gbk, gb18030): once set, it
        # stays set for the session (the guardrails then read text as those charsets too).
        self.multibyte = False
        self.prepared: dict[int, PreparedStatement] = {}
        self.last_prepared: int | None = None  # what LAST_STATEMENT_ID names

    def decode(self, payload: bytes) -> ClientCommand:
        if payload[0] in STATEMENT_COMMANDS and len(payload) >= STATEMENT_ID_END:
            statement_id = named_statement(payload, self.last_prepared)
            prepared = self.prepared.get(statement_id) if statement_id is not None else None
            return ClientCommand(payload, self.capabilities, statement_id, prepared)
        return ClientCommand(payload, self.capabilities)

    def completed(self, command: ClientCommand, summary: ResponseSummary) -> None:
        """A command's response has been relayed: what the server did changes the state."""
        kind = command.kind
        if command.switches_multibyte:
            self.multibyte = True  # whether or not it succeeded: hoopy cannot be sure
        if kind == COM_QUERY and command.use_uncertain:
            self.database = None  # whatever the server did, hoopy cannot tell which one
            return
        if kind == COM_STMT_PREPARE:
            info = summary.prepared
            if info is not None:
                self.last_prepared = info.statement_id
                self.prepared[info.statement_id] = PreparedStatement(
                    info.statement_id,
                    info.num_params,
                    command.sql(),
                    recorded=command.recorded,
                    verdict=command.verdict,
                    lineage=command.lineage,
                )
        elif summary.error is not None:
            if kind == COM_QUERY and command.use_in_several:
                # USE a; <statement that fails>: the server stopped somewhere in the text,
                # so whether it switched is unknown (rules treat the database as unknown).
                self.database = None
            return
        elif kind == COM_INIT_DB:
            self.database = bytes(command.payload[1:]).decode("utf-8", "replace") or None
        elif kind == COM_QUERY and command.use_database is not None:
            self.database = command.use_database
        elif kind == COM_STMT_RESET:
            self.statement_reset(command)
        elif kind in (COM_RESET_CONNECTION, COM_CHANGE_USER):
            self.reset()

    def executed(self, command: ClientCommand, types: list[tuple[int, bool]]) -> None:
        """An EXECUTE was decoded with these parameter types: later ones without types
        reuse them, and the long data it carried is consumed."""
        if command.prepared is not None:
            command.prepared.types = types
            command.prepared.long_data.clear()

    def statement_reset(self, command: ClientCommand) -> None:
        """COM_STMT_RESET: the server discards the statement's long data."""
        if command.prepared is not None:
            command.prepared.long_data.clear()

    def no_response(self, command: ClientCommand) -> None:
        """A command the server does not answer reached it."""
        if command.kind == COM_STMT_CLOSE and command.statement_id is not None:
            self.prepared.pop(command.statement_id, None)
        elif (
            command.kind == COM_STMT_SEND_LONG_DATA
            and command.prepared is not None
            and len(command.payload) >= STATEMENT_ID_END + 2
        ):
            param = int.from_bytes(command.payload[5:7], "little")
            command.prepared.long_data.add(param)

    def charset(self, collation_id: int) -> None:
        """The client character set a handshake or COM_CHANGE_USER named."""
        if collation_id in MULTIBYTE_COLLATIONS:
            self.multibyte = True

    def reset(self) -> None:
        """COM_CHANGE_USER / COM_RESET_CONNECTION: the server closed every statement."""
        self.prepared.clear()
        self.last_prepared = None
