"""What an unauthenticated client may cost: upstream connections, and the ids it is greeted with.

A silent TCP connection must not cost the target anything (DESIGN.md, fidelity rule 10). For
``gateway_users`` and ``tokens`` targets hoopy therefore greets the client and verifies it
*before* it connects upstream: the greeting imitates the target's last greeting
(``TargetGreetings``), with a connection id of hoopy's own (``FrontConnectionIds``), which hoopy
maps back to the upstream session when a client names it in ``KILL``. Passthrough cannot work
that way (the target itself authenticates the client, so the greeting and its nonce must be
the target's), so there the number of logins in flight, each holding one upstream connection,
is bounded per client address and in total (``PendingLogins``).
"""

from __future__ import annotations

import logging
import mmap
import re
import secrets
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from hoopy.config.model import Target
from hoopy.wire.handshake import Greeting

log = logging.getLogger("hoopy.server")

# Packets a client may send before it has logged in. The largest legitimate one is the token
# sent as a password (hoopy refuses tokens over 64 KiB unparsed, identity/tokens.py) or a
# handshake response carrying connect attributes (MySQL caps what it keeps of them at 64 KiB,
# performance_schema_session_connect_attrs_size): 128 KiB covers both with room to spare,
# where max_statement_bytes (64 MiB by default) would let 20 silent clients pin a GiB.
PRE_AUTH_MAX_PAYLOAD = 128 * 1024


class PendingLogins:
    """Passthrough logins in flight (each holds an upstream connection), bounded per client
    address and in total. ``slot`` waits for room; the caller bounds the wait."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self._count = 0
        self._by_address: dict[str, int] = {}
        self._released = trio.lowlevel.ParkingLot()

    def in_flight(self, address: str | None = None) -> int:
        return self._count if address is None else self._by_address.get(address, 0)

    def _has_room(self, address: str) -> bool:
        return self._count < self.total and self._by_address.get(address, 0) < self.per_address

    async def acquire(self, address: str) -> None:
        while not self._has_room(address):
            await self._released.park()
        self._count += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1

    def release(self, address: str) -> None:
        self._count -= 1
        left = self._by_address[address] - 1
        if left:
            self._by_address[address] = left
        else:
            del self._by_address[address]
        self._released.unpark_all()

    @contextmanager
    def held(self, address: str) -> Iterator[None]:
        """Release on exit a slot taken with ``acquire``."""
        try:
            yield
        finally:
            self.release(address)


class TargetGreetings:
    """The last greeting each target sent, to greet clients with before connecting upstream.

    When none has been seen yet (the first client after start-up), one connection reads the
    target's greeting and closes (a single probe per target at a time; concurrent logins wait
    for it). A target that cannot be reached leaves ``None``: the caller greets with a
    stand-in and reports the failure after the login, as a regular ERR.
    """

    def __init__(self) -> None:
        self._last: dict[str, Greeting] = {}
        self._probes: dict[str, trio.Event] = {}

    def get(self, target: str) -> Greeting | None:
        return self._last.get(target)

    def remember(self, target: str, greeting: Greeting) -> None:
        self._last[target] = greeting

    async def probe(self, target: Target, max_payload: int) -> Greeting | None:
        """The target's greeting: the remembered one, or a fresh one read now."""
        known = self._last.get(target.name)
        if known is not None:
            return known
        running = self._probes.get(target.name)
        if running is not None:
            await running.wait()
            return self._last.get(target.name)
        done = self._probes[target.name] = trio.Event()
        # Imported here: upstream.py imports nothing of this module, but keeping the import
        # local makes that obvious to whoever adds one.
        from hoopy.gateway.upstream import UpstreamConnection, UpstreamError

        try:
            upstream = await UpstreamConnection.open(target, max_payload)
        except UpstreamError as exc:
            log.warning("target %s: cannot read its greeting: %s", target.name, exc.message)
        else:
            self._last[target.name] = upstream.greeting
            await upstream.packets.aclose()
        finally:
            del self._probes[target.name]
            done.set()
        return self._last.get(target.name)


