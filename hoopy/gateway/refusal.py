"""What a refused command gets back, and what refusing it leaves behind (fidelity rule 3).

The rule, in one place for every reason hoopy refuses a command (an audit record that cannot
be written, an expired token, an unrelayed command, a guardrail or an approval later): a
command that has a response gets exactly one ERR, with the sequence id its response would
have started with; a command that has none (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA,
COM_QUIT: "no response is sent back to the client" in the protocol docs) gets nothing. A
client does not read a reply to those, so an ERR sent for one is read as the reply to the
next command, and every later reply on the connection belongs to the command before it
(measured: acknowledged inserts missing from the table, valid statements failing with
1210/1243).

Refusing a command that has no response is silent, so the state the client believes in and
the server's part ways; the session carries the difference:

- COM_STMT_SEND_LONG_DATA refused: the server lacks a chunk of a parameter the client
  believes complete. The same holds when hoopy refuses the COM_STMT_EXECUTE or
  COM_STMT_RESET of a statement whose long data the server holds: a direct server would have
  consumed or discarded it, so the client resends or binds anew, and the server would append
  to, or use, the stale data. ``LongData`` marks such a statement, and its next
  COM_STMT_EXECUTE is refused with an ERR that says why; a COM_STMT_RESET that succeeds
  (which discards the server's long data), COM_STMT_CLOSE, COM_RESET_CONNECTION and
  COM_CHANGE_USER clear the mark.
- COM_STMT_CLOSE refused: the server keeps the statement until the session ends (statement
  ids are never reused within a connection, so nothing can run it by mistake; it counts
  against ``max_prepared_stmt_count`` until then).
"""

from __future__ import annotations

from hoopy.wire.command import SessionCommands
from hoopy.wire.errors import ErrorKind
from hoopy.wire.messages import build_err
from hoopy.wire.packets import Packet, frame
from hoopy.wire.params import named_statement
from hoopy.wire.response import (
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA,
    NO_RESPONSE_COMMANDS,
)


def refusal_reply(packet: Packet, kind: ErrorKind, message: str) -> bytes | None:
    """The framed ERR to send for a refused command, or None when it takes no response.

    The ERR's sequence id follows the command's last packet (``next_seq``: 1 for a command in
    one packet, more for one over 16 MiB), as the server's own response would.
    """
    if not packet.payload or packet.payload[0] in NO_RESPONSE_COMMANDS:
        return None
    data, _ = frame(build_err(kind.code, kind.sqlstate, message), packet.next_seq)
    return data


class LongData:
    """Which prepared statements' long data the server holds, and which hoopy broke.

    Sans-IO: the session reports forwarded and refused commands; ``check`` says whether an
    EXECUTE must be refused. Empty (falsy) in every session that never sent long data, so
    the per-statement cost there is one truth test.
    """

    def __init__(self, commands: SessionCommands | None = None) -> None:
        self._held: set[int] = set()  # long data forwarded since the last EXECUTE / RESET
        self._broken: dict[int, tuple[ErrorKind, str]] = {}  # statement -> the refusal
        # The session's command state: what LAST_STATEMENT_ID names.
        self.commands = commands if commands is not None else SessionCommands(0)

    @property
    def last_prepared(self) -> int | None:
        return self.commands.last_prepared

    @last_prepared.setter
    def last_prepared(self, statement_id: int | None) -> None:
        self.commands.last_prepared = statement_id

    def __bool__(self) -> bool:
        return bool(self._held or self._broken)

    def _statement_id(self, payload: bytes) -> int | None:
        return named_statement(payload, self.last_prepared)

    def refused(self, payload: bytes, kind: ErrorKind, message: str) -> None:
        """hoopy refused this command (answered with an ERR, or dropped it silently)."""
        command = payload[0] if payload else -1
        if command not in _STATEMENT_COMMANDS:
            return
        statement_id = self._statement_id(payload)
        if statement_id is None:
            return
        if command == COM_STMT_CLOSE:
            self._forget(statement_id)  # the client will not name it again
        elif command == COM_STMT_SEND_LONG_DATA or statement_id in self._held:
            self._broken.setdefault(statement_id, (kind, message))

    def forwarded(self, payload: bytes, succeeded: bool) -> None:
        """A command reached the server (``succeeded``: its response was not an ERR)."""
        command = payload[0]
        if command not in _STATEMENT_COMMANDS:
            return
        statement_id = self._statement_id(payload)
        if statement_id is None:
            return
        if command == COM_STMT_SEND_LONG_DATA:
            self._held.add(statement_id)
        elif command == COM_STMT_EXECUTE:
            # The server consumed (or, failing, discarded) the long data, as it would for a
            # direct client. (A broken statement's EXECUTE is never forwarded.)
            self._held.discard(statement_id)
        elif command == COM_STMT_CLOSE or (command == COM_STMT_RESET and succeeded):
            self._forget(statement_id)

    def _forget(self, statement_id: int) -> None:
        self._held.discard(statement_id)
        self._broken.pop(statement_id, None)

    def reset(self) -> None:
        """COM_RESET_CONNECTION / COM_CHANGE_USER: the server closed every statement."""
        self._held.clear()
        self._broken.clear()
        self.last_prepared = None

    def check(self, payload: bytes) -> tuple[ErrorKind, str] | None:
        """For a COM_STMT_EXECUTE: the refusal to answer with, or None to let it through."""
        if payload[0] != COM_STMT_EXECUTE or not self._broken:
            return None
        statement_id = self._statement_id(payload)
        if statement_id is None or statement_id not in self._broken:
            return None
        kind, reason = self._broken[statement_id]
        return kind, (
            "hoopy refused a command of this prepared statement while the server held its "
            "long data (COM_STMT_SEND_LONG_DATA), so the server's copy is not what the client "
            "sent and the statement was not run; reset it and send its data again. The "
            "refusal was: " + reason
        )


_STATEMENT_COMMANDS = frozenset(
    {COM_STMT_SEND_LONG_DATA, COM_STMT_EXECUTE, COM_STMT_RESET, COM_STMT_CLOSE}
)
