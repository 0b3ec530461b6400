"""Masking for ``hoopy replay --execute``: a replayed response masked as the gateway masks
it, so what is compared with the recording is what the client saw (the recorded digest is
of the masked rows, and the recorded outcome says how many values each rule masked).

Sans-IO: ``remask`` takes the bytes of one response, as the target sent them to the replay
connection, and plans and rewrites its result sets with the session's masking policy
(policy/masking.py), the same plans and row rewrites the gateway's masking relay
(gateway/masked_relay.py) uses. It returns the digest of the rows as the client would have
received them (sequence ids renumbered after a row that changed its packet count, as the
relay does), the masked counts, and the error the client would have got when a value could
not be masked (the digest then covers the rows sent before it).

Not followed here: the hidden messages of errors and warnings of statements that read masked
columns (replay compares error codes, which masking keeps).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hoopy.policy.lineage import StatementLineage
from hoopy.policy.masking import MaskingError, MaskingPlan, MaskingPolicy, result_lineage
from hoopy.wire import errors
from hoopy.wire.handshake import CLIENT_DEPRECATE_EOF
from hoopy.wire.messages import (
    EOF_HEADER,
    EOF_MAX_PAYLOAD,
    ERR_HEADER,
    LOCAL_INFILE_HEADER,
    OK_HEADER,
    SERVER_MORE_RESULTS_EXISTS,
    SERVER_STATUS_CURSOR_EXISTS,
    parse_eof,
    parse_ok,
    terminator_status,
)
from hoopy.wire.packets import (
    MAX_PACKET_PAYLOAD,
    Packet,
    PacketBuffer,
    ProtocolError,
    Reader,
    frame,
)

_MAX_PAYLOAD = 1 << 30


@dataclass
class Remasked:
    digest: str | None  # None: the response had no result set
    masked: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: int | None = None  # the MASKING_FAILED code, when a value could not be masked
    cursor_plan: MaskingPlan | None = None  # a cursor's plan, for the COM_STMT_FETCHes


def _packets(raw: bytes) -> list[Packet]:
    buffer = PacketBuffer(_MAX_PAYLOAD)
    buffer.feed(raw)
    out = []
    while (p := buffer.next_packet()) is not None:
        out.append(p)
    if buffer.buffered:
        raise ProtocolError("the response ends inside a packet")
    return out


class _Walk:
    def __init__(
        self, packets: list[Packet], capabilities: int, binary: bool, out: Remasked
    ) -> None:
        self.packets = packets
        self.i = 0
        self.capabilities = capabilities
        self.deprecate_eof = bool(capabilities & CLIENT_DEPRECATE_EOF)
        self.limit = MAX_PACKET_PAYLOAD if self.deprecate_eof else EOF_MAX_PAYLOAD
        self.binary = binary
        self.digest = hashlib.sha256()
        self.shift = 0
        self.out = out

    def note(self, plan: MaskingPlan) -> None:
        for rule, names in plan.rules.items():
            entry = self.out.masked.setdefault(rule, {"columns": [], "values": 0})
            entry["columns"].extend(n for n in names if n not in entry["columns"])

    def send(self, packet: Packet, payload: bytes) -> None:
        data, next_seq = frame(payload, (packet.seq + self.shift) & 0xFF)
        self.shift = (next_seq - packet.next_seq) & 0xFF
        self.digest.update(data)

    def rows(self, plan: MaskingPlan | None) -> Packet | None:
        """Rows to the result set's terminator (returned); None when a value could not be
        masked (``out.error`` set)."""
        rewrite = None if plan is None else (plan.binary_row if self.binary else plan.text_row)
        while True:
            packet = self.packets[self.i]
            self.i += 1
            payload = packet.payload
            head = payload[0] if payload else -1
            if head == ERR_HEADER or (head == EOF_HEADER and len(payload) < self.limit):
                return packet
            if rewrite is None:
                if self.shift:
                    self.send(packet, bytes(payload))
                else:
                    self.digest.update(packet.raw)
                continue
            try:
                new, counts = rewrite(bytes(payload))
            except MaskingError:
                self.out.error = errors.MASKING_FAILED.code
                return None
            for rule, n in counts.items():
                entry = self.out.masked.setdefault(rule, {"columns": [], "values": 0})
                entry["values"] += n
            self.send(packet, new)


def remask(
    raw: bytes,
    command: int,
    capabilities: int,
    policy: MaskingPolicy,
    lineages: Sequence[StatementLineage],
    database: str | None,
    *,
    binary: bool,
    cursor_plan: MaskingPlan | None = None,
) -> Remasked:
    """``raw``, one whole response to ``command``, as the masking relay would have sent it
    (see the module docstring). ``cursor_plan``: for a COM_STMT_FETCH, the plan of the
    cursor's result set. Raises ProtocolError for a response that is not well formed."""
    out = Remasked(None)
    walk = _Walk(_packets(raw), capabilities, binary, out)
    packets = walk.packets
    if cursor_plan is not None:  # COM_STMT_FETCH: rows, then the terminator
        walk.note(cursor_plan)
        walk.rows(cursor_plan)
        out.digest = walk.digest.hexdigest()
        return out
    result = 0
    columns_seen = False
    try:
        while walk.i < len(packets):
            packet = packets[walk.i]
            walk.i += 1
            head = packet.payload[0] if packet.payload else -1
            if head in (OK_HEADER, ERR_HEADER, LOCAL_INFILE_HEADER):
                result += 1
                if head == OK_HEADER and (
                    parse_ok(packet.payload, capabilities).status & SERVER_MORE_RESULTS_EXISTS
                ):
                    continue
                break
            count = Reader(packet.payload).lenenc_int()
            definitions = packets[walk.i : walk.i + count]
            walk.i += count
            columns_seen = True
            plan = policy.plan(
                [p.payload for p in definitions],
                extended_metadata=False,
                lineage=result_lineage(lineages, result),
                database=database,
            )
            cursor = walk.deprecate_eof and walk.i >= len(packets)
            if not walk.deprecate_eof:
                eof = packets[walk.i]
                walk.i += 1
                cursor = bool(parse_eof(eof.payload).status & SERVER_STATUS_CURSOR_EXISTS)
            if plan is not None:
                walk.note(plan)
            if cursor:
                out.cursor_plan = plan
                break
            end = walk.rows(plan)
            if end is None:
                break
            result += 1
            if end.payload[0] == ERR_HEADER:
                break
            status = terminator_status(end.payload, capabilities, walk.deprecate_eof)
            if not status & SERVER_MORE_RESULTS_EXISTS:
                break
    except IndexError:
        raise ProtocolError("the response ends inside a result set") from None
    if columns_seen:
        out.digest = walk.digest.hexdigest()
    return out
