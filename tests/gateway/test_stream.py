"""PacketStream's plain-socket fast path: fairness and error mapping (trio, real sockets)."""

from __future__ import annotations

import socket

import pytest
import trio

from hoopy.gateway.stream import OPS_BETWEEN_CHECKPOINTS, ConnectionClosed, PacketStream


def stream_pair() -> tuple[PacketStream, socket.socket]:
    ours, theirs = socket.socketpair()
    return PacketStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), 1 << 20), theirs


async def test_reads_that_never_block_still_let_other_tasks_run() -> None:
    packets, peer = stream_pair()
    peer.sendall(b"x" * 500)  # every 1-byte read below completes without waiting
    ran: list[int] = []

    async def other_task() -> None:
        ran.append(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        reads = 0
        while not ran and reads < 500:
            assert await packets._receive(1) == b"x"
            reads += 1
    # trio shuffles each scheduling batch, so the other task may need a few checkpoints;
    # without them it would not run until all 500 reads are done.
    assert ran and reads < 500, "another task never got to run during immediate reads"
    assert reads % OPS_BETWEEN_CHECKPOINTS == 0
    peer.close()


async def test_writes_that_never_block_still_let_other_tasks_run() -> None:
    packets, peer = stream_pair()
    ran: list[int] = []

    async def other_task() -> None:
        ran.append(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        writes = 0
        while not ran and writes < 500:
            await packets.send_raw(b"y")
            writes += 1
    assert ran and writes < 500, "another task never got to run during immediate writes"
    assert writes % OPS_BETWEEN_CHECKPOINTS == 0
    peer.close()


async def test_peer_close_and_reset_become_connection_closed() -> None:
    packets, peer = stream_pair()
    peer.close()
    with pytest.raises(ConnectionClosed, match="closed by peer"):
        await packets.read_packet()
    with pytest.raises(ConnectionClosed):
        for _ in range(100):  # the kernel reports EPIPE once it knows the peer is gone
            await packets.send_raw(b"z" * 65536)


async def test_a_packet_split_across_reads_is_reassembled() -> None:
    packets, peer = stream_pair()
    peer.sendall(b"\x05\x00\x00\x00hel")

    async def finish() -> None:
        await trio.sleep(0.05)
        peer.sendall(b"lo")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish)
        packet = await packets.read_packet(wait_first=True)
    assert (packet.seq, packet.payload) == (0, b"hello")
    peer.close()