# Connection ids hoopy greets gateway-user and token clients with, before any upstream
# session exists. They come from 2**30 .. 2**31 - 1, at a random offset per process: a
# server's own thread ids count up from 1 and would need a billion connections to get there
# (and the range stays positive for clients that keep the id in a signed 32-bit integer), so
# an id a client names in KILL is either one of hoopy's (mapped to the upstream session) or
# the server's own (passed on), never both; and several gateways behind one load balancer are
# unlikely to hand out the same ids.
FRONT_ID_BASE = 0x4000_0000
FRONT_ID_SPAN = 0x4000_0000


class SharedConnectionTable:
    """The workers' connection ids, readable by every worker (gateway/workers.py): an
    anonymous shared mapping the supervisor makes before it forks. Worker K publishes its
    sessions' (hoopy id -> target, upstream thread id) in region K only, so each region has
    one writer; any worker reads any region, which is how a KILL sent to one worker finds a
    session of another (the mysql CLI's Ctrl-C comes on a new connection).

    A slot is four little-endian u32: hoopy id (0: never used, ``_GONE``: freed), upstream
    id, a CRC-32 of the target's name, unused. The id is written last and cleared first, and
    a reader checks it again after reading the rest, so it never takes a half-written slot.
    A region full of live sessions leaves the newest unpublished (KILL then maps them only
    from their own worker)."""

    SLOT = 16

    def __init__(self, workers: int, sessions_per_worker: int) -> None:
        size = 1
        while size < 2 * sessions_per_worker and size < 1 << 16:
            size *= 2
        self.workers = workers
        self.slots = size
        self._shift = 32 - (size.bit_length() - 1)
        self._map = mmap.mmap(-1, workers * size * self.SLOT)  # MAP_SHARED: survives fork

    def _slot(self, worker: int, front: int, probe: int) -> int:
        # A worker's ids step by the worker count: hash them (the product's high bits) so
        # they spread over the region.
        home = ((front * 2654435761) & 0xFFFF_FFFF) >> self._shift
        return ((worker - 1) * self.slots + ((home + probe) & (self.slots - 1))) * self.SLOT

    def clear(self, worker: int) -> None:
        """Forget a worker's region (its process ended; a new one starts empty)."""
        size = self.slots * self.SLOT
        self._map[(worker - 1) * size : worker * size] = bytes(size)

    def publish(self, worker: int, front: int, target: str, upstream_id: int) -> bool:
        for probe in range(self.slots):
            at = self._slot(worker, front, probe)
            if _U32.unpack_from(self._map, at)[0] in (0, _GONE, front):
                _U32.pack_into(self._map, at + 4, upstream_id & 0xFFFF_FFFF)
                _U32.pack_into(self._map, at + 8, zlib.crc32(target.encode()))
                _U32.pack_into(self._map, at, front)
                return True
        return False

    def withdraw(self, worker: int, front: int) -> None:
        for probe in range(self.slots):
            at = self._slot(worker, front, probe)
            found = _U32.unpack_from(self._map, at)[0]
            if found == front:
                _U32.pack_into(self._map, at, _GONE)
                return
            if found == 0:
                return

    def lookup(self, worker: int, front: int, target: str) -> int | None:
        crc = zlib.crc32(target.encode())
        for probe in range(self.slots):
            at = self._slot(worker, front, probe)
            found = _U32.unpack_from(self._map, at)[0]
            if found == 0:
                return None
            if found == front:
                upstream_id = _U32.unpack_from(self._map, at + 4)[0]
                target_crc = _U32.unpack_from(self._map, at + 8)[0]
                if _U32.unpack_from(self._map, at)[0] != front:
                    return None  # withdrawn while read: that session is gone
                return upstream_id if target_crc == crc else None
        return None


