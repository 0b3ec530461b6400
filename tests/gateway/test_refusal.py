"""gateway/refusal.py without I/O: what a refused command gets, and the long-data marks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hoopy.gateway.refusal import LongData, refusal_reply
from hoopy.wire import errors
from hoopy.wire.messages import parse_err
from hoopy.wire.packets import Packet, PacketBuffer, frame, iter_packets
from hoopy.wire.params import LAST_STATEMENT_ID
from hoopy.wire.response import COMMAND_NAMES, NO_RESPONSE_COMMANDS

AUDIT = errors.AUDIT_UNAVAILABLE


def packet_of(payload: bytes) -> Packet:
    buf = PacketBuffer(1 << 26)
    buf.feed(frame(payload, 0)[0])
    packet = buf.next_packet()
    assert packet is not None
    return packet


@given(st.sampled_from(sorted(COMMAND_NAMES)), st.binary(max_size=64))
def test_only_commands_that_have_a_response_get_an_err(command: int, body: bytes) -> None:
    packet = packet_of(bytes((command,)) + body)
    reply = refusal_reply(packet, AUDIT, "no audit")
    if command in NO_RESPONSE_COMMANDS:
        assert reply is None
        return
    assert reply is not None
    (answer,) = list(iter_packets(reply))
    assert answer.seq == 1
    assert parse_err(answer.payload).code == 3164


def test_the_err_follows_a_command_of_several_packets() -> None:
    # A command over 16 MiB is two wire packets (seq 0, 1): the response starts at seq 2.
    packet = packet_of(b"\x03" + b"x" * (1 << 24))
    reply = refusal_reply(packet, AUDIT, "no audit")
    assert reply is not None and reply[3] == 2


def stmt(command: int, statement_id: int, rest: bytes = b"") -> bytes:
    return bytes((command,)) + statement_id.to_bytes(4, "little") + rest


SEND_LONG_DATA, EXECUTE, CLOSE, RESET = 0x18, 0x17, 0x19, 0x1A


def test_refused_long_data_refuses_the_next_execute_until_a_reset() -> None:
    marks = LongData()
    assert not marks
    marks.refused(stmt(SEND_LONG_DATA, 7, b"\x00\x00chunk"), AUDIT, "disk full")
    refusal = marks.check(stmt(EXECUTE, 7))
    assert refusal is not None and refusal[0] == AUDIT and "disk full" in refusal[1]
    assert marks.check(stmt(EXECUTE, 8)) is None  # other statements are unaffected
    marks.forwarded(stmt(RESET, 7), succeeded=False)
    assert marks.check(stmt(EXECUTE, 7)) is not None  # a failed reset changes nothing
    marks.forwarded(stmt(RESET, 7), succeeded=True)
    assert marks.check(stmt(EXECUTE, 7)) is None and not marks


def test_refusing_the_execute_of_held_long_data_marks_it() -> None:
    # The server keeps long data an EXECUTE hoopy refused would have consumed.
    marks = LongData()
    marks.forwarded(stmt(SEND_LONG_DATA, 3, b"\x00\x00chunk"), succeeded=True)
    assert marks and marks.check(stmt(EXECUTE, 3)) is None
    marks.refused(stmt(EXECUTE, 3), AUDIT, "disk full")
    assert marks.check(stmt(EXECUTE, 3)) is not None
    # Without held data, a refused EXECUTE leaves nothing behind.
    marks.refused(stmt(EXECUTE, 4), AUDIT, "disk full")
    assert marks.check(stmt(EXECUTE, 4)) is None
    # A forwarded EXECUTE consumes held data; CLOSE (forwarded or refused) forgets all.
    marks.forwarded(stmt(SEND_LONG_DATA, 5, b"\x00\x00x"), succeeded=True)
    marks.forwarded(stmt(EXECUTE, 5), succeeded=False)
    marks.refused(stmt(EXECUTE, 5), AUDIT, "disk full")
    assert marks.check(stmt(EXECUTE, 5)) is None
    marks.refused(stmt(CLOSE, 3), AUDIT, "disk full")
    assert not marks


def test_the_last_prepared_statement_alias_is_resolved() -> None:
    marks = LongData()
    marks.last_prepared = 9
    marks.refused(stmt(SEND_LONG_DATA, LAST_STATEMENT_ID, b"\x00\x00x"), AUDIT, "disk full")
    assert marks.check(stmt(EXECUTE, 9)) is not None
    assert marks.check(stmt(EXECUTE, LAST_STATEMENT_ID)) is not None
    marks.reset()
    assert not marks and marks.last_prepared is None


@given(st.binary(max_size=8))
def test_short_or_odd_payloads_never_raise(body: bytes) -> None:
    marks = LongData()
    for command in (SEND_LONG_DATA, EXECUTE, CLOSE, RESET, 0x03):
        payload = bytes((command,)) + body
        marks.refused(payload, AUDIT, "x")
        marks.forwarded(payload, succeeded=True)
        marks.check(payload)
