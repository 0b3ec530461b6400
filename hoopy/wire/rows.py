"""Column definitions and result rows, decoded and re-encoded: for masking only.

Sans-IO. The relay passes result sets byte for byte (DESIGN.md, fidelity rule 1); these codecs
serve the one place that must read values, a result set with masked columns, so they keep
every cell as its wire bytes and decode only the cells a masking plan rewrites.

From the protocol docs:
- "Column Definition" (Protocol::ColumnDefinition41): length-encoded catalog, schema, table,
  org_table, name, org_name; with MariaDB's MARIADB_CLIENT_EXTENDED_METADATA a length-encoded
  block of extended type info next ("Result Set Packets", MariaDB docs); then a length-encoded
  0x0c, character set (2 bytes), column length (4), type (1), flags (2), decimals (1) and two
  filler bytes. COM_FIELD_LIST appends the column's default; whatever follows the fixed fields
  is kept as ``tail``.
- "Text Resultset Row": one value per column, 0xFB for NULL, else a length-encoded string
  (the value as text in the column's character set).
- "Binary Protocol Resultset Row": 0x00, a NULL bitmap of (columns + 7 + 2) / 8 bytes whose
  first two bits are unused ("offset 2"), then the non-NULL values in the binary encoding of
  their column's type ("Binary Protocol Value"), the same encoding as COM_STMT_EXECUTE's
  parameters (wire/params.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from hoopy.wire.packets import ProtocolError, Reader, lenenc_int, lenenc_str
from hoopy.wire.params import (
    _DATE_TYPES,
    _FLOAT_FORMATS,
    _INT_WIDTHS,
    MYSQL_TYPE_NULL,
    MYSQL_TYPE_TIME,
    Param,
    _decode_value,
    _encode_value,
    type_name,
)

# Column definition flags ("Column Definition Flags", include/mysql_com.h).
NOT_NULL_FLAG: Final = 1
UNSIGNED_FLAG: Final = 32
BINARY_FLAG: Final = 128
# The character set number of binary strings (BLOB, BINARY, VARBINARY, and numbers).
BINARY_CHARSET: Final = 63

_FIXED_FIELDS_LENGTH: Final = 0x0C
_TEXT_NULL: Final = 0xFB
_BINARY_ROW_HEADER: Final = 0x00
# "Binary Protocol Resultset Row": the first two bits of the NULL bitmap are reserved.
_BITMAP_OFFSET: Final = 2


@dataclass(frozen=True, slots=True)
class ColumnDefinition:
    """One column of a result set, as the server described it (``org_*``: the physical
    table and column behind an alias; empty for an expression)."""

    catalog: bytes
    schema: bytes
    table: bytes
    org_table: bytes
    name: bytes
    org_name: bytes
    charset: int
    length: int
    type: int
    flags: int
    decimals: int
    extended: bytes | None = None  # MariaDB extended metadata, when the client asked for it
    tail: bytes = b"\x00\x00"  # filler (and COM_FIELD_LIST's default value)

    @property
    def unsigned(self) -> bool:
        return bool(self.flags & UNSIGNED_FLAG)

    @property
    def binary(self) -> bool:
        return self.charset == BINARY_CHARSET

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def decode_column_definition(payload: bytes, *, extended_metadata: bool) -> ColumnDefinition:
    """Parse a column definition packet (raises ProtocolError)."""
    r = Reader(payload)
    try:
        texts = [r.lenenc_str() for _ in range(6)]
        extended = r.lenenc_str() if extended_metadata else None
        fixed = r.lenenc_int()
        if fixed != _FIXED_FIELDS_LENGTH:
            raise ProtocolError(f"column definition with {fixed} bytes of fixed fields")
        charset, length, ctype, flags, decimals = (
            r.uint(2),
            r.uint(4),
            r.uint(1),
            r.uint(2),
            r.uint(1),
        )
    except ProtocolError as exc:
        raise ProtocolError(f"malformed column definition: {exc}") from None
    catalog, schema, table, org_table, name, org_name = texts
    return ColumnDefinition(
        catalog,
        schema,
        table,
        org_table,
        name,
        org_name,
        charset=charset,
        length=length,
        type=ctype,
        flags=flags,
        decimals=decimals,
        extended=extended,
        tail=r.rest(),
    )


def encode_column_definition(column: ColumnDefinition) -> bytes:
    out = bytearray()
    for text in (
        column.catalog,
        column.schema,
        column.table,
        column.org_table,
        column.name,
        column.org_name,
    ):
        out += lenenc_str(text)
    if column.extended is not None:
        out += lenenc_str(column.extended)
    out += lenenc_int(_FIXED_FIELDS_LENGTH)
    out += column.charset.to_bytes(2, "little")
    out += column.length.to_bytes(4, "little")
    out += bytes((column.type,))
    out += column.flags.to_bytes(2, "little")
    out += bytes((column.decimals,))
    out += column.tail
    return bytes(out)


def with_room_for(column: ColumnDefinition, *, length: int, nullable: bool) -> ColumnDefinition:
    """``column`` widened to hold a rewritten value: a length at least ``length`` and, when
    the value may now be NULL, without NOT_NULL_FLAG (clients size buffers and choose NULL
    handling from these)."""
    flags = column.flags & ~NOT_NULL_FLAG if nullable else column.flags
    new_length = min(max(column.length, length), 0xFFFFFFFF)
    if flags == column.flags and new_length == column.length:
        return column
    return replace(column, flags=flags, length=new_length)


# --- text rows --------------------------------------------------------------------------


def decode_text_row(payload: bytes, count: int) -> list[bytes | None]:
    """The ``count`` values of a text row (None for NULL), as the bytes the server sent."""
    r = Reader(payload)
    values: list[bytes | None] = []
    try:
        for _ in range(count):
            if r.pos < len(payload) and payload[r.pos] == _TEXT_NULL:
                r.pos += 1
                values.append(None)
            else:
                values.append(r.lenenc_str())
    except ProtocolError as exc:
        raise ProtocolError(f"malformed text row (column {len(values) + 1}): {exc}") from None
    if r.pos != len(payload):
        raise ProtocolError(f"text row has {len(payload) - r.pos} bytes past its {count} values")
    return values


def text_row_spans(payload: bytes, count: int) -> list[tuple[int, int, int]]:
    """Where each of the ``count`` values of a text row lies: (start, value start, end),
    value start -1 for NULL. The fast path of masking (only the masked cells are rewritten,
    the bytes between them are copied); raises ProtocolError like ``decode_text_row``."""
    spans: list[tuple[int, int, int]] = []
    pos = 0
    n = len(payload)
    for i in range(count):
        if pos >= n:
            raise ProtocolError(f"malformed text row (column {i + 1}): cut")
        b = payload[pos]
        if b < 0xFB:
            start = pos + 1
            end = start + b
        elif b == _TEXT_NULL:
            spans.append((pos, -1, pos + 1))
            pos += 1
            continue
        elif b == 0xFC:
            start = pos + 3
            end = start + int.from_bytes(payload[pos + 1 : start], "little")
        elif b == 0xFD:
            start = pos + 4
            end = start + int.from_bytes(payload[pos + 1 : start], "little")
        elif b == 0xFE:
            start = pos + 9
            end = start + int.from_bytes(payload[pos + 1 : start], "little")
        else:
            raise ProtocolError(f"malformed text row (column {i + 1}): 0xFF length")
        if start > n or end > n:
            raise ProtocolError(f"malformed text row (column {i + 1}): cut")
        spans.append((pos, start, end))
        pos = end
    if pos != n:
        raise ProtocolError(f"text row has {n - pos} bytes past its {count} values")
    return spans


def encode_text_row(values: Sequence[bytes | None]) -> bytes:
    out = bytearray()
    for value in values:
        if value is None:
            out.append(_TEXT_NULL)
        else:
            out += lenenc_str(value)
    return bytes(out)


# --- binary rows ------------------------------------------------------------------------


def _bitmap_size(count: int) -> int:
    return (count + 7 + _BITMAP_OFFSET) // 8


def _fixed_width(ctype: int) -> int | None:
    width = _INT_WIDTHS.get(ctype)
    if width is not None:
        return width
    fmt = _FLOAT_FORMATS.get(ctype)
    return fmt.size if fmt is not None else None


def binary_widths(types: Sequence[int]) -> list[int]:
    """Per column of a binary row: the fixed width of its values in bytes, 0 when each value
    is length-prefixed, -1 for a NULL-typed column (which never has a value)."""
    return [-1 if t == MYSQL_TYPE_NULL else (_fixed_width(t) or 0) for t in types]


def decode_binary_row(payload: bytes, types: Sequence[int]) -> list[bytes | None]:
    """The values of a binary row, one per column type in ``types`` (None for NULL), each as
    its wire bytes ("Binary Protocol Value", length prefix included)."""
    count = len(types)
    size = _bitmap_size(count)
    if len(payload) < 1 + size or payload[0] != _BINARY_ROW_HEADER:
        raise ProtocolError("malformed binary row: no 0x00 header and NULL bitmap")
    bitmap = payload[1 : 1 + size]
    pos = 1 + size
    end = len(payload)
    values: list[bytes | None] = []
    for i, ctype in enumerate(types):
        bit = i + _BITMAP_OFFSET
        if bitmap[bit >> 3] & (1 << (bit & 7)):
            values.append(None)
            continue
        if ctype == MYSQL_TYPE_NULL:
            raise ProtocolError(f"malformed binary row: NULL-typed column {i + 1} has a value")
        width = _fixed_width(ctype)
        if width is None:
            try:
                r = Reader(payload, pos)
                length = r.lenenc_int()
            except ProtocolError:
                raise ProtocolError(f"malformed binary row: column {i + 1} is cut") from None
            width = r.pos - pos + length
        if pos + width > end:
            raise ProtocolError(f"malformed binary row: column {i + 1} is cut")
        values.append(payload[pos : pos + width])
        pos += width
    if pos != end:
        raise ProtocolError(f"binary row has {end - pos} bytes past its {count} values")
    return values


def encode_binary_row(values: Sequence[bytes | None]) -> bytes:
    count = len(values)
    bitmap = bytearray(_bitmap_size(count))
    body = bytearray()
    for i, value in enumerate(values):
        if value is None:
            bit = i + _BITMAP_OFFSET
            bitmap[bit >> 3] |= 1 << (bit & 7)
        else:
            body += value
    return bytes((_BINARY_ROW_HEADER,)) + bytes(bitmap) + bytes(body)


def binary_value(ctype: int, unsigned: bool, raw: bytes) -> object:
    """A binary cell's value: an int, a float, text for dates and times (as wire/params.py
    writes them), str for valid UTF-8, else bytes."""
    r = Reader(raw)
    value = _decode_value(r, ctype, unsigned)
    if r.pos != len(raw):
        raise ProtocolError(f"{type_name(ctype)} value with {len(raw) - r.pos} bytes left over")
    return value


def binary_encoding(ctype: int, unsigned: bool, value: object) -> bytes:
    """The wire bytes of ``value`` as a binary cell of type ``ctype`` (raises ValueError
    when it does not fit the type)."""
    return _encode_value(Param(ctype, unsigned, value))


def is_temporal(ctype: int) -> bool:
    return ctype in _DATE_TYPES or ctype == MYSQL_TYPE_TIME


def is_numeric(ctype: int) -> bool:
    return _fixed_width(ctype) is not None
