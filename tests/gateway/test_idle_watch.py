"""IdleWatch: the wait for a session's next command also watches the target (real sockets).

Both legs are socketpairs; each is plain or TLS (trio's SSLStream over the socketpair, with
hoopy's generated certificate), so the epoll path and the two-task path both run.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from hoopy.gateway.idle import IdleWatch, TargetEnded, TargetWatcher
from hoopy.gateway.stream import ConnectionClosed, PacketStream
from hoopy.gateway.tls import ensure_server_certificate, server_context
from hoopy.wire.messages import build_err, build_ok
from hoopy.wire.packets import Packet, frame

MAX = 1 << 20
PING = frame(b"\x0e", 0)[0]
# What MySQL 8.0.24+ sends when wait_timeout ends a session (ER_CLIENT_INTERACTION_TIMEOUT),
# framed with sequence id 1 as MariaDB frames its unsolicited "Connection was killed".
TIMEOUT_ERR = frame(
    build_err(4031, "HY000", "The client was disconnected by the server because of inactivity."),
    1,
)[0]


@dataclass
class Leg:
    """Our end (a PacketStream, as the gateway holds it) and the peer's (a trio stream)."""

    ours: PacketStream
    peer: trio.abc.Stream

    async def close_peer(self) -> None:
        await self.peer.aclose()


async def make_leg(tls: bool, cert_dir: Path) -> Leg:
    a, b = socket.socketpair()
    ours_raw = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    peer_raw = trio.SocketStream(trio.socket.from_stdlib_socket(b))
    ours = PacketStream(ours_raw, MAX)
    if not tls:
        return Leg(ours, peer_raw)
    cert = ensure_server_certificate(cert_dir)
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    ours_tls = trio.SSLStream(ours_raw, server_context(cert.cert, cert.key), server_side=True)
    peer_tls = trio.SSLStream(peer_raw, client_ctx, server_hostname="hoopy")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ours.start_tls, ours_tls)
        nursery.start_soon(peer_tls.do_handshake)
    return Leg(ours, peer_tls)


@dataclass
class Legs:
    client: Leg
    target: Leg
    race: bool  # force the two-task wait (the fallback without epoll)
    watcher: TargetWatcher

    def __getitem__(self, i: int) -> Leg:
        return (self.client, self.target)[i]

    def __iter__(self) -> Iterator[Leg]:
        return iter((self.client, self.target))


@pytest.fixture(
    params=[
        "plain/plain",
        "plain/tls",
        "tls/plain",
        "tls/tls",
        "tls/plain/race",
        "tls/tls/race",
    ]
)
async def legs(
    request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Legs]:
    parts = request.param.split("/")
    client = await make_leg(parts[0] == "tls", tmp_path)
    target = await make_leg(parts[1] == "tls", tmp_path)
    watcher = TargetWatcher()  # the gateway's, for sessions with a TLS client leg
    nursery.start_soon(watcher.run)
    yield Legs(client, target, race="race" in parts, watcher=watcher)
    for leg in (client, target):
        await leg.ours.aclose()
        await leg.peer.aclose()


def watch(legs: Legs) -> IdleWatch:
    if legs.race:
        return IdleWatch(legs.client.ours, legs.target.ours, "app")  # no watcher: the race
    idle = IdleWatch(legs.client.ours, legs.target.ours, "app", legs.watcher)
    if legs.client.ours.direct:
        assert idle._epoll is not None, "a plain client is watched with the session's epoll"
    else:
        assert idle._watcher is not None, "a TLS client is watched by the TargetWatcher"
    return idle


async def test_a_client_command_is_returned(legs: Legs) -> None:
    idle = watch(legs)
    try:
        for _ in range(3):  # several waits in a row, as between statements
            await legs[0].peer.send_all(PING)
            got = await idle.next_command()
            assert isinstance(got, Packet) and got.payload == b"\x0e"
    finally:
        idle.close()


async def test_the_targets_err_is_relayed_as_sent(legs: Legs) -> None:
    idle = watch(legs)
    try:
        await legs[1].peer.send_all(TIMEOUT_ERR)
        got = await idle.next_command()
    finally:
        idle.close()
    assert isinstance(got, TargetEnded)
    assert got.relay == TIMEOUT_ERR and not got.violation
    assert "ERROR 4031 (HY000): The client was disconnected" in got.reason


async def test_a_target_that_closes_ends_the_wait(legs: Legs) -> None:
    idle = watch(legs)
    try:
        await legs[1].close_peer()
        got = await idle.next_command()
    finally:
        idle.close()
    assert isinstance(got, TargetEnded)
    assert got.relay is None and not got.violation
    assert "closed the connection while the session was idle" in got.reason


