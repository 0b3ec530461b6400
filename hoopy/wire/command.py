"""A client command, decoded once for every stage that reads it (DESIGN.md, "The command
pipeline"): the guardrails, the audit and the KILL mapping share one ``ClientCommand``.

Sans-IO. Decoding is lazy and cached: the relay of a command no stage reads costs nothing, and
the first stage that asks for the SQL text (in a worker thread for a huge statement:
``copy_from`` copies it a MiB at a time) decodes it for all the others.
"""

from __future__ import annotations

from hoopy.wire.packets import ProtocolError, copy_from
from hoopy.wire.params import Param, decode_query_attributes
from hoopy.wire.response import COM_QUERY, COM_STMT_PREPARE


class ClientCommand:
    __slots__ = ("_query", "_sql", "capabilities", "kind", "payload")

    def __init__(self, payload: bytes, capabilities: int) -> None:
        self.payload = payload
        self.kind = payload[0]
        self.capabilities = capabilities
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
