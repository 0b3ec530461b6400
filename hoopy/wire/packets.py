"""MySQL packet framing and the basic data types, without I/O.

MySQL protocol docs, "MySQL Packets": every packet is a 3-byte little-endian payload length,
a 1-byte sequence id, then the payload. A payload of 2**24-1 bytes or more is split into
packets of exactly 0xFFFFFF bytes followed by a shorter one (possibly empty): a packet of
length 0xFFFFFF always has a continuation ("Sending More Than 16Mb").

"Basic Data Types": integers are little-endian; a length-encoded integer is one byte below
0xFB, or 0xFC + 2 bytes, 0xFD + 3 bytes, 0xFE + 8 bytes. 0xFB is NULL in a text row and 0xFF
is never a valid first byte of a length-encoded integer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, cast

# "Sending More Than 16Mb": the largest payload one packet carries.
MAX_PACKET_PAYLOAD = 0xFFFFFF
HEADER_SIZE = 4


class ProtocolError(Exception):
    """The peer sent bytes that are not valid MySQL protocol at this point.

    The connection that raised it cannot be trusted any more and is closed; other sessions
    are not affected.
    """


def header(length: int, seq: int) -> bytes:
    return bytes((length & 0xFF, (length >> 8) & 0xFF, length >> 16, seq & 0xFF))


def frame(payload: bytes, seq: int) -> tuple[bytes, int]:
    """Frame a logical payload into one or more packets.

    Returns the bytes to send and the sequence id of the next packet after them.
    """
    if len(payload) < MAX_PACKET_PAYLOAD:
        return header(len(payload), seq) + payload, (seq + 1) & 0xFF
    parts: list[bytes] = []
    view = memoryview(payload)
    offset = 0
    while True:
        chunk = view[offset : offset + MAX_PACKET_PAYLOAD]
        parts.append(header(len(chunk), seq))
        parts.append(bytes(chunk))
        seq = (seq + 1) & 0xFF
        offset += len(chunk)
        # A payload whose size is an exact multiple of 0xFFFFFF ends with an empty packet.
        if len(chunk) < MAX_PACKET_PAYLOAD:
            break
    return b"".join(parts), seq


class Packet(NamedTuple):
    """A logical packet: a payload reassembled from one or more wire packets.

    ``seq`` is the sequence id of the first wire packet, ``next_seq`` the one expected after
    the last. ``raw`` holds the exact wire bytes so a relay can forward them unchanged.
    (A NamedTuple: one is made per command, and a frozen dataclass costs 1.7 us to build.)
    """

    seq: int
    next_seq: int
    payload: bytes
    raw: bytes


# From this size on a logical packet is assembled as its bytes arrive, each read's worth at
# a time, and handed out as the bytearrays it was built in: copying a 64 MiB statement out
# of the buffer in one go would hold the event loop (and every other session) for tens of
# milliseconds (docs/performance.md, "Huge statements and bystanders").
LARGE_PACKET = 1 << 20


def copy_from(data: bytes, start: int) -> bytes:
    """``data[start:]``, copied a MiB at a time when large: one copy of a huge statement in a
    single call holds the interpreter lock throughout (worker threads run these).

    Like a large packet's payload, a large result is a bytearray: it has every method of
    bytes the SQL code uses, and that code converts the slices it hashes (keywords).
    """
    if len(data) - start <= LARGE_PACKET:
        return data[start:]
    out = bytearray()
    with memoryview(data) as view:
        for pos in range(start, len(data), LARGE_PACKET):
            out += view[pos : pos + LARGE_PACKET]
    return cast(bytes, out)


class _Assembly:
    """A large logical packet on its way in."""

    __slots__ = ("done", "header", "last", "left", "next_seq", "payload", "raw", "seq")

    def __init__(self) -> None:
        self.raw = bytearray()
        self.payload = bytearray()
        self.seq = -1
        self.next_seq = -1
        self.left = 0  # payload bytes of the current wire packet still to come
        self.last = False  # the current wire packet is the logical packet's last
        self.header = bytearray()  # a wire packet header arriving in pieces
        self.done = False


class PacketBuffer:
    """Turns a byte stream into logical packets (h11-style: bytes in, packets out).

    ``max_payload`` bounds how much one logical packet may buffer, so a peer cannot make the
    gateway allocate without limit; exceeding it raises ``ProtocolError``. A packet of
    ``LARGE_PACKET`` bytes or more comes out with ``payload`` and ``raw`` as bytearrays.
    """

    def __init__(self, max_payload: int) -> None:
        self._buf = bytearray()
        self._max_payload = max_payload
        self._big: _Assembly | None = None

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @max_payload.setter
    def max_payload(self, value: int) -> None:
        # Raised once a client has logged in (small limits before login: DESIGN.md rule 10).
        self._max_payload = value

    def feed(self, data: bytes) -> None:
        if self._big is None:
            self._buf += data
        else:
            self._assemble(data)

    @property
    def buffered(self) -> int:
        big = self._big
        return len(self._buf) + (0 if big is None else len(big.raw) + len(big.header))

    def take_all(self) -> bytes:
        big, self._big = self._big, None
        data = bytes(self._buf) if big is None else bytes(big.raw + big.header + self._buf)
        self._buf.clear()
        return data

    def _too_large(self) -> ProtocolError:
        return ProtocolError(
            f"packet of more than {self._max_payload} bytes exceeds the configured limit"
        )

    def _assemble(self, data: bytes | bytearray) -> None:
        """Move ``data`` into the large packet arriving; what follows it stays buffered."""
        big = self._big
        assert big is not None
        with memoryview(data) as view:
            pos = 0
            while pos < len(view) and not big.done:
                if big.left:
                    chunk = view[pos : pos + big.left]
                    big.raw += chunk
                    big.payload += chunk
                    big.left -= len(chunk)
                    pos += len(chunk)
                else:
                    piece = view[pos : pos + HEADER_SIZE - len(big.header)]
                    big.header += piece
                    pos += len(piece)
                    if len(big.header) < HEADER_SIZE:
                        break
                    head = big.header
                    length = head[0] | (head[1] << 8) | (head[2] << 16)
                    if len(big.payload) + length > self._max_payload:
                        raise self._too_large()
                    if big.seq < 0:
                        big.seq = head[3]
                    big.next_seq = (head[3] + 1) & 0xFF
                    big.raw += head
                    big.header = bytearray()
                    big.left = length
                    big.last = length < MAX_PACKET_PAYLOAD
                if not big.left and big.last:
                    big.done = True
            if pos < len(view):
                self._buf += view[pos:]

    def next_packet(self) -> Packet | None:
        """Return the next complete logical packet, or None if more bytes are needed."""
        big = self._big
        if big is not None:
            if not big.done:
                return None
            self._big = None
            # bytes-like (see copy_from): never copied whole, so other sessions run meanwhile
            return Packet(big.seq, big.next_seq, cast(bytes, big.payload), cast(bytes, big.raw))
        buf = self._buf
        if len(buf) >= HEADER_SIZE:
            length = buf[0] | (buf[1] << 8) | (buf[2] << 16)
            if length > self._max_payload:
                raise self._too_large()
            if length >= LARGE_PACKET:
                self._big, self._buf = _Assembly(), bytearray()
                self._assemble(buf)
                return self.next_packet()
            # Fast path: one wire packet, complete (every command under LARGE_PACKET).
            end = HEADER_SIZE + length
            if len(buf) >= end:
                raw = bytes(buf[:end])
                del buf[:end]
                seq = raw[3]
                return Packet(seq, (seq + 1) & 0xFF, raw[HEADER_SIZE:], raw)
        return None


def iter_packets(data: bytes, max_payload: int = 1 << 30) -> Iterator[Packet]:
    """All complete logical packets in ``data`` (for tests and offline tools)."""
    buf = PacketBuffer(max_payload)
    buf.feed(data)
    while (packet := buf.next_packet()) is not None:
        yield packet


def with_seq(raw: bytes, seq: int) -> bytes:
    """Rewrite the sequence ids of already framed packets, starting at ``seq``."""
    out = bytearray(raw)
    pos = 0
    while pos + HEADER_SIZE <= len(out):
        length = out[pos] | (out[pos + 1] << 8) | (out[pos + 2] << 16)
        out[pos + 3] = seq & 0xFF
        seq += 1
        pos += HEADER_SIZE + length
    return bytes(out)


# --- basic data types ("Basic Data Types" in the protocol docs) --------------------------


def lenenc_int(value: int) -> bytes:
    if value < 0:
        raise ValueError("length-encoded integers are unsigned")
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    if value < 1 << 64:
        return b"\xfe" + value.to_bytes(8, "little")
    raise ValueError("length-encoded integer out of range")


def lenenc_str(value: bytes) -> bytes:
    return lenenc_int(len(value)) + value


class Reader:
    """Reads basic data types from a payload; any overrun is a ``ProtocolError``."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError("packet is shorter than its fields")

    def uint(self, size: int) -> int:
        self._need(size)
        value = int.from_bytes(self.data[self.pos : self.pos + size], "little")
        self.pos += size
        return value

    # Values come out as bytes even from a large packet's bytearray payload (bytes(b) of a
    # bytes object is that object: no copy).

    def fixed(self, size: int) -> bytes:
        self._need(size)
        value = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return value

    def rest(self) -> bytes:
        value = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return value

    def null_str(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolError("string is not NUL-terminated")
        value = bytes(self.data[self.pos : end])
        self.pos = end + 1
        return value

    def lenenc_int(self) -> int:
        self._need(1)
        first = self.data[self.pos]
        self.pos += 1
        if first < 0xFB:
            return first
        if first == 0xFC:
            return self.uint(2)
        if first == 0xFD:
            return self.uint(3)
        if first == 0xFE:
            return self.uint(8)
        raise ProtocolError(f"invalid length-encoded integer prefix 0x{first:02x}")

    def lenenc_str(self) -> bytes:
        return self.fixed(self.lenenc_int())
