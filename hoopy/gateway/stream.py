"""A packet-level view of a trio byte stream (either leg of a session)."""

from __future__ import annotations

import contextlib
import os

import trio

from hoopy.wire.packets import HEADER_SIZE, Packet, PacketBuffer, ProtocolError, frame

# Bytes asked of the kernel per read. 256 KiB lets one read carry many result rows while
# staying well inside the socket buffers Linux auto-tunes to.
RECEIVE_SIZE = 256 * 1024
# At most this much per write: copying into the socket holds the event loop meanwhile.
SEND_STEP = 256 * 1024


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke) while hoopy expected more."""


# On the plain-socket fast path, yield to the scheduler after this many reads and writes
# that completed without waiting, so a session streaming a large result cannot starve the
# others (every wait is a checkpoint already).
OPS_BETWEEN_CHECKPOINTS = 32
# ... or once this many bytes have gone through without one: reads of a huge command come
# back full at once, and 32 of them are 8 MiB of copying (tens of milliseconds).
BYTES_BETWEEN_CHECKPOINTS = 1 << 20


class PacketStream:
    """Reads whole logical packets, sends framed ones, and exposes raw reads for relaying.

    Plain sockets (no TLS) are driven directly: a non-blocking ``os.read``/``os.write`` on the
    socket's descriptor, waiting with ``trio.lowlevel.wait_readable/writable`` only when the
    kernel says so, and waiting *first* where the caller knows nothing has arrived yet (the
    response to a command just sent, the next command after a response). That is one
    syscall and one scheduler pass per read where ``SocketStream.receive_some`` spends two
    syscalls plus checkpoints: measured, most of what a Python hop costs per query is here.
    TLS streams go through trio's ``SSLStream``.

    The underlying stream can be swapped for a TLS one (``start_tls``) only while nothing is
    buffered, so no byte read before the upgrade is lost (the mysql-mimic asyncio defect in
    DESIGN.md).
    """

    def __init__(self, stream: trio.abc.Stream, max_payload: int) -> None:
        self.stream = stream
        self._buf = PacketBuffer(max_payload)
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._unchecked_ops = 0
        self._unchecked_bytes = 0

    @property
    def max_payload(self) -> int:
        """The largest logical packet this stream buffers (``ProtocolError`` beyond)."""
        return self._buf.max_payload

    @max_payload.setter
    def max_payload(self, value: int) -> None:
        self._buf.max_payload = value

    async def _fair(self, size: int = 0) -> None:
        self._unchecked_ops += 1
        self._unchecked_bytes += size
        if (
            self._unchecked_ops >= OPS_BETWEEN_CHECKPOINTS
            or self._unchecked_bytes >= BYTES_BETWEEN_CHECKPOINTS
        ):
            self._unchecked_ops = self._unchecked_bytes = 0
            await trio.lowlevel.checkpoint()

    async def _receive(self, max_bytes: int = RECEIVE_SIZE, *, wait_first: bool = False) -> bytes:
        fd = self._fd
        if fd < 0:
            try:
                data = await self.stream.receive_some(max_bytes)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionClosed(str(exc) or type(exc).__name__) from None
            if not data:
                raise ConnectionClosed("connection closed by peer")
            return bytes(data)
        waited = False
        if wait_first:
            await trio.lowlevel.wait_readable(fd)
            waited = True
        while True:
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                waited = True
                continue
            except OSError as exc:
                raise ConnectionClosed(exc.strerror or type(exc).__name__) from None
            if not data:
                raise ConnectionClosed("connection closed by peer")
            if waited:
                self._unchecked_ops = self._unchecked_bytes = 0
            else:
                await self._fair(len(data))
            return data

    async def read_packet(self, *, wait_first: bool = False) -> Packet:
        while True:
            packet = self._buf.next_packet()
            if packet is not None:
                return packet
            self._buf.feed(await self._receive(wait_first=wait_first))
            wait_first = False

    async def read_packet_exact(self) -> Packet:
        """Read one packet without reading a byte past it (before a possible TLS upgrade)."""
        if self._buf.buffered:
            raise ProtocolError("unexpected bytes before the handshake response")
        head = await self._read_exactly(HEADER_SIZE)
        length = head[0] | (head[1] << 8) | (head[2] << 16)
        if length >= 0xFFFFFF or length > self.max_payload:
            # Checked before reading: a declared 16 MiB must not cost 16 MiB of memory.
            raise ProtocolError(f"handshake packet of {length} bytes is larger than allowed")
        self._buf.feed(head + await self._read_exactly(length))
        packet = self._buf.next_packet()
        assert packet is not None
        return packet

    async def _read_exactly(self, n: int) -> bytes:
        parts = bytearray()
        while len(parts) < n:
            parts += await self._receive(n - len(parts))
        return bytes(parts)

    async def receive_some(self, *, wait_first: bool = False) -> bytes:
        """Raw bytes for relaying: whatever is buffered first, else one read."""
        if self._buf.buffered:
            return self._buf.take_all()
        return await self._receive(wait_first=wait_first)

    def buffered_packet(self) -> Packet | None:
        """A complete packet already buffered (the peer sent ahead), without any I/O."""
        return self._buf.next_packet()

    @property
    def readable_fd(self) -> int:
        """The descriptor that turns readable when bytes arrive from the peer (-1: none).

        For TLS it is the transport's socket, whose readability means TLS bytes arrived, not
        necessarily application data; and TLS data already read may sit decrypted inside the
        ``SSLStream`` with the socket quiet (gateway/idle.py deals with both).
        """
        if self._fd >= 0:
            return self._fd
        transport = getattr(self.stream, "transport_stream", None)
        if isinstance(transport, trio.SocketStream):
            return transport.socket.fileno()
        return -1

    def waited(self) -> None:
        """The caller just waited for this stream to turn readable (gateway/idle.py): that
        wait was a checkpoint, so the reads that follow start a fresh fairness count."""
        self._unchecked_ops = self._unchecked_bytes = 0

    @property
    def direct(self) -> bool:
        """Whether reads are plain ``os.read`` calls on ``readable_fd`` (no TLS layer)."""
        return self._fd >= 0

    def unread(self, data: bytes) -> None:
        """Put back bytes that belong to the next response."""
        if data:
            self._buf.feed(data)

    @property
    def buffered(self) -> int:
        return self._buf.buffered

    async def send_raw(self, data: bytes) -> None:
        fd = self._fd
        if fd < 0:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionClosed(str(exc) or type(exc).__name__) from None
            return
        view = memoryview(data)
        waited = False
        while view:
            try:
                sent = os.write(fd, view[:SEND_STEP])
            except BlockingIOError:
                await trio.lowlevel.wait_writable(fd)
                waited = True
                continue
            except OSError as exc:
                raise ConnectionClosed(exc.strerror or type(exc).__name__) from None
            view = view[sent:]
            if view and not waited:
                # A huge command the peer takes as fast as it comes: let the other
                # sessions run between steps (a checkpoint costs microseconds).
                await trio.lowlevel.checkpoint()
        if not waited:
            await self._fair()

    async def send_payload(self, payload: bytes, seq: int) -> int:
        """Frame and send a payload; returns the next sequence id."""
        data, next_seq = frame(payload, seq)
        await self.send_raw(data)
        return next_seq

    async def start_tls(self, stream: trio.SSLStream[trio.abc.Stream]) -> None:
        if self._buf.buffered:
            raise ProtocolError("bytes arrived before the TLS handshake")
        self._fd = -1
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
