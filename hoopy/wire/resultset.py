"""Reading a text-protocol result set's values, for hoopy's own queries (``EXPLAIN`` for the
guardrails' row estimates): never on the relay path, where rows pass byte for byte.

Sans-IO. "Text Resultset" in the protocol docs: a column count, that many column
definitions, an EOF (without ``CLIENT_DEPRECATE_EOF``, which hoopy's own connections do not
ask for), rows of length-encoded strings (0xFB for NULL), and an EOF or ERR at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from hoopy.wire.packets import ProtocolError, Reader, iter_packets

_EOF = 0xFE
_ERR = 0xFF
_NULL = 0xFB


@dataclass(frozen=True, slots=True)
class TextResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[bytes | None, ...], ...]

    def column(self, name: str) -> list[bytes | None]:
        """The values of the column named ``name`` (case-insensitive; [] if absent)."""
        lowered = [c.lower() for c in self.columns]
        if name.lower() not in lowered:
            return []
        i = lowered.index(name.lower())
        return [row[i] if i < len(row) else None for row in self.rows]


def decode_text_result(data: bytes) -> TextResult:
    """The columns and rows of one result set (raises ``ProtocolError`` for anything else,
    an ERR included)."""
    packets = [p.payload for p in iter_packets(data)]
    if not packets:
        raise ProtocolError("no result set")
    if packets[0][:1] == bytes((_ERR,)):
        raise ProtocolError("the statement failed")
    count = Reader(packets[0], 0).lenenc_int()
    if not 0 < count <= 4096 or len(packets) < count + 2:
        raise ProtocolError("not a result set")
    names = []
    for payload in packets[1 : 1 + count]:
        r = Reader(payload, 0)
        for _ in range(4):  # catalog, schema, table, org_table
            r.lenenc_str()
        names.append(bytes(r.lenenc_str()).decode("utf-8", "replace"))
    if packets[1 + count][:1] != bytes((_EOF,)):
        raise ProtocolError("no EOF after the column definitions")
    rows: list[tuple[bytes | None, ...]] = []
    for payload in packets[2 + count :]:
        if payload[:1] == bytes((_EOF,)) and len(payload) < 9:
            return TextResult(tuple(names), tuple(rows))
        if payload[:1] == bytes((_ERR,)):
            raise ProtocolError("the statement failed while sending rows")
        r = Reader(payload, 0)
        values: list[bytes | None] = []
        for _ in range(count):
            if r.pos < len(payload) and payload[r.pos] == _NULL:
                r.pos += 1
                values.append(None)
            else:
                values.append(bytes(r.lenenc_str()))
        rows.append(tuple(values))
    raise ProtocolError("the result set has no end")
