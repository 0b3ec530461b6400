"""A refusal never puts a connection out of step (wire-fidelity rule 3).

The audit log is made unwritable for real and writable again while the gateway runs: the
gateway's file-size limit (RLIMIT_FSIZE, set on the running process with prlimit) drops to 1
byte, so every audit write fails with EFBIG as on a full disk (Python ignores SIGXFSZ), and
back. Statements are then refused with ERR 3164, and the commands the server never answers
(COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA) must get no answer at all: every reply is checked
against the command it answers.
"""

from __future__ import annotations

import io
import resource
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mysql.connector
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hoopy.wire.packets import lenenc_str
from tests.gateway.test_raw_protocol import BASE_CAPS, RawClient, count_response
from tests.gateway_rig import DEV_PASSWORD, DEV_USER, TEST_DB, HoopyProcess
from tests.rig import MariaDBServer

Start = Any

COM_QUERY, COM_PING = 0x03, 0x0E
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA = 0x16, 0x17, 0x18
COM_STMT_CLOSE, COM_STMT_RESET = 0x19, 0x1A
MYSQL_TYPE_BLOB = 0xFC
AUDIT_UNAVAILABLE = 3164
# The gateway reopens a failed audit log at most once a second (gateway/audit_log.py).
RECOVERY_DEADLINE = 10.0


