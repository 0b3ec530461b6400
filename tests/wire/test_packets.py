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
