"""Generic response packets: OK, ERR and EOF (parse and build).

MySQL protocol docs, "Generic Response Packets". hoopy parses these only where a response
ends or where it records an outcome; everything else is relayed as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from hoopy.wire.packets import ProtocolError, Reader, lenenc_int

# First payload byte of each generic packet.
OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB

# "Protocol::EOF_Packet": an EOF packet is shorter than 9 bytes; with CLIENT_DEPRECATE_EOF
# the end of a result set is an OK packet with the 0xFE header, told apart from a row that
# starts with 0xFE (an 8-byte length prefix) because such a row is at least 16 MiB long.
EOF_MAX_PAYLOAD = 9

# Capability and status bits used here (values from mysql_com.h).
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SESSION_TRACK = 1 << 23

SERVER_MORE_RESULTS_EXISTS = 0x0008
SERVER_STATUS_CURSOR_EXISTS = 0x0040
SERVER_SESSION_STATE_CHANGED = 0x4000


@dataclass(frozen=True, slots=True)
class OkPacket:
    affected_rows: int
    last_insert_id: int
    status: int
    warnings: int
    info: bytes


@dataclass(frozen=True, slots=True)
class ErrPacket:
    code: int
    sqlstate: str
    message: str


@dataclass(frozen=True, slots=True)
class EofPacket:
    warnings: int
    status: int


def parse_ok(payload: bytes, capabilities: int) -> OkPacket:
    """Parse an OK packet (header 0x00, or 0xFE when it ends a result set)."""
    if (
        len(payload) == 7
        and payload[1] < 0xFB
        and payload[2] < 0xFB
        and capabilities & CLIENT_PROTOCOL_41
    ):
        # The common shape: small counts, no info string (one per DML statement).
        return OkPacket(
            payload[1],
            payload[2],
            payload[3] | (payload[4] << 8),
            payload[5] | (payload[6] << 8),
            b"",
        )
    r = Reader(payload, 1)
    affected = r.lenenc_int()
    insert_id = r.lenenc_int()
    status = warnings = 0
    if capabilities & CLIENT_PROTOCOL_41:
        status = r.uint(2)
        warnings = r.uint(2)
    elif capabilities & CLIENT_TRANSACTIONS:
        status = r.uint(2)
    info = b""
    if r.remaining():
        info = r.lenenc_str() if capabilities & CLIENT_SESSION_TRACK else r.rest()
    return OkPacket(affected, insert_id, status, warnings, info)


def parse_err(payload: bytes, capabilities: int = CLIENT_PROTOCOL_41) -> ErrPacket:
    r = Reader(payload, 1)
    code = r.uint(2)
    sqlstate = "HY000"
    # The '#' marker is present with CLIENT_PROTOCOL_41, but an ERR sent before the client
    # announced its capabilities (the very first packet of a connection) has none.
    if r.remaining() >= 6 and payload[r.pos] == 0x23:
        r.pos += 1
        sqlstate = r.fixed(5).decode("ascii", "replace")
    message = r.rest().decode("utf-8", "replace")
    return ErrPacket(code, sqlstate, message)


def parse_eof(payload: bytes) -> EofPacket:
    if len(payload) < 5:
        return EofPacket(0, 0)
    return EofPacket(payload[1] | (payload[2] << 8), payload[3] | (payload[4] << 8))


def terminator_status(payload: bytes, capabilities: int, deprecate_eof: bool) -> int:
    """Status flags of the packet that ends a result set (EOF, or OK with 0xFE header)."""
    if deprecate_eof:
        return parse_ok(payload, capabilities).status
    return parse_eof(payload).status


def build_ok(
    *,
    affected_rows: int = 0,
    last_insert_id: int = 0,
    status: int = 0,
    warnings: int = 0,
    info: bytes = b"",
    header_byte: int = OK_HEADER,
) -> bytes:
    return (
        bytes((header_byte,))
        + lenenc_int(affected_rows)
        + lenenc_int(last_insert_id)
        + status.to_bytes(2, "little")
        + warnings.to_bytes(2, "little")
        + info
    )


def build_err(code: int, sqlstate: str, message: str, *, protocol_41: bool = True) -> bytes:
    """An ERR packet. Valid as the answer to every command (DESIGN.md, fidelity rule 3)."""
    if len(sqlstate) != 5:
        raise ValueError("SQLSTATE is five characters")
    body = code.to_bytes(2, "little")
    if protocol_41:
        body += b"#" + sqlstate.encode("ascii")
    return b"\xff" + body + message.encode("utf-8")


def is_err(payload: bytes) -> bool:
    return bool(payload) and payload[0] == ERR_HEADER


def check_not_empty(payload: bytes) -> None:
    if not payload:
        raise ProtocolError("empty packet where a response was expected")
