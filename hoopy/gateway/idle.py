"""Waiting for a client's next command while watching the target (wire-fidelity rule 8).

When the server ends an idle session (``wait_timeout``, ``KILL <id>`` from another
connection, a shutdown), a client connected directly sees its connection close at once, and
pools rely on that to drop dead connections before handing them out (mysql2's pool removes a
connection on its 'end'/'error' event; go-sql-driver checks the socket before reuse). What
the server sends first differs. Captured from MariaDB 10.11 (strace of mariadbd):
``wait_timeout`` sets SO_LINGER 0 and closes (the client reads ECONNRESET, no packet);
``KILL`` shuts the socket down, then its ERR 1927 "Connection was killed" (sequence id 1)
fails with EPIPE, so the client reads EOF. MySQL 8.0.24+ sends ERR 4031
(ER_CLIENT_INTERACTION_TIMEOUT) before closing on ``wait_timeout``.

So while a session waits for a command, hoopy waits on both legs. If the target sends an ERR,
hoopy relays it exactly as sent (sequence id included) and closes the client; if the target
just closes, hoopy closes the client; anything else unsolicited is a protocol violation and
ends both. A client command that arrives in the same moment is not forwarded: the target
wins ties.

Cost: nothing is added while a statement runs. The session keeps one epoll descriptor
holding both legs' sockets (a TLS leg's transport socket), and trio waits on that one
descriptor where it used to wait on the client's: one more syscall per command
(``epoll_wait`` with timeout 0, to see which leg woke). Under TLS a socket is not the whole
story: ``SSLStream`` may hold records it has read but not decrypted yet with the socket
quiet, so those are checked before waiting (``_tls_buffered``); and a readable socket may
carry a record without data (a key update). For the target that read is bounded
(``TLS_RECORD_WAIT``); for the client it is not, so while a TLS client sends such a record
the target goes unwatched until the client's next command arrives (the close is then seen
by the next wait). If trio's internals cannot be read, the wait races two tasks instead
(the first to get something cancels the other; ``SSLStream.receive_some`` may be cancelled
once the handshake is done), which costs far more per command (measured: about 90 µs of CPU
per command more than the epoll wait on a TLS client leg, on the 2-core test VM).

Resource handling: ``IdleWatch`` owns its epoll descriptor (``close`` it); it never closes
the streams. Error handling: client errors (``ConnectionClosed``, ``ProtocolError``)
propagate as from ``PacketStream.read_packet``; whatever happens on the target's side is
returned as ``TargetEnded``.
"""

from __future__ import annotations

import contextlib
import enum
import select
import ssl
from dataclasses import dataclass

import trio

from hoopy.gateway.stream import ConnectionClosed, PacketStream
from hoopy.wire.messages import ERR_HEADER, parse_err
from hoopy.wire.packets import Packet, ProtocolError

# How long to wait for the rest of a packet the target began while the session was idle. An
# ERR is one small packet, normally in one segment; the bound keeps a target that stalls
# mid-packet from holding the session open.
UNSOLICITED_PACKET_TIMEOUT = 2.0


# How long a TLS target's readable socket may take to yield data before hoopy goes back to
# waiting for the client. The bytes are in the kernel already (that is what woke us), so
# decrypting them takes microseconds; the bound only matters for a record that carries no
# data, when it delays the client's next command once by at most this much.
TLS_RECORD_WAIT = 0.1


class _Nothing(enum.Enum):
    NOTHING = enum.auto()


_NOTHING = _Nothing.NOTHING


def _tls_buffered(stream: trio.abc.Stream) -> bool | None:
    """Whether a TLS stream holds bytes its socket no longer shows (None: cannot tell).

    ``SSLStream`` reads ciphertext into a memory BIO and decrypts one record per read, so a
    second record that arrived in the same segment waits there with the socket quiet.
    ``pending()`` (decrypted bytes) is public; the BIO is trio's private ``_incoming``, read
    defensively: if trio ever renames it, the session falls back to the two-task wait.
    """
    if not isinstance(stream, trio.SSLStream):
        return None
    incoming = getattr(stream, "_incoming", None)
    if not isinstance(incoming, ssl.MemoryBIO):
        return None
    try:
        decrypted = stream.pending()
    except (AttributeError, trio.NeedHandshakeError):
        return None
    return bool(incoming.pending or decrypted)