_U32 = struct.Struct("<I")
_GONE = 0xFFFF_FFFF


class FrontConnectionIds:
    """hoopy's connection ids and the upstream thread id behind each, per target.

    ``worker`` (K, N): worker K of N (gateway/workers.py) hands out only the ids that are
    K - 1 modulo N past ``FRONT_ID_BASE``, so no two workers ever give out the same id, and
    ``worker_of`` tells which worker an id belongs to. With ``shared`` the ids are also
    published there, and ids of other workers are looked up there."""

    def __init__(
        self, worker: tuple[int, int] | None = None, shared: SharedConnectionTable | None = None
    ) -> None:
        self._worker = worker
        self._shared = shared if worker is not None else None
        self._lane, self._stride = (worker[0] - 1, worker[1]) if worker else (0, 1)
        self._slots = FRONT_ID_SPAN // self._stride
        self._next = secrets.randbelow(self._slots)
        self._upstream: dict[int, tuple[str, int]] = {}

    def allocate(self) -> int:
        while True:
            front = FRONT_ID_BASE + self._next * self._stride + self._lane
            self._next = (self._next + 1) % self._slots
            if front not in self._upstream:
                return front

    def worker_of(self, front: int) -> int | None:
        """The worker (1-based) whose id ``front`` is, when it is one of hoopy's."""
        if not FRONT_ID_BASE <= front < FRONT_ID_BASE + self._slots * self._stride:
            return None
        return (front - FRONT_ID_BASE) % self._stride + 1

    def register(self, front: int, target: str, upstream_id: int) -> None:
        self._upstream[front] = (target, upstream_id)
        if self._shared is not None and self._worker is not None:
            self._shared.publish(self._worker[0], front, target, upstream_id)

    def unregister(self, front: int) -> None:
        if self._upstream.pop(front, None) is not None and self._shared is not None:
            assert self._worker is not None
            self._shared.withdraw(self._worker[0], front)

    def upstream_id(self, front: int, target: str) -> int | None:
        entry = self._upstream.get(front)
        if entry is not None:
            return entry[1] if entry[0] == target else None
        owner = self.worker_of(front)
        if self._shared is None or owner is None or self._worker is None:
            return None
        if owner == self._worker[0]:
            return None  # ours, and not a session of ours (any more)
        return self._shared.lookup(owner, front, target)


# ``KILL [HARD | SOFT] [CONNECTION | QUERY] <id>`` as the whole statement (MySQL 8.0 reference
# 15.7.8.4 "KILL Statement"; MariaDB's KILL adds HARD/SOFT and ``QUERY ID <query id>``, which
# names a query, not a connection, and is left alone). Comments may sit between the words;
# executable comments are not unwrapped: this rewrite is a convenience for clients that kill by
# the greeting's id (the mysql CLI on Ctrl-C, connectors' cancel), not a security check, and a
# KILL it does not recognise reaches the server unchanged, naming an id no session there has.
_GAP = rb"(?:\s|/\*(?!!)(?:[^*]|\*(?!/))*\*/)"
_KILL = re.compile(
    rb"\A" + _GAP + rb"*KILL" + _GAP + rb"+"
    rb"(?:(?:HARD|SOFT)" + _GAP + rb"+)?"
    rb"(?:(?:CONNECTION|QUERY)" + _GAP + rb"+)?"
    rb"(?P<id>[0-9]{1,10})" + _GAP + rb"*;?" + _GAP + rb"*\Z",
    re.IGNORECASE,
)


def kill_target(sql: bytes) -> tuple[int, int, int] | None:
    """For a ``KILL`` statement naming a connection id: (id, start, end) of the digits."""
    if len(sql) > 4096 or b"kill" not in sql[:512].lower():
        return None
    m = _KILL.match(sql)
    if m is None:
        return None
    return int(m.group("id")), m.start("id"), m.end("id")
