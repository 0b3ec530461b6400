"""Byte-for-byte fidelity at the protocol level, with capability sets no library here asks for.

A minimal raw client (framing from hoopy.wire, everything else spelled out here) logs in
directly to MariaDB and through hoopy with the same capability flags, sends identical commands
and compares the response bytes. This covers CLIENT_DEPRECATE_EOF (MySQL 8 clients use it;
none of the Python libraries in the matrix do), COM_FIELD_LIST, server-side cursors with
COM_STMT_FETCH, and commands no library exposes.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from hoopy.wire.handshake import (
    CLIENT_CONNECT_WITH_DB,
    CLIENT_DEPRECATE_EOF,
    CLIENT_LONG_FLAG,
    CLIENT_MULTI_RESULTS,
    CLIENT_MULTI_STATEMENTS,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_PS_MULTI_RESULTS,
    CLIENT_SECURE_CONNECTION,
    CLIENT_TRANSACTIONS,
    HandshakeResponse,
    build_handshake_response,
    caching_sha2_scramble,
    native_password_scramble,
    parse_greeting,
)
from tests.gateway_rig import APP_PASSWORD, DEV_PASSWORD
from tests.rig import MariaDBServer

Start = Any

BASE_CAPS = (
    CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_TRANSACTIONS
    | CLIENT_MULTI_RESULTS
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_LONG_FLAG
)


class RawClient:
    def __init__(self, host: str, port: int, user: str, password: str, db: str, caps: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=15)
        self.buf = b""
        _, greeting_payload = self.read()
        greeting = parse_greeting(greeting_payload)
        self.connection_id = greeting.connection_id
        plugin = greeting.auth_plugin
        if plugin == b"caching_sha2_password":
            auth = caching_sha2_scramble(password.encode(), greeting.auth_data)
        else:
            plugin = b"mysql_native_password"
            auth = native_password_scramble(password.encode(), greeting.auth_data)
        self.caps = caps & greeting.capabilities
        response = HandshakeResponse(
            capabilities=self.caps,
            max_packet_size=1 << 24,
            charset=45,
            username=user.encode(),
            auth_response=auth,
            database=db.encode(),
            auth_plugin=plugin,
        )
        self.send(build_handshake_response(response), seq=1)
        while True:
            _, payload = self.read()
            if payload[0] == 0x00:
                break
            assert payload[:2] == b"\x01\x03", payload  # caching_sha2 fast-auth success
        self.login_ok = payload

    def send(self, payload: bytes, seq: int = 0) -> None:
        self.sock.sendall(struct.pack("<I", len(payload))[:3] + bytes((seq,)) + payload)

    def read(self) -> tuple[int, bytes]:
        while len(self.buf) < 4:
            self.buf += self._recv()
        length = int.from_bytes(self.buf[:3], "little")
        while len(self.buf) < 4 + length:
            self.buf += self._recv()
        seq, payload = self.buf[3], self.buf[4 : 4 + length]
        self.buf = self.buf[4 + length :]
        return seq, payload

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        return data

    def exchange(self, payload: bytes, packets: int) -> list[tuple[int, bytes]]:
        """Send a command and read exactly ``packets`` response packets."""
        self.send(payload)
        return [self.read() for _ in range(packets)]

    def close(self) -> None:
        self.send(b"\x01")
        self.sock.close()


def count_response(client: RawClient, payload: bytes) -> list[tuple[int, bytes]]:
    """Read a response by following its shape independently of hoopy's tracker."""
    client.send(payload)
    out = []
    deprecate = bool(client.caps & CLIENT_DEPRECATE_EOF)
    command = payload[0]

    def terminator(p: bytes) -> bool:
        return p[0] == 0xFE and (len(p) < 0xFFFFFF if deprecate else len(p) < 9)

    def status_of(p: bytes) -> int:
        if p[0] == 0xFE and not deprecate:
            return int.from_bytes(p[3:5], "little")
        # OK: header, two lenenc ints (small in these tests), status
        return int.from_bytes(p[3:5], "little")

    if command == 0x09:  # COM_STATISTICS: one string packet
        return [client.read()]
    if command == 0x04:  # COM_FIELD_LIST
        while True:
            out.append(client.read())
            if out[-1][1][0] in (0xFE, 0xFF):
                return out
    if command == 0x1C:  # COM_STMT_FETCH
        while True:
            out.append(client.read())
            if out[-1][1][0] == 0xFF or terminator(out[-1][1]):
                return out
    while True:
        seq, p = client.read()
        out.append((seq, p))
        if p[0] == 0xFF:
            return out
        if p[0] == 0x00 and command != 0x16:
            if not status_of(p) & 0x08:
                return out
            continue
        if command == 0x16:  # COM_STMT_PREPARE: OK, params, [EOF], columns, [EOF]
            ncols, nparams = struct.unpack("<HH", p[5:9])
            for n in (nparams, ncols):
                for _ in range(n):
                    out.append(client.read())
                if n and not deprecate:
                    out.append(client.read())
            return out
        ncols = p[0]
        for _ in range(ncols):
            out.append(client.read())
        if not deprecate:
            out.append(client.read())  # EOF after column definitions
            if command == 0x17 and int.from_bytes(out[-1][1][3:5], "little") & 0x40:
                return out  # cursor opened
        while True:
            seq, p = client.read()
            out.append((seq, p))
            if p[0] == 0xFF:
                return out
            if terminator(p):
                break
        if not status_of(p) & 0x08:
            if command == 0x17 and status_of(p) & 0x40:
                return out
            return out


