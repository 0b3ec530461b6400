"""The response relay of a session that masks: result sets whose plan masks a column are
rewritten row by row; everything else passes as it came (DESIGN.md, fidelity rule 1).

The session's masking policy (policy/masking.py) plans each result set from its column
definitions. With no masked column, the rest of that result set is relayed in chunks by the
response tracker, byte for byte, as in sessions without masking. With masked columns:

- the column definitions go out as the plan rewrote them (room for the stand-in, NOT_NULL
  cleared where a NULL may now appear), the rows decoded, masked and re-encoded in the
  command's protocol (text for COM_QUERY, binary for COM_STMT_EXECUTE and COM_STMT_FETCH):
  whole chunks of rows through the compiled loop (wire/_rowmask.py), and each packet it
  leaves (the rows' end, an ERR, a 16 MiB row, one it cannot mask) one at a time;
- a row re-encoded across a 16 MiB boundary can take another packet than it came in, so the
  sequence ids of the packets after it are renumbered (``_Out.shift``);
- a value that cannot be masked ends the response with an ERR where the row would have gone
  (never the value), and the rest of the server's response is read and dropped, so the
  session stays in step with its target;
- a cursor opened by COM_STMT_EXECUTE keeps its plan for the COM_STMT_FETCHes that read it.

The tracker is fed every byte the server sent except the rows this relay rewrites or
renumbers (counted instead), so the outcome it collects (rows, status, errors) is the
server's; the result digest is of the rows the client received.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hoopy.gateway.views import ViewsUnavailable
from hoopy.policy.lineage import StatementLineage
from hoopy.policy.masking import (
    DIAGNOSTICS,
    UNMASKED,
    MaskingError,
    MaskingPlan,
    MaskingPolicy,
    MaskingRefusal,
    RowRewriter,
    result_lineage,
)
from hoopy.wire import errors
from hoopy.wire._rowmask import MORE, mask_rows
from hoopy.wire.command import ClientCommand
from hoopy.wire.handshake import CLIENT_DEPRECATE_EOF, MARIADB_CLIENT_EXTENDED_METADATA
from hoopy.wire.messages import EOF_HEADER, ERR_HEADER, ErrPacket, build_err, parse_err
from hoopy.wire.packets import MAX_PACKET_PAYLOAD, Packet, ProtocolError, Reader, frame
from hoopy.wire.response import (
    COM_QUERY,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    ResponseSummary,
    ResponseTracker,
)

if TYPE_CHECKING:
    from hoopy.gateway.session import Session

log = logging.getLogger("hoopy.masking")

# Commands whose responses carry result sets (COM_FIELD_LIST carries definitions only).
MASKED_COMMANDS = frozenset({COM_QUERY, COM_STMT_EXECUTE, COM_STMT_FETCH})
# Rewritten bytes are sent in batches of about this size (one write per batch, not per row).
_FLUSH_BYTES = 256 * 1024
# A row packet the compiled loop waits for across reads at most (longer ones, rare, take
# the general path, which reads a packet of any size without copying it again per read).
_CHUNK_ROW_MAX = 256 * 1024
_LOCAL_INFILE_HEADER = 0xFB
_OK_HEADER = 0x00


async def masking_refusal(session: Session, decoded: ClientCommand) -> MaskingRefusal | None:
    """The masking stage before a COM_QUERY or COM_STMT_PREPARE runs: trace what feeds its
    results, through the target's views (kept on the command for the relay, and for a
    PREPARE on its statement), and refuse what masking could not follow. A failure to
    trace, or to read the views, refuses (fail closed)."""
    masking = session.masking
    assert masking is not None
    text = decoded.sql() or b""
    database = session.command_state.database
    try:
        lineages = masking.trace(
            text, session.server_version, multibyte=session.command_state.multibyte
        )
        catalog = session.server.policies.views(session.target)
        if catalog.available and any(lin.tables or lin.every_source for lin in lineages):
            try:
                views = await catalog.views()
            except ViewsUnavailable as exc:
                return MaskingRefusal(
                    "masking/views",
                    f"hoopy masking: hoopy cannot read the views of target "
                    f"'{session.target.name}' ({exc}), which masking follows, so the "
                    "statement was not run",
                )
            lineages = views.resolve(lineages, database)
        decoded.lineage = lineages
        refusal = masking.refusal(
            text, lineages, database, diagnostics_masked=session.diagnostics_masked
        )
    except Exception as exc:  # a bug must refuse the statement, not leak or end the session
        log.error("session %s: cannot trace the statement for masking: %s", session.id,
                  type(exc).__name__)  # fmt: skip
        return MaskingRefusal(
            "masking_error",
            "hoopy could not check this statement against its masking rules, so it was not "
            "run (the gateway log has the details)",
        )
    if refusal is None:
        return None
    return MaskingRefusal(refusal.rule, f"hoopy masking: {refusal.message}")


class _Out:
    """What goes to the client: batched, with sequence ids renumbered after a row that took
    another number of packets than it came in."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.buffer = bytearray()
        self.shift = 0

    def raw(self, packet: Packet) -> None:
        if self.shift:
            self.payload(packet, packet.payload)
        else:
            self.buffer += packet.raw

    def payload(self, packet: Packet, payload: bytes) -> bytes:
        """``payload`` in place of ``packet``'s; returns the bytes queued."""
        data, next_seq = frame(payload, (packet.seq + self.shift) & 0xFF)
        self.shift = (next_seq - packet.next_seq) & 0xFF
        self.buffer += data
        return data

    async def flush(self) -> None:
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            await self.session.client.send_raw(data)