class AuditSwitch:
    """Makes the gateway's audit writes fail (as on a full disk) and succeed again."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
        self.down = False

    def fail(self) -> None:
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (1, self.hard))
        self.down = True

    def restore(self) -> None:
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (self.hard, self.hard))
        self.down = False


@pytest.fixture
def audited(hoopy_factory: Start, tmp_path: Path) -> Iterator[tuple[HoopyProcess, AuditSwitch]]:
    hoopy = hoopy_factory(
        listeners=[{"name": "app", "target": "app", "tcp": "127.0.0.1:0", "tls": False}],
        # Recovery is polled (wait_for_recovery): a short reopen interval keeps the polls few.
        audit={"directory": str(tmp_path / "audit"), "reopen_interval": 0.05},
    )
    assert hoopy.pid is not None
    switch = AuditSwitch(hoopy.pid)
    yield hoopy, switch
    switch.restore()


def raw_client(hoopy: HoopyProcess) -> RawClient:
    host, port = hoopy.tcp["app"]
    return RawClient(host, port, DEV_USER, DEV_PASSWORD, TEST_DB, BASE_CAPS)


# --- commands and what their replies must be -------------------------------------------------


def prepare(sql: str) -> bytes:
    return bytes((COM_STMT_PREPARE,)) + sql.encode()


def execute(statement_id: int, inline: bytes | None) -> bytes:
    """EXECUTE of ``SELECT ?``: the value inline, or (None) from the long data sent."""
    head = bytes((COM_STMT_EXECUTE,)) + struct.pack("<IBI", statement_id, 0, 1)
    params = b"\x00" + b"\x01" + bytes((MYSQL_TYPE_BLOB, 0))  # null bitmap, types bound
    return head + params + (lenenc_str(inline) if inline is not None else b"")


def long_data(statement_id: int, chunk: bytes) -> bytes:
    return bytes((COM_STMT_SEND_LONG_DATA,)) + struct.pack("<IH", statement_id, 0) + chunk


def by_id(command: int, statement_id: int) -> bytes:
    return bytes((command,)) + struct.pack("<I", statement_id)


Reply = list[tuple[int, bytes]]


def is_ok(reply: Reply) -> bool:
    return len(reply) == 1 and reply[0][1][0] == 0x00


def err_code(reply: Reply) -> int | None:
    if len(reply) == 1 and reply[0][1][0] == 0xFF:
        assert reply[0][0] == 1, "an ERR answering a command has sequence id 1"
        return int.from_bytes(reply[0][1][1:3], "little")
    return None


def err_message(reply: Reply) -> str:
    return reply[0][1][9:].decode()


def single_value(reply: Reply) -> bytes:
    """The one value of a one-row, one-column result (text or binary protocol)."""
    assert reply[0][1][0] == 1, f"not a one-column result set: {reply!r}"
    rows = [p for _, p in reply[2:] if p[0] not in (0xFE, 0xFF)]
    assert len(rows) == 1, reply
    row = rows[0]
    if row[0] == 0x00:  # binary row: header, null bitmap, then the value
        length = row[2]
        return row[3 : 3 + length]
    length = row[0]
    return row[1 : 1 + length]


def prepared_id(reply: Reply) -> int:
    assert reply[0][1][0] == 0x00 and len(reply) > 1, reply
    return int.from_bytes(reply[0][1][1:5], "little")


def wait_for_recovery(client: RawClient) -> None:
    # Polls the gateway's own reopen timer (no event to wait on); every probe is one
    # command with one reply, so the connection stays in step while polling.
    deadline = time.monotonic() + RECOVERY_DEADLINE
    while True:
        reply = count_response(client, b"\x03SELECT 'probe'")
        if err_code(reply) != AUDIT_UNAVAILABLE:
            assert single_value(reply) == b"probe"
            return
        assert time.monotonic() < deadline, "the audit log never recovered"
        time.sleep(0.02)


def test_raw_no_response_commands_interleaved_with_refusals(
    audited: tuple[HoopyProcess, AuditSwitch],
) -> None:
    hoopy, switch = audited
    client = raw_client(hoopy)
    a = prepared_id(count_response(client, prepare("SELECT ?")))
    b = prepared_id(count_response(client, prepare("SELECT ?")))
    switch.fail()
    # The sequence: no reply to the refused command, so PING's reply is its own OK.
    client.send(long_data(b, b"lost"))
    assert is_ok(count_response(client, bytes((COM_PING,))))
    client.send(by_id(COM_STMT_CLOSE, a))
    assert is_ok(count_response(client, bytes((COM_PING,))))
    assert err_code(count_response(client, b"\x03SELECT 1")) == AUDIT_UNAVAILABLE
    client.send(long_data(b, b"lost too"))
    client.send(by_id(COM_STMT_CLOSE, a))
    refused = count_response(client, execute(b, None))
    assert err_code(refused) == AUDIT_UNAVAILABLE
    assert "long data" in err_message(refused)
    switch.restore()
    wait_for_recovery(client)
    # The server lacks the refused chunks: B's EXECUTE stays refused until it is reset.
    refused = count_response(client, execute(b, None))
    assert err_code(refused) == AUDIT_UNAVAILABLE and "reset it" in err_message(refused)
    assert is_ok(count_response(client, by_id(COM_STMT_RESET, b)))
    client.send(long_data(b, b"kept"))
    assert single_value(count_response(client, execute(b, None))) == b"kept"
    assert single_value(count_response(client, execute(b, b"inline"))) == b"inline"
    # Long data the server holds, then its EXECUTE refused: the server keeps "held", which
    # a direct server would have consumed, so the next EXECUTE must not run with it.
    client.send(long_data(b, b"held"))
    switch.fail()
    assert err_code(count_response(client, execute(b, None))) == AUDIT_UNAVAILABLE
    switch.restore()
    wait_for_recovery(client)
    refused = count_response(client, execute(b, b"fresh"))
    assert err_code(refused) == AUDIT_UNAVAILABLE and "long data" in err_message(refused)
    assert is_ok(count_response(client, by_id(COM_STMT_RESET, b)))
    assert single_value(count_response(client, execute(b, b"fresh"))) == b"fresh"
    client.send(by_id(COM_STMT_CLOSE, b))
    assert is_ok(count_response(client, bytes((COM_PING,))))
    client.close()


# --- random sequences ----------------------------------------------------------------------


@dataclass
class Slot:
    """One ``SELECT ?`` statement as the client sees it."""

    statement_id: int | None
    chunks: list[bytes] | None = None  # long data sent since the last EXECUTE / RESET


@dataclass
class Tally:
    executed_long_data: int = 0
    refused: int = 0
    unanswered_while_down: int = 0
    kinds: set[str] = field(default_factory=set)


_COMMANDS = [
    st.tuples(st.just("ping")),
    st.tuples(st.just("query"), st.integers(0, 999)),
    st.tuples(st.just("long_data"), st.integers(0, 1), st.binary(min_size=1, max_size=6)),
    st.tuples(st.just("execute"), st.integers(0, 1), st.binary(max_size=6)),
    st.tuples(st.just("reset"), st.integers(0, 1)),
    st.tuples(st.just("reprepare"), st.integers(0, 1)),
]
# one_of picks its branches evenly: commands come three times, so the audit toggles about
# one step in ten (each recovery costs up to a second: the gateway reopens the log <= 1/s).
ACTION = st.one_of(*_COMMANDS * 3, st.tuples(st.just("audit_down")), st.tuples(st.just("audit_up")))


def run_action(
    client: RawClient, switch: AuditSwitch, slots: list[Slot], tally: Tally, action: tuple[Any, ...]
) -> None:
    kind = action[0]
    tally.kinds.add(kind)
    if kind == "ping":
        assert is_ok(count_response(client, bytes((COM_PING,))))  # PING is never audited
    elif kind == "query":
        reply = count_response(client, b"\x03SELECT " + str(action[1]).encode())
        if err_code(reply) == AUDIT_UNAVAILABLE:
            tally.refused += 1
        else:
            assert single_value(reply) == str(action[1]).encode()
    elif kind == "audit_down":
        switch.fail()
    elif kind == "audit_up":
        switch.restore()
        wait_for_recovery(client)
    else:
        slot = slots[action[1]]
        if slot.statement_id is None and kind != "reprepare":
            return  # closed and not prepared again (its PREPARE was refused)
        if kind == "long_data":
            assert slot.statement_id is not None
            client.send(long_data(slot.statement_id, action[2]))
            slot.chunks = (slot.chunks or []) + [action[2]]
            tally.unanswered_while_down += switch.down
        elif kind == "execute":
            assert slot.statement_id is not None
            sent = slot.chunks
            reply = count_response(
                client, execute(slot.statement_id, None if sent is not None else action[2])
            )
            slot.chunks = None  # the client considers it consumed either way
            if err_code(reply) == AUDIT_UNAVAILABLE:
                tally.refused += 1
            else:
                # Whatever ran, ran with exactly what the client sent.
                assert single_value(reply) == (b"".join(sent) if sent is not None else action[2])
                tally.executed_long_data += sent is not None
        elif kind == "reset":
            assert slot.statement_id is not None
            reply = count_response(client, by_id(COM_STMT_RESET, slot.statement_id))
            assert is_ok(reply) or err_code(reply) == AUDIT_UNAVAILABLE, reply
            slot.chunks = None
        elif kind == "reprepare":
            if slot.statement_id is not None:
                client.send(by_id(COM_STMT_CLOSE, slot.statement_id))
                tally.unanswered_while_down += switch.down
            reply = count_response(client, prepare("SELECT ?"))
            slot.chunks = None
            if err_code(reply) == AUDIT_UNAVAILABLE:
                slot.statement_id = None
            else:
                slot.statement_id = prepared_id(reply)


def test_raw_random_command_sequences_with_the_audit_failing_and_recovering(
    audited: tuple[HoopyProcess, AuditSwitch],
) -> None:
    hoopy, switch = audited
    client = raw_client(hoopy)
    slots = [Slot(prepared_id(count_response(client, prepare("SELECT ?")))) for _ in range(2)]
    tally = Tally()

    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    # One sequence that surely has each outcome the tally asserts, whatever is generated.
    @example(
        [
            ("audit_up",),
            ("reprepare", 0),
            ("long_data", 0, b"ab"),
            ("execute", 0, b""),  # runs with the long data
            ("audit_down",),
            ("long_data", 0, b"cd"),  # unanswered while the audit is down
            ("execute", 0, b""),  # refused
            ("query", 7),  # refused
            ("audit_up",),
            ("reprepare", 0),
        ]
    )
    @given(st.lists(ACTION, min_size=10, max_size=30))
    def sequence(actions: list[tuple[Any, ...]]) -> None:
        # One connection for every example: the client's view (slots) carries over, as the
        # server's and the gateway's state do.
        for action in actions:
            run_action(client, switch, slots, tally, action)
        # In step at the end: PING's reply is the next thing on the wire, and it is an OK.
        assert is_ok(count_response(client, bytes((COM_PING,))))

    sequence()
    switch.restore()
    wait_for_recovery(client)
    client.close()
    assert tally.refused and tally.unanswered_while_down and tally.executed_long_data, tally


# --- a real client -------------------------------------------------------------------------


def test_mysql_connector_acknowledged_inserts_are_all_in_the_table(
    audited: tuple[HoopyProcess, AuditSwitch], mariadb: MariaDBServer, fresh_db: str
) -> None:
    hoopy, switch = audited
    conn = hoopy.connect_connector(fresh_db, autocommit=True)
    setup = conn.cursor()
    setup.execute("CREATE TABLE t (id INT PRIMARY KEY, v BLOB)")
    setup.close()
    acknowledged: dict[int, bytes] = {}
    failures: list[int] = []

    def recover() -> None:
        deadline = time.monotonic() + RECOVERY_DEADLINE
        while True:
            probe = conn.cursor()
            try:
                probe.execute("SELECT 1")
                assert probe.fetchall() == [(1,)]
                return
            except mysql.connector.Error as exc:
                assert exc.errno == AUDIT_UNAVAILABLE, exc
                assert time.monotonic() < deadline, "the audit log never recovered"
                time.sleep(0.02)
            finally:
                probe.close()

    for i in range(40):
        value = f"row {i}".encode()
        param: Any = io.BytesIO(value) if i % 2 else value  # BytesIO: SEND_LONG_DATA
        if i % 4 == 1:
            switch.fail()  # the whole statement is refused
        cur = conn.cursor(prepared=True)
        try:
            cur.execute("INSERT INTO t (id, v) VALUES (?, ?)", (i, param))
            acknowledged[i] = value
        except mysql.connector.Error as exc:
            failures.append(exc.errno)
        if i % 4 == 3:
            switch.fail()  # only the cursor's COM_STMT_CLOSE is refused
        cur.close()
        if switch.down:
            switch.restore()
            recover()
    conn.close()
    assert set(failures) <= {AUDIT_UNAVAILABLE}, failures  # never 1210 / 1243
    assert len(acknowledged) >= 20
    rows = mariadb.admin_sql(f"SELECT id, v FROM `{fresh_db}`.t ORDER BY id")
    assert {int(r[0]): bytes(r[1]) for r in rows} == acknowledged
