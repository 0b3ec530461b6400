"""The compressed protocol codec: frames in, packets out; packet bytes in, frames out."""

from __future__ import annotations

import struct
import zlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.wire.compress import (
    COMPRESSED_HEADER_SIZE,
    MAX_FRAME_INPUT,
    MIN_COMPRESS_LENGTH,
    Algorithm,
    CompressedProtocol,
    Compression,
    CompressionError,
    negotiate,
)
from hoopy.wire.handshake import CLIENT_COMPRESS, CLIENT_ZSTD_COMPRESSION_ALGORITHM
from hoopy.wire.packets import HEADER_SIZE, ProtocolError, frame

ZLIB = Compression(Algorithm.ZLIB, 1)
ZSTD = Compression(Algorithm.ZSTD, 3)
LIMIT = 64 * 1024 * 1024


def protocol(compression: Compression = ZLIB, limit: int = LIMIT) -> CompressedProtocol:
    return CompressedProtocol(compression, limit)


def raw_frame(body: bytes, seq: int, size: int) -> bytes:
    """A frame built by hand (as a client would), independent of the codec under test."""
    return struct.pack("<I", len(body))[:3] + bytes((seq,)) + struct.pack("<I", size)[:3] + body


def zlib_frame(data: bytes, seq: int = 0) -> bytes:
    return raw_frame(zlib.compress(data), seq, len(data))


def frames_of(data: bytes) -> list[tuple[int, int, bytes]]:
    """(seq, declared size, body) of each frame in ``data``."""
    out = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "little")
        seq = data[pos + 3]
        size = int.from_bytes(data[pos + 4 : pos + 7], "little")
        out.append((seq, size, data[pos + 7 : pos + 7 + length]))
        pos += 7 + length
    assert pos == len(data)
    return out


def inflate(compression: Compression, size: int, body: bytes) -> bytes:
    if size == 0:
        return body
    if compression.algorithm is Algorithm.ZLIB:
        return zlib.decompress(body)
    return zstandard.ZstdDecompressor().decompress(body)


def read_all(p: CompressedProtocol) -> list[bytes]:
    payloads = []
    while (packet := p.next_packet()) is not None:
        payloads.append(packet.payload)
    return payloads


# --- negotiation ----------------------------------------------------------------------------


def test_negotiation_follows_the_clients_bits_and_prefers_zlib() -> None:
    assert negotiate(0, None) is None
    assert negotiate(CLIENT_COMPRESS, None) == Compression(Algorithm.ZLIB, 1)
    # "Compression": with both bits set, zlib is used.
    both = CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION_ALGORITHM
    assert negotiate(both, 9) == Compression(Algorithm.ZLIB, 1)
    assert negotiate(CLIENT_ZSTD_COMPRESSION_ALGORITHM, 2) == Compression(Algorithm.ZSTD, 2)
    # 0 or nothing: MySQL's default level 3; higher levels cost hoopy's CPU: at most 3.
    assert negotiate(CLIENT_ZSTD_COMPRESSION_ALGORITHM, None) == Compression(Algorithm.ZSTD, 3)
    assert negotiate(CLIENT_ZSTD_COMPRESSION_ALGORITHM, 19) == Compression(Algorithm.ZSTD, 3)


# --- round trips ----------------------------------------------------------------------------

