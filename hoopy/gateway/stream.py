"""A packet-level view of a trio byte stream (either leg of a session)."""

from __future__ import annotations

import contextlib

import trio

from hoopy.wire.packets import HEADER_SIZE, Packet, PacketBuffer, ProtocolError, frame

# Bytes asked of the kernel per read. 256 KiB lets one read carry many result rows while
# staying well inside the socket buffers Linux auto-tunes to.
RECEIVE_SIZE = 256 * 1024


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke) while hoopy expected more."""


class PacketStream:
    """Reads whole logical packets, sends framed ones, and exposes raw reads for relaying.

    The underlying stream can be swapped for a TLS one (``start_tls``) only while nothing is
    buffered, so no byte read before the upgrade is lost (the mysql-mimic asyncio defect in
    DESIGN.md).
    """

    def __init__(self, stream: trio.abc.Stream, max_payload: int) -> None:
        self.stream = stream
        self._buf = PacketBuffer(max_payload)

    async def _receive(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(str(exc) or type(exc).__name__) from None
        if not data:
            raise ConnectionClosed("connection closed by peer")
        return bytes(data)

    async def read_packet(self) -> Packet:
        while True:
            packet = self._buf.next_packet()
            if packet is not None:
                return packet
            self._buf.feed(await self._receive())

    async def read_packet_exact(self) -> Packet:
        """Read one packet without reading a byte past it (before a possible TLS upgrade)."""
        if self._buf.buffered:
            raise ProtocolError("unexpected bytes before the handshake response")
        head = await self._read_exactly(HEADER_SIZE)
        length = head[0] | (head[1] << 8) | (head[2] << 16)
        if length >= 0xFFFFFF:
            raise ProtocolError("handshake packet too large")
        self._buf.feed(head + await self._read_exactly(length))
        packet = self._buf.next_packet()
        assert packet is not None
        return packet

    async def _read_exactly(self, n: int) -> bytes:
        parts = bytearray()
        while len(parts) < n:
            parts += await self._receive(n - len(parts))
        return bytes(parts)

    async def receive_some(self) -> bytes:
        """Raw bytes for relaying: whatever is buffered first, else one read."""
        if self._buf.buffered:
            return self._buf.take_all()
        return await self._receive()

    def unread(self, data: bytes) -> None:
        """Put back bytes that belong to the next response."""
        if data:
            self._buf.feed(data)

    @property
    def buffered(self) -> int:
        return self._buf.buffered

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(str(exc) or type(exc).__name__) from None

    async def send_payload(self, payload: bytes, seq: int) -> int:
        """Frame and send a payload; returns the next sequence id."""
        data, next_seq = frame(payload, seq)
        await self.send_raw(data)
        return next_seq

    async def start_tls(self, stream: trio.SSLStream[trio.abc.Stream]) -> None:
        if self._buf.buffered:
            raise ProtocolError("bytes arrived before the TLS handshake")
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            # trio's BrokenResourceError wraps the ssl error that says why.
            reason = exc.__cause__ or exc
            raise ConnectionClosed(f"TLS handshake failed: {reason}") from None
        self.stream = stream

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.stream.aclose()