def execute(stmt_id: int, *, cursor: bool = False, params: bytes = b"") -> bytes:
    return b"\x17" + struct.pack("<IBI", stmt_id, 1 if cursor else 0, 1) + params


@pytest.fixture(params=[0, CLIENT_DEPRECATE_EOF], ids=["eof", "deprecate_eof"])
def clients(
    request: pytest.FixtureRequest, hoopy_factory: Start, mariadb: MariaDBServer, fresh_db: str
) -> Iterator[tuple[RawClient, RawClient]]:
    caps = BASE_CAPS | request.param
    setup = RawClient(mariadb.host, mariadb.port, "app", APP_PASSWORD, fresh_db, caps)
    proc = "CREATE PROCEDURE two() BEGIN SELECT 1 AS x; SELECT name FROM t ORDER BY id; END"
    assert count_response(setup, b"\x03" + proc.encode())[-1][1][0] == 0x00
    setup.close()
    hoopy = hoopy_factory(
        listeners=[{"name": "app", "target": "app", "tcp": "127.0.0.1:0", "tls": False}]
    )
    host, port = hoopy.tcp["app"]
    direct = RawClient(mariadb.host, mariadb.port, "app", APP_PASSWORD, fresh_db, caps)
    through = RawClient(host, port, "dev", DEV_PASSWORD, fresh_db, caps)
    assert through.caps == direct.caps  # hoopy offers every capability this client asks for
    assert direct.caps & CLIENT_DEPRECATE_EOF == request.param  # the variant really runs
    # The same starting state on both connections (auto-increment ids included).
    for client in (direct, through):
        for sql in (
            "CREATE TEMPORARY TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(20) "
            "NOT NULL, price DECIMAL(10,2), created DATETIME(3) DEFAULT '2024-01-02 03:04:05.678')",
            "INSERT INTO t (name, price) VALUES ('a', 1.50), ('b', NULL), ('c', 3.25)",
        ):
            assert count_response(client, b"\x03" + sql.encode())[-1][1][0] == 0x00
    yield direct, through
    direct.close()
    through.close()


def same(clients: tuple[RawClient, RawClient], payload: bytes) -> list[tuple[int, bytes]]:
    direct, through = clients
    expected = count_response(direct, payload)
    got = count_response(through, payload)
    assert got == expected
    return got


