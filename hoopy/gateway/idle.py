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

Cost: nothing is added while a statement runs. With a plain client socket the session keeps
one epoll descriptor holding both legs' sockets (the target's TLS transport socket too), and
trio waits on that one descriptor where it used to wait on the client's: one more syscall
per command (``epoll_wait`` with timeout 0, to see which leg woke). A TLS client is read as
before (``SSLStream`` may hold records its socket no longer shows, and a trio socket read
that succeeds at once still yields, so waiting on a descriptor first would cost a scheduler
pass per command); one gateway-wide ``TargetWatcher`` task watches the target sockets of such
sessions while they are idle and interrupts the client read when one turns readable: two
``epoll_ctl`` calls per command. A TLS target's readable socket may carry a record without
data (a key update), so that read is bounded (``TLS_RECORD_WAIT``), and records it already
holds are checked before waiting (``_tls_buffered``). Without epoll (or if trio's TLS
internals cannot be read) the wait races two tasks, the first to get something cancelling the
other (``SSLStream.receive_some`` may be cancelled once the handshake is done): correct, but
it costs far more per command (measured: about 90 µs of CPU per command on a TLS client leg,
2-core test VM under load).

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


class TargetWatcher:
    """One task for the whole gateway that watches the target sockets of idle sessions whose
    client leg is TLS, and interrupts such a session's wait for its client when its target
    turns readable.

    Each session's target socket is registered once, disarmed (EPOLLONESHOT with no events);
    a session arms it as it starts waiting for its client and disarms it when the command
    has arrived: two ``epoll_ctl`` calls per command and no scheduler pass, where waiting on
    the client's TLS stream and an epoll descriptor in turn would add one (a trio socket read
    that succeeds at once still yields). Resource handling: owns its epoll descriptor;
    ``run`` runs in the server's nursery until cancelled.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._waiting: dict[int, trio.CancelScope | None] = {}

    def add(self, fd: int) -> None:
        self._epoll.register(fd, select.EPOLLONESHOT)
        self._waiting[fd] = None

    def remove(self, fd: int) -> None:
        self._waiting.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)

    def arm(self, fd: int, scope: trio.CancelScope) -> None:
        self._waiting[fd] = scope
        # ValueError: the watcher has stopped (gateway shutdown cancels everything anyway).
        with contextlib.suppress(ValueError):
            self._epoll.modify(fd, select.EPOLLIN | select.EPOLLONESHOT)

    def disarm(self, fd: int) -> None:
        self._waiting[fd] = None
        with contextlib.suppress(OSError, ValueError):  # the socket may be gone already
            self._epoll.modify(fd, select.EPOLLONESHOT)

    async def run(self) -> None:
        fd = self._epoll.fileno()
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                for ready, _ in self._epoll.poll(0, WATCHER_BATCH):
                    scope = self._waiting.get(ready)
                    if scope is not None:
                        scope.cancel()
        finally:
            trio.lowlevel.notify_closing(fd)
            self._epoll.close()


# Events taken per wake-up of the TargetWatcher (more wait for the next poll).
WATCHER_BATCH = 64


class IdleWatch:
    """The wait for a session's next command, watching the target meanwhile."""

    def __init__(
        self,
        client: PacketStream,
        upstream: PacketStream,
        target: str,
        watcher: TargetWatcher | None = None,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.target = target
        self._epoll: select.epoll | None = None
        self._watcher: TargetWatcher | None = None
        self._upstream_fd = upstream.readable_fd
        target_watchable = self._upstream_fd >= 0 and (
            upstream.direct or _tls_buffered(upstream.stream) is not None
        )
        if not target_watchable or not hasattr(select, "epoll"):
            return  # the two-task wait
        if not client.direct:
            if watcher is not None:
                watcher.add(self._upstream_fd)
                self._watcher = watcher
                self._target_poll = select.poll()  # for ties, see _watched_by_server
                self._target_poll.register(self._upstream_fd, select.POLLIN)
            return
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
        if self._watcher is not None:
            self._watcher.remove(self._upstream_fd)
            self._watcher = None
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
        if epoll is None and self._watcher is None:
            return await self._race()
        if not upstream.direct and _tls_buffered(upstream.stream):
            first = await self._target_first()  # TLS bytes read with the last response
            if not isinstance(first, _Nothing):
                return await self._target_spoke(first)
        if epoll is None:
            return await self._watched_by_server()
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

    async def _watched_by_server(self) -> Packet | TargetEnded:
        """A TLS client: read it as before, while the TargetWatcher watches the target."""
        watcher, fd = self._watcher, self._upstream_fd
        assert watcher is not None
        while True:
            scope = trio.CancelScope()
            watcher.arm(fd, scope)
            command: Packet | None = None
            try:
                with scope:
                    command = await self.client.read_packet(wait_first=True)
            finally:
                watcher.disarm(fd)
            # Ties go to the target: the command may have been read before the watcher ran.
            if command is not None and not self._target_poll.poll(0):
                return command
            # The watcher cancelled the read, or would have: the target's socket is readable.
            first = await self._target_first()
            if not isinstance(first, _Nothing):
                return await self._target_spoke(first)
            if command is not None:
                return command

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
