"""Framing and basic data types: bytes in, packets out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopy.wire.packets import (
    MAX_PACKET_PAYLOAD,
    PacketBuffer,
    ProtocolError,
    Reader,
    frame,
    header,
    iter_packets,
    lenenc_int,
    lenenc_str,
    with_seq,
)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_lenenc_int_round_trip(value: int) -> None:
    encoded = lenenc_int(value)
    r = Reader(encoded)
    assert r.lenenc_int() == value
    assert r.remaining() == 0


def test_lenenc_int_boundaries() -> None:
    # "Protocol::LengthEncodedInteger": < 251 one byte; 0xFC 2 bytes; 0xFD 3; 0xFE 8.
    assert lenenc_int(250) == b"\xfa"
    assert lenenc_int(251) == b"\xfc\xfb\x00"
    assert lenenc_int(0xFFFF) == b"\xfc\xff\xff"
    assert lenenc_int(0x10000) == b"\xfd\x00\x00\x01"
    assert lenenc_int(0x1000000) == b"\xfe" + (0x1000000).to_bytes(8, "little")
    with pytest.raises(ValueError):
        lenenc_int(1 << 64)


def test_reader_rejects_0xff_and_overruns() -> None:
    with pytest.raises(ProtocolError):
        Reader(b"\xff").lenenc_int()
    with pytest.raises(ProtocolError):
        Reader(b"\xfc\x01").lenenc_int()
    with pytest.raises(ProtocolError):
        Reader(b"\x05abc").lenenc_str()
    with pytest.raises(ProtocolError):
        Reader(b"no terminator").null_str()


@given(st.binary(max_size=300))
def test_lenenc_str_round_trip(value: bytes) -> None:
    assert Reader(lenenc_str(value)).lenenc_str() == value


@given(st.binary(max_size=2000), st.integers(0, 255), st.data())
def test_frame_then_parse_in_any_chunks(payload: bytes, seq: int, data: st.DataObject) -> None:
    wire, next_seq = frame(payload, seq)
    assert next_seq == (seq + 1) & 0xFF
    buf = PacketBuffer(1 << 20)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=5)))
    packets = []
    last = 0
    for cut in [*cuts, len(wire)]:
        buf.feed(wire[last:cut])
        last = cut
        while (p := buf.next_packet()) is not None:
            packets.append(p)
    assert len(packets) == 1
    assert packets[0].payload == payload
    assert packets[0].raw == wire
    assert packets[0].seq == seq


@pytest.mark.parametrize("extra", [0, 1, MAX_PACKET_PAYLOAD])
def test_payloads_over_16_mib_are_split_and_rejoined(extra: int) -> None:
    # "Sending More Than 16Mb": 0xFFFFFF-byte packets, then a shorter (maybe empty) one.
    payload = bytes(range(256)) * ((MAX_PACKET_PAYLOAD + extra) // 256 + 1)
    payload = payload[: MAX_PACKET_PAYLOAD + extra]
    wire, next_seq = frame(payload, 3)
    headers = []
    pos = 0
    while pos < len(wire):
        length = int.from_bytes(wire[pos : pos + 3], "little")
        headers.append((length, wire[pos + 3]))
        pos += 4 + length
    assert headers[0] == (MAX_PACKET_PAYLOAD, 3)
    assert headers[-1][0] < MAX_PACKET_PAYLOAD
    assert [s for _, s in headers] == list(range(3, 3 + len(headers)))
    assert next_seq == 3 + len(headers)
    (packet,) = list(iter_packets(wire, max_payload=1 << 26))
    assert packet.payload == payload
    assert packet.next_seq == next_seq


def test_limit_on_buffered_payload() -> None:
    buf = PacketBuffer(max_payload=10)
    buf.feed(frame(b"x" * 11, 0)[0])
    with pytest.raises(ProtocolError, match="exceeds"):
        buf.next_packet()


def test_with_seq_renumbers_every_packet() -> None:
    wire = frame(b"a", 0)[0] + frame(b"bc", 7)[0]
    assert [p.seq for p in iter_packets(with_seq(wire, 5))] == [5, 6]


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    st.integers(0, 255),
    st.data(),
)
def test_large_packets_are_assembled_as_they_arrive(
    payloads: list[bytes], seq: int, data: st.DataObject
) -> None:
    # With the large-packet threshold at 64 bytes, every longer packet takes the path that
    # moves bytes into its bytearrays read by read; packets that follow it in the same read
    # stay buffered. Cut anywhere (inside headers too), the packets are what was framed.
    from hoopy.wire import packets as packets_module

    wire = b"".join(frame(p, seq)[0] for p in payloads)
    old = packets_module.LARGE_PACKET
    packets_module.LARGE_PACKET = 64
    try:
        buf = PacketBuffer(1 << 20)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
        got = []
        fed = 0
        last = 0
        for cut in [*cuts, len(wire)]:
            buf.feed(wire[last:cut])
            fed += cut - last
            last = cut
            while (p := buf.next_packet()) is not None:
                got.append(p)
            assert buf.buffered == fed - sum(len(p.raw) for p in got)
    finally:
        packets_module.LARGE_PACKET = old
    assert [bytes(p.payload) for p in got] == payloads
    assert b"".join(bytes(p.raw) for p in got) == wire
    assert all(p.seq == seq and p.next_seq == (seq + 1) & 0xFF for p in got)


def test_a_large_packet_over_the_limit_is_refused_at_its_header() -> None:
    buf = PacketBuffer(max_payload=(1 << 21))
    buf.feed(header((1 << 21) + 1, 0))  # nothing of the payload has arrived
    with pytest.raises(ProtocolError, match="exceeds"):
        buf.next_packet()
    # Split across wire packets: the limit holds for the logical packet as a whole.
    buf = PacketBuffer(max_payload=MAX_PACKET_PAYLOAD + 10)
    buf.feed(header(MAX_PACKET_PAYLOAD, 0) + b"x" * MAX_PACKET_PAYLOAD)
    assert buf.next_packet() is None
    with pytest.raises(ProtocolError, match="exceeds"):
        buf.feed(header(11, 1))  # the header that takes it over: refused as it arrives
        buf.next_packet()


def test_a_multi_packet_command_in_pieces_keeps_its_bytes() -> None:
    payload = bytes(range(256)) * (MAX_PACKET_PAYLOAD // 256 + 5)
    wire, _ = frame(payload, 7)
    follower, _ = frame(b"\x0e", 0)  # a COM_PING right behind it
    stream = wire + follower
    buf = PacketBuffer(1 << 26)
    got = []
    for start in range(0, len(stream), 250_001):  # odd-sized reads, headers split
        buf.feed(stream[start : start + 250_001])
        while (p := buf.next_packet()) is not None:
            got.append(p)
        if not got:
            assert buf.buffered == min(len(stream), start + 250_001)
    assert [bytes(p.payload) for p in got] == [payload, b"\x0e"]
    assert bytes(got[0].raw) == wire
    assert (got[0].seq, got[0].next_seq) == (7, 9)


def test_take_all_returns_a_large_packet_in_progress() -> None:
    wire, _ = frame(b"y" * (2 << 20), 0)
    buf = PacketBuffer(1 << 26)
    buf.feed(wire[:300_000])
    assert buf.next_packet() is None
    buf.feed(wire[300_000:300_002])
    assert buf.take_all() == wire[:300_002]
    assert buf.buffered == 0