def _readable_now(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


@dataclass(frozen=True, slots=True)
class TargetEnded:
    """The target spoke or closed while the session was idle: the session ends.

    ``relay`` is the ERR packet to pass on as sent (wire bytes), or None. ``violation`` says
    the target sent something other than an ERR (logged as a protocol error).
    """

    reason: str
    relay: bytes | None = None
    violation: bool = False


class IdleWatch:
    """The wait for a session's next command, watching the target meanwhile."""

    def __init__(self, client: PacketStream, upstream: PacketStream, target: str) -> None:
        self.client = client
        self.upstream = upstream
        self.target = target
        self._epoll: select.epoll | None = None
        self._upstream_fd = upstream.readable_fd
        watchable = all(
            leg.readable_fd >= 0 and (leg.direct or _tls_buffered(leg.stream) is not None)
            for leg in (client, upstream)
        )
        if watchable and hasattr(select, "epoll"):
            epoll = select.epoll(2)
            try:
                # Level-triggered: readable as long as either socket has bytes (or EOF/RST).
                epoll.register(client.readable_fd, select.EPOLLIN)
                epoll.register(self._upstream_fd, select.EPOLLIN)
            except OSError:
                epoll.close()
                raise
            self._epoll = epoll

    def close(self) -> None:
        if self._epoll is not None:
            trio.lowlevel.notify_closing(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None

    async def next_command(self) -> Packet | TargetEnded:
        """The client's next command, or what the target did first."""
        upstream = self.upstream
        if upstream.buffered:  # sent after the last response ended, in the same read
            return await self._target_spoke(b"")
        client = self.client
        packet = client.buffered_packet()  # the client sent ahead
        if packet is not None:
            return packet
        epoll = self._epoll
        if epoll is None:
            return await self._race()
        if not upstream.direct and _tls_buffered(upstream.stream):
            first = await self._target_first()  # TLS bytes read with the last response
            if not isinstance(first, _Nothing):
                return await self._target_spoke(first)
        if not client.direct and _tls_buffered(client.stream):
            return await client.read_packet()  # TLS records already read: no wait
        fd = epoll.fileno()
        while True:
            await trio.lowlevel.wait_readable(fd)
            ready = epoll.poll(0, 2)  # which leg woke (at most two)
            if not ready:
                continue
            for ready_fd, _ in ready:
                if ready_fd == self._upstream_fd:
                    first = await self._target_first()
                    if not isinstance(first, _Nothing):
                        return await self._target_spoke(first)
                    break  # a TLS record without data: wait again
            else:
                client.waited()
                return await client.read_packet()

    async def _race(self) -> Packet | TargetEnded:
        """Read the client and the target at once; the first to deliver wins (ties: target)."""
        command: Packet | None = None
        failure: BaseException | None = None
        spoke: bytes | None = None
        target_done = False

        async with trio.open_nursery() as nursery:

            async def from_client() -> None:
                nonlocal command, failure
                try:
                    command = await self.client.read_packet()
                except (ConnectionClosed, ProtocolError) as exc:
                    failure = exc  # raised below, outside the nursery's exception group
                nursery.cancel_scope.cancel()

            async def from_target() -> None:
                nonlocal spoke, target_done
                spoke = await self._receive_or_eof()
                target_done = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(from_target)
            nursery.start_soon(from_client)
        if target_done:
            return await self._target_spoke(spoke)
        if failure is not None:
            raise failure
        assert command is not None
        # Ties go to the target: the client's read may finish first although the target's
        # bytes were there too (they take longer to decrypt). One poll, TLS sessions only.
        if self._upstream_fd >= 0 and _readable_now(self._upstream_fd):
            late = await self._target_first()
            if not isinstance(late, _Nothing):
                return await self._target_spoke(late)
        return command

    async def _target_first(self) -> bytes | _Nothing | None:
        """The target's socket is readable: its bytes, None (closed), or ``_NOTHING``.

        A plain socket delivers at once. Under TLS the bytes may be a record without data (a
        key update), after which the read would block: so it is bounded, and ``_NOTHING``
        sends the caller back to waiting.
        """
        if self.upstream.direct:
            return await self._receive_or_eof()
        with trio.move_on_after(TLS_RECORD_WAIT):
            return await self._receive_or_eof()
        return _NOTHING

    async def _receive_or_eof(self) -> bytes | None:
        """The target's next bytes, or None when it closed."""
        try:
            return await self.upstream.receive_some()
        except ConnectionClosed:
            return None

    async def _target_spoke(self, data: bytes | None) -> TargetEnded:
        """Classify what the target sent unasked (``data``; None: it closed)."""
        name = self.target
        if data is None:
            return TargetEnded(f"target '{name}' closed the connection while the session was idle")
        upstream = self.upstream
        upstream.unread(data)
        packet: Packet | None = None
        with trio.move_on_after(UNSOLICITED_PACKET_TIMEOUT):
            with contextlib.suppress(ConnectionClosed, ProtocolError):
                packet = await upstream.read_packet()
        if packet is None:
            return TargetEnded(
                f"protocol error: target '{name}' sent an incomplete packet while the session "
                "was idle",
                violation=True,
            )
        if packet.payload[:1] != bytes((ERR_HEADER,)):
            first = f"0x{packet.payload[0]:02x}" if packet.payload else "empty"
            return TargetEnded(
                f"protocol error: target '{name}' sent an unsolicited packet "
                f"(header {first}, {len(packet.payload)} bytes) while the session was idle",
                violation=True,
            )
        try:
            err = parse_err(packet.payload)
        except ProtocolError:
            detail = "a malformed ERR"
        else:
            detail = f"ERROR {err.code} ({err.sqlstate}): {err.message}"
        return TargetEnded(f"target '{name}' ended the session: {detail}", relay=packet.raw)
