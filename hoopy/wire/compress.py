"""The compressed protocol (``CLIENT_COMPRESS``, ``CLIENT_ZSTD_COMPRESSION_ALGORITHM``),
without I/O.

MySQL protocol docs, "Compression": compression is its own layer under the packets, enabled
when the client sets ``CLIENT_COMPRESS`` (zlib) or ``CLIENT_ZSTD_COMPRESSION_ALGORITHM``
(zstd, MySQL 8.0.18+; the handshake response then carries a one-byte level after the connect
attributes) in its handshake response; if both are set, zlib is used. The server's OK that
ends the connection phase is still plain; every byte after it, both ways, travels in
compressed frames ("Compressed Packet"):

    int<3>  length of the frame's payload (as sent, after compression)
    int<1>  compressed sequence id
    int<3>  length of the payload before compression; 0: the payload is stored uncompressed
    ...     payload

A frame's uncompressed bytes are a piece of the ordinary packet stream: several MySQL packets,
or a part of one; packet boundaries and frame boundaries are independent. The compressed
sequence id is counted apart from the packets' own, and like theirs restarts at 0 with every
command: the client's command frames count from 0 and the server's response frames continue
from the client's last one. (Readers differ in how strictly they check it: libmariadb and
mysql-connector take whatever arrives; hoopy does the same and always answers with the id
after the last it received.)

Senders store payloads under ``MIN_COMPRESS_LENGTH`` (50 bytes) uncompressed, and any payload
that compression does not shrink (MySQL's ``my_compress``). zlib frames are zlib-format
streams (``compress()``/``uncompress()``); zstd frames are independent zstd frames, one per
compressed packet (MySQL's ``compression_zstd.cc``).

Hostile input: a frame is inflated only when the packet reader needs more bytes, and never to
more than the length it declares (at most 16 MiB), so a small frame cannot blow up into
gigabytes and a stream of frames cannot run ahead of the packet limit (``max_payload``, the
same as without compression). A frame that does not inflate to exactly its declared length is
a ``CompressionError``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import Enum

import zstandard

from hoopy.wire.handshake import CLIENT_COMPRESS, CLIENT_ZSTD_COMPRESSION_ALGORITHM
from hoopy.wire.packets import HEADER_SIZE, MAX_PACKET_PAYLOAD, Packet, PacketBuffer, ProtocolError

COMPRESSED_HEADER_SIZE = 7
# "Compression": payloads shorter than this are sent uncompressed (MySQL's MIN_COMPRESS_LENGTH,
# also what mysql-connector and Node mysql2 use).
MIN_COMPRESS_LENGTH = 50
# The most bytes one outgoing frame carries before compression. Its 3-byte length fields allow
# 0xFFFFFF, but some readers (Node mysql2's packet parser) take a frame of exactly 0xFFFFFF
# bytes as continued in the next one, as they would a plain packet: stay one below.
MAX_FRAME_INPUT = MAX_PACKET_PAYLOAD - 1
# The compression level hoopy sends with. The level is the sender's choice (the format is the
# same at every level): MySQL's server uses zlib's default 6 and the client's requested zstd
# level, but hoopy's CPU is shared by every session, so it uses the fast end. Measured on
# text result rows (5 MB, 256 KiB relay chunks): zlib 6 compresses 2.6:1 at 16 MB/s, zlib 1
# 2.4:1 at 41 MB/s; zstd 3 2.9:1 at 39 MB/s, zstd 19 3.1:1 at 1 MB/s (a loaded 2-core machine).
ZLIB_LEVEL = 1
# zstd: the level a client sends (MySQL's default 3 when it sends 0), at most 3.
ZSTD_DEFAULT_LEVEL = 3
ZSTD_MAX_LEVEL = 3

COMPRESSION_CAPABILITIES = CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION_ALGORITHM


class CompressionError(ProtocolError):
    """A compressed frame that cannot be read (bad stream, or not its declared length)."""


class Algorithm(Enum):
    ZLIB = "zlib"
    ZSTD = "zstd"


@dataclass(frozen=True, slots=True)
class Compression:
    """What one leg compresses with: the algorithm and, for zstd, the client's level."""

    algorithm: Algorithm
    level: int = ZLIB_LEVEL