async def relay_masked(
    session: Session, tracker: ResponseTracker, decoded: ClientCommand, masking: MaskingPolicy
) -> ResponseSummary:
    """Relay one response of a masking session (see the module docstring)."""
    assert session.upstream is not None and session.login is not None
    command = decoded.kind
    statement_id = decoded.prepared.statement_id if decoded.prepared is not None else None
    if command == COM_STMT_FETCH:
        plan = session.cursor_plans.get(statement_id) if statement_id is not None else None
        if plan is None:
            return await session.relay_response(tracker)
        return await _Relay(session, tracker, masking, binary=True).rows_only(plan)
    if command == COM_STMT_EXECUTE:
        lineages = decoded.prepared.lineage if decoded.prepared is not None else None
    else:
        lineages = decoded.lineage
    relay = _Relay(session, tracker, masking, binary=command == COM_STMT_EXECUTE)
    relay.lineages = tuple(lineages or ())
    summary, cursor_plan = await relay.run()
    if statement_id is not None and command == COM_STMT_EXECUTE:
        if cursor_plan is not None:
            session.cursor_plans[statement_id] = cursor_plan
        else:
            session.cursor_plans.pop(statement_id, None)
    return summary


class _Relay:
    def __init__(
        self, session: Session, tracker: ResponseTracker, masking: MaskingPolicy, *, binary: bool
    ) -> None:
        assert session.upstream is not None and session.login is not None
        self.session = session
        self.upstream = session.upstream.packets
        self.tracker = tracker
        self.masking = masking
        self.binary = binary
        self.out = _Out(session)
        capabilities = session.login.capabilities
        self.deprecate_eof = bool(capabilities & CLIENT_DEPRECATE_EOF)
        self.extended = bool(session.login.mariadb_capabilities & MARIADB_CLIENT_EXTENDED_METADATA)
        self.terminator_limit = MAX_PACKET_PAYLOAD if self.deprecate_eof else 9
        self.digest = tracker.digest
        self.masked_values: dict[str, int] = {}
        self.masked_columns: dict[str, list[str]] = {}
        self.first = True
        # Per statement of the command, what feeds its result (results line up with
        # statements, one each, until a CALL); ``result`` counts the results seen.
        self.lineages: tuple[StatementLineage, ...] = ()
        self.result = 0
        self.database = session.command_state.database
        self.capabilities = capabilities
        self.touching = False
        self.diagnostics = False

    def _lineage(self) -> StatementLineage | None:
        return result_lineage(self.lineages, self.result)

    def _begin_result(self, plan: MaskingPlan | None = None) -> None:
        """A result starts: note whether its statement reads masked columns (its error
        message is then hidden, and so are the warnings SHOW WARNINGS shows after it)."""
        lin = self._lineage()
        self.diagnostics = lin is not None and lin.diagnostics
        if lin is None and self._untraced_alone():
            # Text hoopy could not parse that names no table a rule covers (else it was
            # refused): it cannot read masked columns, and its errors (syntax errors, most
            # often) keep their message.
            self.touching = plan is not None
        else:
            self.touching = plan is not None or self.masking.touches(lin, self.database)

    def _untraced_alone(self) -> bool:
        """Whether this result's statement is unparsed text after nothing opaque."""
        if self.result >= len(self.lineages):
            return False
        if any(e.calls or e.opaque for e in self.lineages[: self.result + 1]):
            return False
        return self.lineages[self.result].unknown is not None

    def _end_result(self) -> None:
        if not self.diagnostics:
            lin = self._lineage()
            if self.touching:
                self.session.diagnostics_masked = True
            elif lin is not None and lin.tables:
                # The server keeps the last messages through statements that use no table
                # (SELECT 1): only a statement that reads a table replaces them.
                self.session.diagnostics_masked = False
        self.result += 1

    def _error(self, packet: Packet) -> None:
        """An ERR: relayed, with its message hidden when the statement reads masked columns
        (messages can quote values: "XPATH syntax error: '~alice@...'")."""
        try:
            code = parse_err(packet.payload, self.capabilities)
        except ProtocolError:
            code = ErrPacket(1105, "HY000", "")
        if not self.touching and not self.masking.classified(code.message):
            self.out.raw(packet)
            self._feed(packet)
            return
        message = (
            f"hoopy hid this error's message: the statement reads masked columns, and error "
            f"messages can quote values (error {code.code})"
        )
        self.out.payload(packet, build_err(code.code, code.sqlstate, message))
        self._feed(packet)
        self.tracker.summary.error = ErrPacket(code.code, code.sqlstate, message)

    async def _read(self) -> Packet:
        packet = self.upstream.buffered_packet()
        if packet is None:
            await self.out.flush()  # about to wait: what is ready goes first
            packet = await self.upstream.read_packet(wait_first=self.first)
            self.first = False
        return packet

    def _feed(self, packet: Packet, *, row: bool = False) -> None:
        """Let the tracker see the server's bytes (not hashing a row the client gets
        rewritten: that row is hashed as sent)."""
        if row:
            self.tracker.digest = None
        used = self.tracker.feed(packet.raw)
        self.tracker.digest = self.digest
        if used != len(packet.raw):
            raise ProtocolError("the target sent more than its response")

    def _summary(self) -> ResponseSummary:
        summary = self.tracker.summary
        if self.masked_columns:
            summary.masked = {
                rule: {"columns": columns, "values": self.masked_values.get(rule, 0)}
                for rule, columns in self.masked_columns.items()
            }
        return summary

    async def run(self) -> tuple[ResponseSummary, MaskingPlan | None]:
        tracker = self.tracker
        tracker.pause_between_results = True
        while True:
            packet = await self._read()
            head = packet.payload[0] if packet.payload else -1
            if head in (_OK_HEADER, ERR_HEADER, _LOCAL_INFILE_HEADER):
                if head != _LOCAL_INFILE_HEADER:
                    self._begin_result()
                if head == ERR_HEADER:
                    self._error(packet)
                else:
                    self.out.raw(packet)
                    self._feed(packet)
                if head != _LOCAL_INFILE_HEADER:
                    self._end_result()
                if tracker.awaiting_local_infile:
                    await self.out.flush()
                    await self.session.relay_local_infile()
                    tracker.local_infile_sent()
                    continue
                if tracker.done:
                    await self.out.flush()
                    return self._summary(), None
                continue
            count = Reader(packet.payload).lenenc_int()
            self._feed(packet)
            definitions = [packet]
            for _ in range(count):
                definitions.append(await self._read())
            lin = self._lineage()
            payloads = [p.payload for p in definitions[1:]]
            if lin is not None and lin.diagnostics and self.session.diagnostics_masked:
                policy = DIAGNOSTICS
            else:
                policy = self.masking
            plan = policy.plan(
                payloads, extended_metadata=self.extended, lineage=lin, database=self.database
            )
            self._begin_result(plan)
            if plan is None:
                for p in definitions:
                    self.out.raw(p)
                for p in definitions[1:]:
                    self._feed(p)
                if self.touching or self.out.shift:
                    # Rows pass as they came, packet by packet, so an ERR among them can
                    # have its message hidden (and so their sequence ids can be renumbered
                    # after an earlier rewritten row changed its packet count).
                    if not self.deprecate_eof:
                        eof = await self._read()
                        self.out.raw(eof)
                        self._feed(eof)
                    if not tracker.done and not await self._rows(None):
                        return self._summary(), None
                else:
                    await self.out.flush()
                    await self._relay_unmasked()
                self._end_result()
                if tracker.done:
                    await self.out.flush()
                    return self._summary(), None
                continue
            self._note(plan)
            self.out.raw(packet)
            for p, rewritten in zip(definitions[1:], plan.definitions, strict=True):
                self.out.payload(p, rewritten)
                self._feed(p)
            if tracker.done:  # a cursor (CLIENT_DEPRECATE_EOF): rows come with COM_STMT_FETCH
                await self.out.flush()
                return self._summary(), plan
            if not self.deprecate_eof:
                eof = await self._read()
                self.out.raw(eof)
                self._feed(eof)
                if tracker.done:  # a cursor: its rows come with COM_STMT_FETCH
                    await self.out.flush()
                    return self._summary(), plan
            if not await self._rows(plan):
                return self._summary(), None
            self._end_result()
            if tracker.done:
                await self.out.flush()
                return self._summary(), None

    async def rows_only(self, plan: MaskingPlan) -> ResponseSummary:
        """COM_STMT_FETCH: rows of the cursor's result set, and its end."""
        self._note(plan)
        self.touching = True
        if await self._rows(plan):
            await self.out.flush()
        return self._summary()

    def _note(self, plan: MaskingPlan) -> None:
        for rule, names in plan.rules.items():
            known = self.masked_columns.setdefault(rule, [])
            known.extend(n for n in names if n not in known)

    async def _relay_unmasked(self) -> None:
        """The rest of a result set without masked columns, in chunks, byte for byte."""
        await self.out.flush()
        tracker = self.tracker
        upstream = self.upstream
        client = self.session.client
        while not tracker.done and not tracker.between_results:
            data = await upstream.receive_some()
            used = tracker.feed(data)
            if used < len(data):
                upstream.unread(data[used:])
                data = data[:used]
            if data:
                if self.out.shift:
                    raise ProtocolError("renumbered packets cannot be relayed in chunks")
                await client.send_raw(data)

    async def _rows(self, plan: MaskingPlan | None) -> bool:
        """Rows until the result set's end (None: relayed as they came); False when a
        value could not be masked (the client got an ERR, the rest of the response was
        drained)."""
        rewrite = None if plan is None else (plan.binary_row if self.binary else plan.text_row)
        fast = UNMASKED if plan is None else plan.rewriter(self.binary)
        counts = self.masked_values
        while True:
            if fast is not None:
                await self._chunk(fast)
            packet = await self._read()
            payload = packet.payload
            head = payload[0] if payload else -1
            if head == ERR_HEADER:
                self._error(packet)
                return True
            if head == EOF_HEADER and len(payload) < self.terminator_limit:
                self.out.raw(packet)
                self._feed(packet)
                return True
            if rewrite is None:
                if self.out.shift:  # renumbered: the digest is of the row as sent
                    data = self.out.payload(packet, payload)
                    if self.digest is not None:
                        self.digest.update(data)
                    self.tracker.row_relayed(packet.next_seq)
                else:
                    self.out.raw(packet)
                    self._feed(packet)
                if len(self.out.buffer) >= _FLUSH_BYTES:
                    await self.out.flush()
                continue
            assert plan is not None
            try:
                new, masked = rewrite(payload)
            except MaskingError as exc:
                await self._fail(packet, plan, exc)
                return False
            for rule, n in masked.items():
                counts[rule] = counts.get(rule, 0) + n
            data = self.out.payload(packet, new)
            if self.digest is not None:
                self.digest.update(data)
            self.tracker.row_relayed(packet.next_seq)
            if len(self.out.buffer) >= _FLUSH_BYTES:
                await self.out.flush()

    async def _chunk(self, fast: RowRewriter) -> None:
        """Rows as they are buffered or arrive, through the compiled loop (wire/_rowmask.py),
        until a packet it leaves to the general path (the rows' end, an error, a row it
        cannot rewrite, one longer than ``_CHUNK_ROW_MAX``) is next."""
        upstream = self.upstream
        out = self.out
        tally = [0] * len(fast.kinds)
        if not upstream.buffered:
            await out.flush()  # about to wait: what is ready goes first
        data = await upstream.receive_some()
        while True:
            mark = len(out.buffer)
            pos, rows, next_seq, why = mask_rows(
                data, 0, len(data), self.terminator_limit, self.binary, fast.slots,
                fast.widths, fast.kinds, fast.args, tally, out.shift, out.buffer,
            )  # fmt: skip
            if rows:
                if self.digest is not None:
                    self.digest.update(memoryview(out.buffer)[mark:])
                self.tracker.rows_relayed(rows, next_seq)
                for k, n in enumerate(tally):
                    if n:
                        rule = fast.rules[k]
                        self.masked_values[rule] = self.masked_values.get(rule, 0) + n
                        tally[k] = 0
            rest = data[pos:] if pos else data
            if len(out.buffer) >= _FLUSH_BYTES:
                await out.flush()
            if why != MORE or (
                len(rest) >= 4 and rest[0] | (rest[1] << 8) | (rest[2] << 16) > _CHUNK_ROW_MAX
            ):
                upstream.unread(rest)
                return
            await out.flush()  # about to wait
            data = rest + await upstream.receive_some()

    async def _fail(self, packet: Packet, plan: MaskingPlan, exc: MaskingError) -> None:
        message = (
            f"hoopy could not mask a value of this result ({exc}), so the result was cut "
            "here; no unmasked value was sent"
        )
        log.warning("session %s: %s", self.session.id, message)
        kind = errors.MASKING_FAILED
        self.out.payload(packet, build_err(kind.code, kind.sqlstate, message))
        await self.out.flush()
        self._feed(packet, row=True)
        # Drain the server's response: the session stays in step with its target.
        while not self.tracker.done:
            self._feed(await self._read())
        self.tracker.summary.error = ErrPacket(kind.code, kind.sqlstate, message)