payloads = st.lists(
    st.one_of(
        st.binary(max_size=80),
        st.builds(lambda c, n: c * n, st.binary(min_size=1, max_size=3), st.integers(0, 3000)),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    payloads,
    st.sampled_from([ZLIB, ZSTD]),
    st.lists(st.integers(1, 4000), min_size=1, max_size=8),
    st.lists(st.integers(1, 4000), min_size=1, max_size=8),
)
def test_round_trip_through_any_chunking(
    items: list[bytes], compression: Compression, out_cuts: list[int], in_cuts: list[int]
) -> None:
    """Packet bytes handed over in arbitrary chunks (as a relay does) come out as the same
    packets, however the frames are then cut on their way in."""
    stream = b"".join(frame(p, i)[0] for i, p in enumerate(items))
    sender = protocol(compression)
    wire = bytearray()
    pos = 0
    i = 0
    while pos < len(stream):
        cut = out_cuts[i % len(out_cuts)]
        wire += sender.frame(stream[pos : pos + cut])
        pos += cut
        i += 1
    assert sender.pending == 0  # the stream ended on a packet boundary: nothing held back
    # Every frame holds whole packets (this stream has none too big for one frame).
    for _seq, size, body in frames_of(bytes(wire)):
        inner = inflate(compression, size, body)
        assert list(frame_lengths(inner)) and sum(frame_lengths(inner)) == len(inner)
        assert size == 0 or size == len(inner)
        assert size != 0 or len(inner) < MIN_COMPRESS_LENGTH or len(body) <= len(inner)
    receiver = protocol(compression)
    got: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(wire):
        cut = in_cuts[i % len(in_cuts)]
        receiver.feed(bytes(wire[pos : pos + cut]))
        got += read_all(receiver)
        pos += cut
        i += 1
    assert got == items


def frame_lengths(inner: bytes) -> list[int]:
    """Wire sizes of the whole packets in ``inner``; fails on a cut packet."""
    out = []
    pos = 0
    while pos < len(inner):
        length = int.from_bytes(inner[pos : pos + 3], "little")
        assert pos + HEADER_SIZE + length <= len(inner), "frame ends inside a packet"
        out.append(HEADER_SIZE + length)
        pos += HEADER_SIZE + length
    return out


def test_small_payloads_are_stored_and_large_ones_compressed() -> None:
    p = protocol()
    small = p.frame(frame(b"\x03SELECT 1", 0)[0])
    assert small[4:7] == b"\x00\x00\x00"  # stored: uncompressed length 0
    big = p.frame(frame(b"\x03SELECT '" + b"x" * 500 + b"'", 0)[0])
    ((_, size, body),) = frames_of(big)
    assert size == HEADER_SIZE + 510 and len(body) < size
    # Incompressible data is stored even when long.
    noise = bytes((i * 7919) % 251 for i in range(300))
    ((_, size, _),) = frames_of(p.frame(frame(zlib.compress(noise, 9), 0)[0]))
    assert size == 0


def test_compressed_sequence_ids_follow_the_last_frame_received() -> None:
    """The response's frames continue from the command's (each command restarts at 0)."""
    p = protocol()
    p.feed(raw_frame(frame(b"\x03SELECT 1", 0)[0], 0, 0))
    assert read_all(p) == [b"\x03SELECT 1"]
    out = p.frame(frame(b"\x00" * 7, 1)[0]) + p.frame(frame(b"\x00" * 7, 2)[0])
    assert [seq for seq, _, _ in frames_of(out)] == [1, 2]
    # The next command starts again at 0; its answer at 1.
    p.feed(raw_frame(frame(b"\x0e", 0)[0], 0, 0))
    assert read_all(p) == [b"\x0e"]
    assert [seq for seq, _, _ in frames_of(p.frame(frame(b"\x00" * 7, 1)[0]))] == [1]
    # A long exchange wraps at 256.
    p.feed(raw_frame(frame(b"\x0e", 0)[0], 255, 0))
    read_all(p)
    assert frames_of(p.frame(frame(b"\x00", 1)[0]))[0][0] == 0


def test_a_packet_cut_by_a_chunk_waits_for_its_end() -> None:
    p = protocol()
    stream = frame(b"\x01" * 10, 1)[0] + frame(b"\x02" * 300, 2)[0]
    first = p.frame(stream[:100])
    assert frames_of(first) and p.pending == 100 - 14
    ((_, _, body),) = frames_of(first)
    assert inflate(ZLIB, 0, body) == stream[:14]
    rest = p.frame(stream[100:])
    assert p.pending == 0
    ((_, size, body),) = frames_of(rest)
    assert inflate(ZLIB, size, body) == stream[14:]
    assert p.frame(b"") == b""


def test_a_packet_bigger_than_a_frame_is_split_in_two_frames() -> None:
    """Whole packets before it make their own frame; the big one is two frames, its header
    in the first (mysql-connector reads at most one more frame to complete a packet)."""
    before = frame(b"\x00" * 20, 0)[0]
    big = frame(b"b" * (MAX_FRAME_INPUT + 100), 1)[0]  # two wire packets: 0xFFFFFF, then 101
    p = protocol()
    out = frames_of(p.frame(before + big))
    inner = [inflate(ZLIB, size, body) for _, size, body in out]
    assert inner[0] == before
    assert b"".join(inner) == before + big
    assert all(len(i) <= MAX_FRAME_INPUT for i in inner)
    first_packet = HEADER_SIZE + 0xFFFFFF
    assert len(inner[1]) + len(inner[2]) == first_packet and len(inner[1]) >= HEADER_SIZE
    assert inner[3] == big[first_packet:]
    q = protocol()
    q.feed(b"".join(raw_frame(body, seq, size) for seq, size, body in out))
    assert read_all(q) == [b"\x00" * 20, b"b" * (MAX_FRAME_INPUT + 100)]


def test_unread_puts_inflated_bytes_back_in_front() -> None:
    p = protocol()
    p.feed(zlib_frame(b"abcdef" * 20))
    data = p.take_inflated()
    assert data == b"abcdef" * 20 and p.take_inflated() == b""
    p.unread(data[60:])
    p.feed(zlib_frame(b"XYZ" * 30, 1))
    assert p.buffered == 60
    assert p.take_inflated() == data[60:]
    assert p.take_inflated() == b"XYZ" * 30


# --- hostile frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (raw_frame(zlib.compress(b"a" * 100), 0, 99), "more than its declared 99"),
        (raw_frame(zlib.compress(b"a" * 100), 0, 101), "100 bytes, not its declared 101"),
        (raw_frame(b"not zlib at all", 0, 50), "not a valid zlib stream"),
        (raw_frame(zlib.compress(b"a" * 100)[:-4], 0, 100), "zlib stream is truncated"),
        (raw_frame(zlib.compress(b"a" * 100)[:6], 0, 100), "not its declared 100"),
        (raw_frame(zlib.compress(b"a" * 100) + b"junk", 0, 100), "bytes after its zlib"),
        (raw_frame(b"", 0, 100), "declares 100 bytes but carries none"),
    ],
)
def test_a_frame_that_does_not_inflate_to_its_declared_length_is_an_error(
    wire: bytes, message: str
) -> None:
    p = protocol()
    p.feed(wire)
    with pytest.raises(CompressionError, match=message):
        p.next_packet()


