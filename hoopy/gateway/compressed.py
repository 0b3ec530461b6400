"""The client leg once the compressed protocol has started (``CLIENT_COMPRESS`` or zstd).

Compression is hoopy's own business on the client leg (DESIGN.md, fidelity rule 2): the
upstream leg stays uncompressed, so everything above the stream (the audit, the relay, the
response tracker) sees the same packets and bytes as without compression. Only this stream
knows: it inflates the client's frames into packets and frames whatever the session sends.
"""

from __future__ import annotations

import trio

from hoopy.gateway.stream import PacketStream
from hoopy.wire.compress import CompressedProtocol, Compression
from hoopy.wire.packets import Packet, ProtocolError


class CompressedPacketStream(PacketStream):
    """A ``PacketStream`` whose bytes on the wire are compressed frames.

    Same interface, same semantics: ``read_packet`` returns the client's logical packets,
    ``send_raw`` takes plain packet bytes (whole packets or a relay chunk that cuts one) and
    sends them as compressed frames, ``send_payload`` frames a payload as packets and then
    compresses it. Raw socket I/O is the plain stream's (the fd fast path or TLS).

    Built from the plain stream right after the server's OK that ends the connection phase
    ("Compression": that OK is the last plain packet); any bytes the plain stream had
    already buffered are the first compressed frames and are carried over.
    """

    def __init__(self, plain: PacketStream, compression: Compression, max_payload: int) -> None:
        super().__init__(plain.stream, max_payload)
        self._protocol = CompressedProtocol(compression, max_payload)
        self._protocol.feed(plain._buf.take_all())

    @property
    def compression(self) -> Compression:
        return self._protocol.compression

    async def read_packet(self, *, wait_first: bool = False) -> Packet:
        protocol = self._protocol
        while True:
            packet = protocol.next_packet()
            if packet is not None:
                return packet
            protocol.feed(await self._receive(wait_first=wait_first))
            wait_first = False

    def buffered_packet(self) -> Packet | None:
        # The idle wait asks before it waits (gateway/idle.py): a packet the client sent
        # ahead sits in the inflated frames, not in the plain buffer.
        return self._protocol.next_packet()

    async def read_packet_exact(self) -> Packet:
        raise ProtocolError("the connection phase is over: no handshake packet expected")

    async def receive_some(self, *, wait_first: bool = False) -> bytes:
        protocol = self._protocol
        while True:
            data = protocol.take_inflated()
            if data:
                return data
            protocol.feed(await self._receive(wait_first=wait_first))
            wait_first = False

    def unread(self, data: bytes) -> None:
        self._protocol.unread(data)

    @property
    def buffered(self) -> int:
        return self._protocol.buffered

    async def send_raw(self, data: bytes) -> None:
        # The base class's send_payload frames packets and calls this, so hoopy's own
        # packets (ERR, auth exchanges) are compressed too.
        # A packet cut by the end of ``data`` waits for the rest (CompressedProtocol.frame).
        frames = self._protocol.frame(data)
        if frames:
            await super().send_raw(frames)

    async def start_tls(self, stream: trio.SSLStream[trio.abc.Stream]) -> None:
        raise ProtocolError("TLS cannot start once the compressed protocol has")