async def test_an_err_split_across_reads_is_relayed_whole(legs: Legs) -> None:
    idle = watch(legs)
    try:
        async with trio.open_nursery() as nursery:

            async def trickle() -> None:
                for i in range(0, len(TIMEOUT_ERR), 7):
                    await legs[1].peer.send_all(TIMEOUT_ERR[i : i + 7])
                    await trio.sleep(0.01)

            nursery.start_soon(trickle)
            got = await idle.next_command()
    finally:
        idle.close()
    assert isinstance(got, TargetEnded) and got.relay == TIMEOUT_ERR


async def test_anything_but_an_err_is_a_protocol_violation(legs: Legs) -> None:
    idle = watch(legs)
    try:
        await legs[1].peer.send_all(frame(build_ok(), 1)[0])
        got = await idle.next_command()
    finally:
        idle.close()
    assert isinstance(got, TargetEnded)
    assert got.violation and got.relay is None and "unsolicited packet" in got.reason


async def test_the_target_wins_when_both_legs_are_ready(legs: Legs) -> None:
    client, target = legs
    idle = watch(legs)
    try:
        await target.peer.send_all(TIMEOUT_ERR)
        await client.peer.send_all(PING)
        # Let both arrive before the wait starts (the kernel has them once send returns on a
        # socketpair; TLS records too).
        await trio.testing.wait_all_tasks_blocked()
        got = await idle.next_command()
    finally:
        idle.close()
    assert isinstance(got, TargetEnded), "a command was taken while the target had ended"


async def test_bytes_left_over_from_the_last_response_count_as_unsolicited(
    legs: Legs,
) -> None:
    client, target = legs
    target.ours.unread(TIMEOUT_ERR)  # what the relay put back after the response ended
    idle = watch(legs)
    try:
        await client.peer.send_all(PING)
        got = await idle.next_command()
    finally:
        idle.close()
    assert isinstance(got, TargetEnded) and got.relay == TIMEOUT_ERR


async def test_a_pipelined_command_is_returned_without_waiting(legs: Legs) -> None:
    client, _ = legs
    client.ours.unread(PING + PING)
    idle = watch(legs)
    try:
        with trio.fail_after(5):
            for _ in range(2):
                got = await idle.next_command()
                assert isinstance(got, Packet) and got.payload == b"\x0e"
    finally:
        idle.close()


async def test_the_wait_can_be_cancelled_and_started_again(legs: Legs) -> None:
    # The idle watchdog and shutdown cancel a waiting session's scope.
    idle = watch(legs)
    try:
        with trio.move_on_after(0.05) as scope:
            await idle.next_command()
        assert scope.cancelled_caught
        await legs[0].peer.send_all(PING)
        got = await idle.next_command()
        assert isinstance(got, Packet)
    finally:
        idle.close()


async def test_a_client_that_closes_raises_as_before(legs: Legs) -> None:
    idle = watch(legs)
    try:
        await legs[0].close_peer()
        with pytest.raises(ConnectionClosed):
            await idle.next_command()
    finally:
        idle.close()


async def test_commands_in_separate_tls_records_that_arrive_together(legs: Legs) -> None:
    # Both records reach the socket at once; TLS decrypts one per read, so the second waits
    # inside the SSLStream with the socket quiet: it must be found without waiting.
    for _ in range(3):
        await legs.client.peer.send_all(PING)
    await trio.testing.wait_all_tasks_blocked()
    idle = watch(legs)
    try:
        with trio.fail_after(5):
            for _ in range(3):
                got = await idle.next_command()
                assert isinstance(got, Packet) and got.payload == b"\x0e"
    finally:
        idle.close()


async def test_an_err_read_with_the_last_response_is_found_without_waiting(legs: Legs) -> None:
    # The target's ERR arrived right behind a response, in its own TLS record; the relay's
    # last read took only the response's record.
    await legs.target.peer.send_all(b"\x05\x00\x00\x01\x00\x00\x00\x02\x00")  # an OK
    await legs.target.peer.send_all(TIMEOUT_ERR)
    await trio.testing.wait_all_tasks_blocked()
    ok = await legs.target.ours.read_packet()
    assert ok.payload[0] == 0
    idle = watch(legs)
    try:
        with trio.fail_after(5):
            got = await idle.next_command()
    finally:
        idle.close()
    assert isinstance(got, TargetEnded) and got.relay == TIMEOUT_ERR