def test_an_inflate_bomb_stops_at_the_declared_length() -> None:
    """1 GiB of zeros deflates to about 1 MiB; declared as 1000 bytes, it is refused after
    inflating 1000 (zlib's max_length), never allocated."""
    bomb = zlib.compressobj(9)
    body = b"".join(bomb.compress(b"\x00" * (1 << 20)) for _ in range(64)) + bomb.flush()
    p = protocol()
    p.feed(raw_frame(body, 0, 1000))
    with pytest.raises(CompressionError, match="more than its declared 1000"):
        p.next_packet()


def test_a_zstd_frame_header_that_lies_about_its_size_is_refused_before_inflating() -> None:
    body = zstandard.ZstdCompressor(write_content_size=True).compress(b"\x00" * (8 << 20))
    p = protocol(ZSTD)
    p.feed(raw_frame(body, 0, 100))
    with pytest.raises(CompressionError, match="zstd header says 8388608 bytes"):
        p.next_packet()
    # Without a content size in its header, the output stops at the declared size.
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * (8 << 20))
    p = protocol(ZSTD)
    p.feed(raw_frame(unsized, 0, 100))
    with pytest.raises(CompressionError):
        p.next_packet()
    p = protocol(ZSTD)
    p.feed(raw_frame(b"garbage, no zstd magic", 0, 100))
    with pytest.raises(CompressionError, match="not a valid zstd frame"):
        p.next_packet()


def test_frames_are_inflated_only_as_packets_need_them() -> None:
    """A run of frames that each inflate to 16 MiB is read one frame at a time, so the
    packet limit stops it after the first: memory stays bounded by one frame."""
    huge = b"\x00" * (MAX_FRAME_INPUT - 10)
    # The inflated stream declares one packet of 0xFFFFFF bytes (a continuation follows).
    head = struct.pack("<I", 0xFFFFFF)[:3] + b"\x00"
    frames = zlib_frame(head + huge[: -len(head)]) + b"".join(
        zlib_frame(huge, i) for i in range(1, 30)
    )
    p = protocol(limit=1 << 20)
    p.feed(frames)
    with pytest.raises(ProtocolError, match="exceeds the configured limit"):
        p.next_packet()
    assert p.buffered <= MAX_FRAME_INPUT  # one frame inflated, not thirty


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=COMPRESSED_HEADER_SIZE, max_size=200), st.sampled_from([ZLIB, ZSTD]))
def test_arbitrary_bytes_give_packets_an_error_or_a_wait(data: bytes, c: Compression) -> None:
    """Never a crash or a hang: a ProtocolError, packets, or None (waiting for more)."""
    p = protocol(c, limit=1 << 16)
    p.feed(data)
    try:
        for _ in range(len(data)):
            if p.next_packet() is None:
                break
    except ProtocolError:
        pass