QUERIES = [
    "SELECT * FROM t ORDER BY id",
    "SELECT * FROM t WHERE id < 0",
    "SELECT 1; SELECT 'two', 2; UPDATE t SET price = price + 1 WHERE id = 1",
    "INSERT INTO t (name) VALUES ('d'), ('e')",
    "UPDATE t SET name = name WHERE id > 0",
    "SELECT 1/0",
    "SELECT * FROM missing",
    "SELECT 1; SELECT * FROM missing; SELECT 3",
    "CALL two()",
    "SET @a = 1",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_raw_com_query_responses_are_byte_identical(
    clients: tuple[RawClient, RawClient], sql: str
) -> None:
    response = same(clients, b"\x03" + sql.encode())
    assert response


def test_raw_field_list_statistics_ping_init_db(
    clients: tuple[RawClient, RawClient], fresh_db: str
) -> None:
    same(clients, b"\x04t\x00")  # COM_FIELD_LIST
    same(clients, b"\x0e")  # COM_PING
    same(clients, b"\x02" + fresh_db.encode())  # COM_INIT_DB
    same(clients, b"\x02no_such_db")
    direct, through = clients
    # COM_STATISTICS: a one-packet string whose numbers move; compare its shape.
    a, b = count_response(direct, b"\x09"), count_response(through, b"\x09")
    assert len(a) == len(b) == 1 and b[0][1].startswith(b"Uptime: ")


def test_raw_prepared_statements_cursors_and_fetch(clients: tuple[RawClient, RawClient]) -> None:
    direct, through = clients
    prep_d = count_response(direct, b"\x16SELECT id, name, price FROM t WHERE id > ? ORDER BY id")
    prep_t = count_response(through, b"\x16SELECT id, name, price FROM t WHERE id > ? ORDER BY id")
    # Statement ids are the server's, per connection: equal apart from the id itself.
    assert [(s, p[:1] + p[5:]) for s, p in prep_t] == [(s, p[:1] + p[5:]) for s, p in prep_d]
    id_d = struct.unpack("<I", prep_d[0][1][1:5])[0]
    id_t = struct.unpack("<I", prep_t[0][1][1:5])[0]
    param = b"\x00" + b"\x01" + b"\x03\x00" + struct.pack("<i", 0)  # null bitmap, types, value
    for cursor in (False, True):
        a = count_response(direct, execute(id_d, cursor=cursor, params=param))
        b = count_response(through, execute(id_t, cursor=cursor, params=param))
        assert a == b
    fetch_d = b"\x1c" + struct.pack("<II", id_d, 2)
    fetch_t = b"\x1c" + struct.pack("<II", id_t, 2)
    for _ in range(2):
        assert count_response(through, fetch_t) == count_response(direct, fetch_d)
    # COM_STMT_RESET and COM_STMT_CLOSE (no response), then the id is gone.
    assert count_response(through, b"\x1a" + struct.pack("<I", id_t)) == count_response(
        direct, b"\x1a" + struct.pack("<I", id_d)
    )
    direct.send(b"\x19" + struct.pack("<I", id_d))
    through.send(b"\x19" + struct.pack("<I", id_t))
    a = count_response(direct, execute(id_d, params=param))
    b = count_response(through, execute(id_t, params=param))
    assert a[0][1][:3] == b[0][1][:3] == b"\xff\xdb\x04"  # 1243 ER_UNKNOWN_STMT_HANDLER
    assert len(a) == len(b) == 1


def test_raw_unknown_commands_get_an_err_and_the_session_continues(
    clients: tuple[RawClient, RawClient],
) -> None:
    _, through = clients
    ((seq, err),) = through.exchange(b"\x12\x00\x00\x00\x00", 1)  # COM_BINLOG_DUMP
    assert (seq, err[:3]) == (1, b"\xff\x17\x04")  # 1047 ER_UNKNOWN_COM_ERROR
    assert b"hoopy does not relay command 0x12" in err
    assert same(clients, b"\x03SELECT 1")[0][1] == b"\x01"