def negotiate(client_capabilities: int, zstd_level: int | None) -> Compression | None:
    """The compression a client asked for in its handshake response, or None.

    "Compression": with both bits set, zlib is used. The client's own bits decide, not only
    the ones the server offered: mysql-connector (pure Python) switches to compression on its
    own ``compress=True`` whatever the server's greeting says, so following the client is the
    only way not to misread its next bytes.
    """
    if client_capabilities & CLIENT_COMPRESS:
        return Compression(Algorithm.ZLIB, ZLIB_LEVEL)
    if client_capabilities & CLIENT_ZSTD_COMPRESSION_ALGORITHM:
        level = zstd_level or ZSTD_DEFAULT_LEVEL
        return Compression(Algorithm.ZSTD, min(max(level, 1), ZSTD_MAX_LEVEL))
    return None


class _Codec:
    """Compresses one frame's bytes and inflates one frame to exactly its declared size."""

    def __init__(self, compression: Compression) -> None:
        self.algorithm = compression.algorithm
        self.level = compression.level
        if self.algorithm is Algorithm.ZSTD:
            self._zc = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            self._zd = zstandard.ZstdDecompressor()

    def compress(self, data: bytes | memoryview) -> bytes:
        if self.algorithm is Algorithm.ZLIB:
            return zlib.compress(data, self.level)
        return self._zc.compress(data)

    def decompress(self, data: bytes, size: int) -> bytes:
        if self.algorithm is Algorithm.ZLIB:
            inflater = zlib.decompressobj()
            try:
                # One byte more than declared is enough to tell "more" from "exactly".
                out = inflater.decompress(data, size + 1)
            except zlib.error as exc:
                raise CompressionError(
                    f"compressed frame is not a valid zlib stream: {exc}"
                ) from None
            if len(out) > size:
                raise CompressionError(
                    f"compressed frame inflates to more than its declared {size} bytes"
                )
            if len(out) < size:
                raise CompressionError(
                    f"compressed frame inflates to {len(out)} bytes, not its declared {size}"
                )
            if not inflater.eof:
                raise CompressionError("compressed frame's zlib stream is truncated")
            if inflater.unused_data:
                raise CompressionError("compressed frame has bytes after its zlib stream")
            return out
        try:
            # The frame header's content size is checked first: decompress() would allocate
            # whatever it claims. Without one, the output buffer is the declared size and a
            # frame that needs more is an error.
            declared = zstandard.get_frame_parameters(data).content_size
            if declared not in (size, zstandard.CONTENTSIZE_UNKNOWN):
                raise CompressionError(
                    f"compressed frame's zstd header says {declared} bytes, the frame {size}"
                )
            out = self._zd.decompress(data, max_output_size=size, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise CompressionError(f"compressed frame is not a valid zstd frame: {exc}") from None
        if len(out) != size:
            raise CompressionError(
                f"compressed frame inflates to {len(out)} bytes, not its declared {size}"
            )
        return out


class CompressedProtocol:
    """One leg's compressed framing, h11-style: frames in, packets out; bytes in, frames out.

    ``feed`` raw bytes from the peer and take logical packets with ``next_packet`` (or the
    inflated bytes themselves with ``take_inflated``); ``frame`` turns outgoing packet bytes
    into compressed frames. Both directions share the compressed sequence id.
    """

    def __init__(self, compression: Compression, max_payload: int) -> None:
        self.compression = compression
        self._codec = _Codec(compression)
        self._raw = bytearray()
        self._inner = PacketBuffer(max_payload)
        self._pending = bytearray()
        self.next_seq = 0  # the compressed sequence id of the next frame hoopy sends

    def feed(self, data: bytes) -> None:
        self._raw += data

    @property
    def buffered(self) -> int:
        """Inflated bytes not taken yet (raw frames still compressed are not counted)."""
        return self._inner.buffered

    def unread(self, data: bytes) -> None:
        """Put inflated bytes back in front of whatever comes next."""
        if data:
            rest = self._inner.take_all()
            self._inner.feed(data)
            self._inner.feed(rest)

    def _inflate_one(self) -> bool:
        """Inflate the next complete frame into the packet buffer; False if there is none."""
        raw = self._raw
        if len(raw) < COMPRESSED_HEADER_SIZE:
            return False
        length = raw[0] | (raw[1] << 8) | (raw[2] << 16)
        end = COMPRESSED_HEADER_SIZE + length
        if len(raw) < end:
            return False
        seq = raw[3]
        size = raw[4] | (raw[5] << 8) | (raw[6] << 16)
        body = bytes(raw[COMPRESSED_HEADER_SIZE:end])
        del raw[:end]
        if size == 0:
            data = body  # stored uncompressed
        elif not body:
            raise CompressionError(f"compressed frame declares {size} bytes but carries none")
        else:
            data = self._codec.decompress(body, size)
        self.next_seq = (seq + 1) & 0xFF
        self._inner.feed(data)
        return True

    def next_packet(self) -> Packet | None:
        """The next complete logical packet, or None if more bytes are needed."""
        while True:
            packet = self._inner.next_packet()
            if packet is not None:
                return packet
            if not self._inflate_one():
                return None

    def take_inflated(self) -> bytes:
        """Inflated bytes for relaying: what is buffered, else the next frame's (b"": none)."""
        while not self._inner.buffered:
            if not self._inflate_one():
                return b""
        return self._inner.take_all()

    @property
    def pending(self) -> int:
        """Outgoing bytes held back: the start of a packet whose end has not been framed yet."""
        return len(self._pending)

    def frame(self, data: bytes) -> bytes:
        """Compressed frames for ``data``, packet bytes (whole packets, or a relay chunk that
        cuts one).

        Frames end at packet boundaries: the start of a packet whose end is not in ``data``
        is held back until a later call completes it. A packet too large for one frame is
        split in two, its header in the first. That is how MySQL's and MariaDB's servers
        frame (``net_write_buff``: a buffer flush, then the rest of a large packet at once),
        and mysql-connector's reader depends on it: it reads at most one more frame to
        complete a packet, and cannot read a packet header cut by a frame.
        """
        pending = self._pending
        pending += data
        frames: list[bytes] = []
        start = pos = 0  # the first byte not framed yet; the next packet header
        with memoryview(pending) as view:
            size = len(view)
            while size - pos >= HEADER_SIZE:
                end = pos + HEADER_SIZE + (view[pos] | (view[pos + 1] << 8) | (view[pos + 2] << 16))
                if end > size:
                    break
                if end - start > MAX_FRAME_INPUT:
                    if pos > start:  # the packets before this one make a frame
                        frames.append(self._frame_one(view[start:pos]))
                        start = pos
                    if end - start > MAX_FRAME_INPUT:  # this packet alone: two frames
                        middle = start + (end - start) // 2
                        frames.append(self._frame_one(view[start:middle]))
                        frames.append(self._frame_one(view[middle:end]))
                        start = end
                pos = end
            if pos > start:
                frames.append(self._frame_one(view[start:pos]))
        del pending[:pos]
        return b"".join(frames)

    def _frame_one(self, chunk: memoryview) -> bytes:
        n = len(chunk)
        size = 0
        packed = self._codec.compress(chunk) if n >= MIN_COMPRESS_LENGTH else b""
        if packed and len(packed) < n:
            body, size = packed, n
        else:  # stored: too short, or compression did not shrink it (MySQL's my_compress)
            body = bytes(chunk)
        length = len(body)
        seq = self.next_seq
        self.next_seq = (seq + 1) & 0xFF
        head = bytes(
            (
                length & 0xFF,
                (length >> 8) & 0xFF,
                length >> 16,
                seq,
                size & 0xFF,
                (size >> 8) & 0xFF,
                size >> 16,
            )
        )
        return head + body
