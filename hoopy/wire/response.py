"""Where a response ends: the response-shape state machine.

Given the command a client sent, ``ResponseTracker`` consumes the server's response bytes as
they arrive (in chunks of any size) and says when the response is complete, without copying
or re-encoding anything: the gateway relays each chunk as it is (DESIGN.md, fidelity rule 1).
It looks only at packet headers, at the first payload byte of each row, and in full only at
the few packets that steer the machine (column count, EOF/OK/ERR, prepare-OK), from which it
also collects the outcome the audit records.

Shapes, from the MySQL protocol docs:
- "COM_QUERY Response": OK | ERR | LOCAL INFILE request | text result set
  (column count, column definitions, [EOF unless CLIENT_DEPRECATE_EOF], rows, EOF-or-OK).
  A final OK/EOF with SERVER_MORE_RESULTS_EXISTS is followed by another response of the same
  shape ("Multi-Resultset"); an ERR always ends the chain.
- "COM_STMT_EXECUTE Response": the same, with binary rows; when a cursor was opened the
  server stops after the column definitions' EOF, flagged SERVER_STATUS_CURSOR_EXISTS.
- "COM_STMT_FETCH Response": binary rows, then EOF-or-OK (or ERR).
- "COM_STMT_PREPARE Response": prepare-OK, parameter definitions [+EOF], column definitions
  [+EOF]; or ERR.
- "COM_FIELD_LIST Response": column definitions then EOF (or ERR).
- COM_PING, COM_INIT_DB, COM_RESET_CONNECTION, COM_STATISTICS, ...: exactly one packet.
- COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT: no response at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from hoopy.wire._rowscan import scan_rows
from hoopy.wire.handshake import CLIENT_DEPRECATE_EOF
from hoopy.wire.messages import (
    EOF_HEADER,
    EOF_MAX_PAYLOAD,
    ERR_HEADER,
    LOCAL_INFILE_HEADER,
    OK_HEADER,
    SERVER_MORE_RESULTS_EXISTS,
    SERVER_STATUS_CURSOR_EXISTS,
    ErrPacket,
    OkPacket,
    parse_eof,
    parse_err,
    parse_ok,
)
from hoopy.wire.packets import HEADER_SIZE, MAX_PACKET_PAYLOAD, ProtocolError, Reader


class Digest(Protocol):
    """What the tracker needs of a ``hashlib`` object."""

    def update(self, data: bytes | memoryview, /) -> None: ...


# Command bytes ("Text Protocol" and "Prepared Statements" in the protocol docs).
COM_SLEEP = 0x00
COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_CREATE_DB = 0x05
COM_DROP_DB = 0x06
COM_REFRESH = 0x07
COM_STATISTICS = 0x09
COM_PROCESS_INFO = 0x0A
COM_PROCESS_KILL = 0x0C
COM_DEBUG = 0x0D
COM_PING = 0x0E
COM_CHANGE_USER = 0x11
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_RESET_CONNECTION = 0x1F

COMMAND_NAMES = {
    COM_SLEEP: "COM_SLEEP",
    COM_QUIT: "COM_QUIT",
    COM_INIT_DB: "COM_INIT_DB",
    COM_QUERY: "COM_QUERY",
    COM_FIELD_LIST: "COM_FIELD_LIST",
    COM_CREATE_DB: "COM_CREATE_DB",
    COM_DROP_DB: "COM_DROP_DB",
    COM_REFRESH: "COM_REFRESH",
    COM_STATISTICS: "COM_STATISTICS",
    COM_PROCESS_INFO: "COM_PROCESS_INFO",
    COM_PROCESS_KILL: "COM_PROCESS_KILL",
    COM_DEBUG: "COM_DEBUG",
    COM_PING: "COM_PING",
    COM_CHANGE_USER: "COM_CHANGE_USER",
    COM_STMT_PREPARE: "COM_STMT_PREPARE",
    COM_STMT_EXECUTE: "COM_STMT_EXECUTE",
    COM_STMT_SEND_LONG_DATA: "COM_STMT_SEND_LONG_DATA",
    COM_STMT_CLOSE: "COM_STMT_CLOSE",
    COM_STMT_RESET: "COM_STMT_RESET",
    COM_SET_OPTION: "COM_SET_OPTION",
    COM_STMT_FETCH: "COM_STMT_FETCH",
    COM_RESET_CONNECTION: "COM_RESET_CONNECTION",
}

# Commands the server answers with nothing.
NO_RESPONSE_COMMANDS = frozenset({COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA})
# Commands answered with exactly one packet (OK, ERR, EOF or a string).
SINGLE_PACKET_COMMANDS = frozenset(
    {
        COM_INIT_DB,
        COM_CREATE_DB,
        COM_DROP_DB,
        COM_REFRESH,
        COM_STATISTICS,
        COM_PROCESS_KILL,
        COM_DEBUG,
        COM_PING,
        COM_STMT_RESET,
        COM_SET_OPTION,
        COM_RESET_CONNECTION,
    }
)
# Commands answered like COM_QUERY (a possibly chained OK / ERR / result set).
RESULT_COMMANDS = frozenset({COM_QUERY, COM_STMT_EXECUTE, COM_PROCESS_INFO})

# A control packet (OK/ERR/EOF/column count/prepare-OK) larger than this is not one.
MAX_CONTROL_PAYLOAD = MAX_PACKET_PAYLOAD - 1


class _State(enum.Enum):
    FIRST = enum.auto()  # first packet of a (chained) result
    COLUMNS = enum.auto()
    COLUMNS_EOF = enum.auto()
    ROWS = enum.auto()
    PREPARE_FIRST = enum.auto()
    PREPARE_PARAMS = enum.auto()
    PREPARE_PARAMS_EOF = enum.auto()
    PREPARE_COLUMNS = enum.auto()
    PREPARE_COLUMNS_EOF = enum.auto()
    FIELD_LIST = enum.auto()
    SINGLE = enum.auto()
    LOCAL_INFILE = enum.auto()  # paused: the client is sending a file
    AFTER_INFILE = enum.auto()  # the OK/ERR that follows the client's file
    DONE = enum.auto()


@dataclass(slots=True)
class ResultInfo:
    """One result in a (possibly chained) response: an OK, or a result set."""

    columns: int = 0
    rows: int = 0
    affected_rows: int = 0
    last_insert_id: int = 0
    warnings: int = 0
    info: bytes = b""
    status: int = 0


@dataclass(slots=True)
class PreparedInfo:
    statement_id: int
    num_columns: int
    num_params: int
    warnings: int


@dataclass(slots=True)
class ResponseSummary:
    """What a response said, for the audit outcome record."""

    results: list[ResultInfo] = field(default_factory=list)
    error: ErrPacket | None = None
    prepared: PreparedInfo | None = None
    local_infile: bytes | None = None
    # Set by the masking relay: per rule, the masked columns and how many values it masked.
    masked: dict[str, dict[str, object]] | None = None

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.results)

    @property
    def affected_rows(self) -> int:
        return sum(r.affected_rows for r in self.results)

    @property
    def warnings(self) -> int:
        return sum(r.warnings for r in self.results)

    @property
    def last_insert_id(self) -> int:
        for r in reversed(self.results):
            if r.last_insert_id:
                return r.last_insert_id
        return 0


class ResponseTracker:
    """Follows one command's response through arbitrary chunk boundaries.

    ``feed`` returns how many of the given bytes belong to this response; it is less than
    ``len(data)`` only once the response is complete and the server sent more (which a
    well-behaved server never does). After a LOCAL INFILE request the tracker pauses
    (``awaiting_local_infile``) until the gateway has relayed the client's file and calls
    ``local_infile_sent``.
    """

    def __init__(
        self,
        command: int,
        capabilities: int,
        digest: Digest | None = None,
        *,
        pause_between_results: bool = False,
    ) -> None:
        self.command = command
        # Stop feeding where one result of a chain ends and the next begins (``feed``
        # returns there): the masking relay plans each result set from its definitions.
        self.pause_between_results = pause_between_results
        # Fed the bytes of every row packet (header included) of every result set, as
        # relayed: the audit's result digest. Column definitions are left out (they name
        # the schema and vary with client capabilities); the row headers' sequence ids
        # depend only on the column count and CLIENT_DEPRECATE_EOF.
        self.digest = digest
        self._skip_row = False  # the bytes being skipped belong to a row
        self.capabilities = capabilities
        self.deprecate_eof = bool(capabilities & CLIENT_DEPRECATE_EOF)
        self.summary = ResponseSummary()
        self._partial = b""
        self._skip = 0  # payload bytes of the current packet still to pass over
        self._continuation = False  # the previous wire packet was 0xFFFFFF long
        self._remaining = 0  # column/param definitions still expected
        self._pending_columns = 0
        self._current: ResultInfo | None = None
        self.last_seq = -1  # sequence id of the last packet header seen (-1: none yet)
        # A 0xFE packet shorter than this ends a result set (see _is_terminator).
        self._terminator_limit = MAX_PACKET_PAYLOAD if self.deprecate_eof else EOF_MAX_PAYLOAD
        if command in RESULT_COMMANDS:
            self._state = _State.FIRST
        elif command == COM_STMT_FETCH:
            self._current = ResultInfo()
            self.summary.results.append(self._current)
            self._state = _State.ROWS
        elif command == COM_STMT_PREPARE:
            self._state = _State.PREPARE_FIRST
        elif command == COM_FIELD_LIST:
            self._state = _State.FIELD_LIST
        elif command in NO_RESPONSE_COMMANDS:
            self._state = _State.DONE
        else:
            self._state = _State.SINGLE

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def between_results(self) -> bool:
        """True before a result's first packet: at the start, or after a result that said
        more follow (SERVER_MORE_RESULTS_EXISTS)."""
        return self._state is _State.FIRST

    @property
    def awaiting_local_infile(self) -> bool:
        return self._state is _State.LOCAL_INFILE

    @property
    def at_packet_boundary(self) -> bool:
        """True when every byte fed so far completed a packet (an ERR may be injected)."""
        return not self._skip and not self._partial and not self._continuation

    def row_relayed(self, next_seq: int) -> None:
        """A whole row packet (or a row of several packets, the last before ``next_seq``)
        that the caller relayed itself, rewritten (the masking relay): counted, not fed."""
        self.rows_relayed(1, next_seq)

    def rows_relayed(self, count: int, next_seq: int) -> None:
        """``row_relayed`` for ``count`` rows, the last of them before ``next_seq``."""
        if self._state is not _State.ROWS or self._partial or self._skip or self._continuation:
            raise ProtocolError("a row outside the rows of a result set")
        assert self._current is not None
        self._current.rows += count
        self.last_seq = (next_seq - 1) & 0xFF

    def local_infile_sent(self) -> None:
        if self._state is not _State.LOCAL_INFILE:
            raise ProtocolError("no LOCAL INFILE request is pending")
        self._state = _State.AFTER_INFILE

    def feed(self, data: bytes) -> int:
        carried = len(self._partial)
        if carried:
            data = self._partial + data
            self._partial = b""
        pos = 0
        end = len(data)
        state = self._state
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                if self._skip_row and self.digest is not None:
                    self.digest.update(memoryview(data)[pos : pos + step])
                pos += step
                self._skip -= step
                if not self._skip:
                    self._skip_row = False
                continue
            if state is _State.DONE or state is _State.LOCAL_INFILE:
                break
            if state is _State.ROWS and not self._continuation:
                start = pos
                pos, rows, self._skip = scan_rows(data, pos, end, self._terminator_limit)
                if self.digest is not None and pos > start:
                    self.digest.update(memoryview(data)[start:pos])
                self._skip_row = self._skip > 0
                if rows:
                    assert self._current is not None
                    self._current.rows += rows
                    # Sequence ids count packets, so the last row's follows arithmetically.
                    self.last_seq = (self.last_seq + rows) & 0xFF
                if self._skip or pos >= end:
                    continue
            if end - pos < HEADER_SIZE:
                self._partial = data[pos:]
                return end - carried
            length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
            seq = data[pos + 3]  # becomes last_seq once the packet is taken, not if stashed
            body = pos + HEADER_SIZE
            if self._continuation:
                # Continuation of a payload over 16 MiB: no header byte to look at.
                self.last_seq = seq
                self._continuation = length == MAX_PACKET_PAYLOAD
                self._hash_row_header(state, data, pos)
                self._skip = length
                pos = body
                continue
            self._continuation = length == MAX_PACKET_PAYLOAD
            if state is _State.ROWS or state is _State.COLUMNS or state is _State.PREPARE_PARAMS:
                # Hot path: rows and definitions are relayed without reading them, unless the
                # first byte says the packet may end the section.
                if length == 0 or body >= end:
                    if length == 0:
                        raise ProtocolError("empty packet inside a result set")
                    self._partial = data[pos:]
                    self._continuation = False
                    return end - carried
                first = data[body]
                if state is _State.ROWS:
                    if first == ERR_HEADER or (first == EOF_HEADER and self._is_terminator(length)):
                        pass  # fall through to the full-packet handling below
                    else:
                        self.last_seq = seq
                        assert self._current is not None
                        self._current.rows += 1
                        self._hash_row_header(state, data, pos)
                        self._skip = length
                        pos = body
                        continue
                else:
                    self.last_seq = seq
                    self._remaining -= 1
                    if self._remaining == 0:
                        state = self._after_definitions(state)
                    self._skip = length
                    pos = body
                    continue
            if length >= MAX_CONTROL_PAYLOAD:
                raise ProtocolError(f"oversized control packet in {self._state.name}")
            if end - body < length:
                self._partial = data[pos:]
                self._continuation = False
                return end - carried
            self.last_seq = seq
            state = self._packet(state, data[body : body + length])
            self._state = state
            pos = body + length
            if state is _State.FIRST and self.pause_between_results:
                break
        self._state = state
        return max(pos - carried, 0)

    # --- helpers -------------------------------------------------------------------------

    def _hash_row_header(self, state: _State, data: bytes, pos: int) -> None:
        """A row packet's header at ``pos``: digest it, and its payload as it is skipped."""
        if state is _State.ROWS and self.digest is not None:
            self.digest.update(memoryview(data)[pos : pos + HEADER_SIZE])
            self._skip_row = True

    def _is_terminator(self, length: int) -> bool:
        return length < self._terminator_limit

    def _after_definitions(self, state: _State) -> _State:
        self._state = state  # keep in sync for error messages
        if state is _State.COLUMNS:
            nxt = _State.ROWS if self.deprecate_eof else _State.COLUMNS_EOF
        elif self._pending_columns:
            # Parameters done; the column definitions follow.
            nxt = self._start_prepare_columns() if self.deprecate_eof else _State.PREPARE_PARAMS_EOF
        else:
            nxt = _State.DONE if self.deprecate_eof else _State.PREPARE_COLUMNS_EOF
        self._state = nxt
        return nxt

    def _start_prepare_columns(self) -> _State:
        self._remaining = self._pending_columns
        self._pending_columns = 0
        return _State.PREPARE_PARAMS  # the same "skip N definitions" machinery

    def _end_of_result(self, status: int) -> _State:
        if status & SERVER_MORE_RESULTS_EXISTS:
            return _State.FIRST
        return _State.DONE

    def _error(self, payload: bytes) -> _State:
        self.summary.error = parse_err(payload, self.capabilities)
        return _State.DONE

    def _ok_result(self, payload: bytes) -> _State:
        ok = parse_ok(payload, self.capabilities)
        self.summary.results.append(_result_from_ok(ok))
        return self._end_of_result(ok.status)

    def _packet(self, state: _State, payload: bytes) -> _State:
        """Handle one complete control packet; returns the next state."""
        if not payload:
            raise ProtocolError(f"empty packet in {state.name}")
        first = payload[0]
        if state is _State.SINGLE:
            if first == ERR_HEADER:
                return self._error(payload)
            if first == OK_HEADER:
                self.summary.results.append(_result_from_ok(parse_ok(payload, self.capabilities)))
            return _State.DONE
        if first == ERR_HEADER:
            return self._error(payload)
        if state is _State.FIRST or state is _State.AFTER_INFILE:
            if first == OK_HEADER:
                return self._ok_result(payload)
            if first == LOCAL_INFILE_HEADER and state is _State.FIRST:
                self.summary.local_infile = payload[1:]
                return _State.LOCAL_INFILE
            if state is _State.AFTER_INFILE:
                raise ProtocolError("expected OK or ERR after the LOCAL INFILE data")
            count = Reader(payload).lenenc_int()
            if count == 0:
                raise ProtocolError("result set with zero columns")
            self._current = ResultInfo(columns=count)
            self.summary.results.append(self._current)
            self._remaining = count
            return _State.COLUMNS
        if state is _State.COLUMNS_EOF:
            if first != EOF_HEADER:
                raise ProtocolError("expected EOF after column definitions")
            eof = parse_eof(payload)
            if self.command == COM_STMT_EXECUTE and eof.status & SERVER_STATUS_CURSOR_EXISTS:
                assert self._current is not None
                self._current.status = eof.status
                self._current.warnings = eof.warnings
                return _State.DONE
            return _State.ROWS
        if state is _State.ROWS:
            # Only terminators reach here (rows take the hot path).
            current = self._current
            assert current is not None
            if self.deprecate_eof:
                ok = parse_ok(payload, self.capabilities)
                current.status, current.warnings, current.info = ok.status, ok.warnings, ok.info
                current.affected_rows = ok.affected_rows
            else:
                eof = parse_eof(payload)
                current.status, current.warnings = eof.status, eof.warnings
            if current.status & SERVER_STATUS_CURSOR_EXISTS and self.command == COM_STMT_EXECUTE:
                return _State.DONE
            return self._end_of_result(current.status)
        if state is _State.PREPARE_FIRST:
            if first != OK_HEADER:
                raise ProtocolError("expected prepare-OK")
            r = Reader(payload, 1)
            info = PreparedInfo(
                statement_id=r.uint(4),
                num_columns=r.uint(2),
                num_params=r.uint(2),
                warnings=(r.uint(1), r.uint(2))[1] if r.remaining() >= 3 else 0,
            )
            self.summary.prepared = info
            self.summary.results.append(
                ResultInfo(columns=info.num_columns, warnings=info.warnings)
            )
            if info.num_params:
                self._remaining = info.num_params
                self._pending_columns = info.num_columns
                return _State.PREPARE_PARAMS
            if info.num_columns:
                self._remaining = info.num_columns
                return _State.PREPARE_PARAMS
            return _State.DONE
        if state is _State.PREPARE_PARAMS_EOF:
            if first != EOF_HEADER:
                raise ProtocolError("expected EOF after parameter definitions")
            return self._start_prepare_columns()
        if state is _State.PREPARE_COLUMNS_EOF:
            if first != EOF_HEADER:
                raise ProtocolError("expected EOF after column definitions")
            return _State.DONE
        if state is _State.FIELD_LIST:
            if first == EOF_HEADER and len(payload) < MAX_PACKET_PAYLOAD:
                return _State.DONE
            return _State.FIELD_LIST
        raise ProtocolError(f"unexpected packet in state {state.name}")


def _result_from_ok(ok: OkPacket) -> ResultInfo:
    return ResultInfo(
        affected_rows=ok.affected_rows,
        last_insert_id=ok.last_insert_id,
        warnings=ok.warnings,
        info=ok.info,
        status=ok.status,
    )
