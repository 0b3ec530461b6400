"""When the database ends an idle session, the client learns it at once (fidelity rule 8).

MariaDB 10.11 closes an idle session on ``wait_timeout`` (a reset, no packet) and on ``KILL``
(EOF; its ERR 1927 is written after the socket is shut down and never arrives); MySQL 8.0.24+
sends ERR 4031 first. Through hoopy the client must see the same at once: the server's ERR
when there is one, relayed byte for byte, then the close. Pools rely on that: mysql2's pool
drops a connection on its 'end'/'error' event, and go-sql-driver-style pools check the
socket before reuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from hoopy.audit.reader import iter_records
from hoopy.wire.messages import build_err, build_ok
from hoopy.wire.packets import frame
from tests.gateway_rig import (
    APP_PASSWORD,
    APP_USER,
    DEV_PASSWORD,
    DEV_USER,
    NODE_DIR,
    TEST_DB,
    HoopyProcess,
    require_node_mysql2,
)
from tests.rig import MariaDBServer

Start = Any

# Generous bounds for something that should happen at once (a failing run waits this long).
PROMPT = 15.0
# MySQL 8.0.24+'s ER_CLIENT_INTERACTION_TIMEOUT, framed with sequence id 1 as MariaDB frames
# its unsolicited "Connection was killed" (captured from mariadbd with strace).
TIMEOUT_ERR = frame(
    build_err(4031, "HY000", "The client was disconnected by the server because of inactivity."),
    1,
)[0]


def thread_id(conn: pymysql.connections.Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def readable_within(sock: socket.socket, timeout: float) -> bool:
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    ready, _, _ = select.select([sock], [], [], timeout)
    return bool(ready)


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a TLS close counts as EOF too)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return data
        if not chunk:
            return data
        data += chunk


def session_end_reasons(directory: Path) -> list[str]:
    return [r["reason"] for r in iter_records(directory) if r["kind"] == "session_end"]


LEGS = ["plain-plain", "tls-plain", "plain-tls", "tls-tls"]


def start_hoopy(hoopy_factory: Start, mariadb: MariaDBServer, legs: str, tmp_path: Path) -> Any:
    target: dict[str, Any] = {}
    if legs.endswith("-tls"):
        target = {"tls": "verify-ca", "tls_ca": mariadb.ca_path}
    return hoopy_factory(targets={"app": target}, audit={"directory": str(tmp_path / "audit")})


def client_for(hoopy: HoopyProcess, legs: str) -> pymysql.connections.Connection:
    if legs.startswith("tls-"):
        return hoopy.connect(ssl={"ca": hoopy.tls_cert})
    return hoopy.connect()


@pytest.mark.parametrize("legs", LEGS)
def test_pymysql_sees_a_kill_at_once(
    hoopy_factory: Start, mariadb: MariaDBServer, tmp_path: Path, legs: str
) -> None:
    hoopy = start_hoopy(hoopy_factory, mariadb, legs, tmp_path)
    conn = client_for(hoopy, legs)
    victim = thread_id(conn)
    mariadb.admin_sql(f"KILL {victim}")
    sock = conn._sock
    assert sock is not None
    assert readable_within(sock, PROMPT), "the client never learned its session was killed"
    assert read_to_eof(sock) == b"", "MariaDB sends no packet on KILL of an idle session"
    conn._sock = None  # closed under pymysql's feet
    # Everyone else is served; the session's end says why.
    other = client_for(hoopy, legs)
    assert thread_id(other) != victim
    other.close()
    hoopy.stop()
    reasons = session_end_reasons(tmp_path / "audit")
    assert "target 'app' closed the connection while the session was idle" in reasons


@pytest.mark.parametrize("legs", ["plain-plain", "tls-tls"])
def test_pymysql_sees_wait_timeout_at_once(
    hoopy_factory: Start, mariadb: MariaDBServer, tmp_path: Path, legs: str
) -> None:
    hoopy = start_hoopy(hoopy_factory, mariadb, legs, tmp_path)
    conn = client_for(hoopy, legs)
    with conn.cursor() as cur:
        cur.execute("SET SESSION wait_timeout = 1")
    sock = conn._sock
    assert sock is not None
    assert readable_within(sock, PROMPT), "wait_timeout ended the session, the client never knew"
    assert read_to_eof(sock) == b""
    conn._sock = None


# --- an ERR from the server (MySQL 8 style), through a fault-injecting hop ------------------


class InjectingHop:
    """A TCP hop between hoopy and MariaDB that can, on request, send bytes of its own
    towards hoopy and close (a fault injector in the style of toxiproxy): MariaDB 10.11
    never sends an ERR before closing an idle session, MySQL 8.0.24+ does."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket, threading.Lock]] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            lock = threading.Lock()
            self.pairs.append((down, up, lock))
            threading.Thread(target=self._pump, args=(down, up, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, lock), daemon=True).start()
            self.accepted.set()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, lock: threading.Lock | None) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if lock is None:
                    dst.sendall(data)
                else:
                    with lock:
                        dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def inject_and_close(self, data: bytes) -> None:
        down, up, lock = self.pairs[-1]
        with lock:  # the pump from the database sends nothing meanwhile
            down.sendall(data)
            down.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):  # the pump may have shut it already
            up.shutdown(socket.SHUT_RDWR)  # and the database side is gone

    def close(self) -> None:
        self.listener.close()
        for down, up, _ in self.pairs:
            down.close()
            up.close()


@pytest.fixture
def hop(mariadb: MariaDBServer) -> Iterator[InjectingHop]:
    relay = InjectingHop((mariadb.host, mariadb.port))
    yield relay
    relay.close()


def test_pymysql_gets_the_servers_err_as_sent_then_the_close(
    hoopy_factory: Start, hop: InjectingHop, tmp_path: Path
) -> None:
    hoopy = hoopy_factory(
        targets={"app": {"host": "127.0.0.1", "port": hop.port}},
        audit={"directory": str(tmp_path / "audit")},
    )
    conn = hoopy.connect()
    thread_id(conn)
    hop.inject_and_close(TIMEOUT_ERR)
    sock = conn._sock
    assert sock is not None
    assert readable_within(sock, PROMPT)
    assert read_to_eof(sock) == TIMEOUT_ERR  # byte for byte, sequence id as sent
    conn._sock = None
    hoopy.stop()
    reasons = session_end_reasons(tmp_path / "audit")
    assert (
        "target 'app' ended the session: ERROR 4031 (HY000): The client was disconnected by "
        "the server because of inactivity."
    ) in reasons


def test_pymysql_never_sees_unsolicited_bytes_that_are_not_an_err(
    hoopy_factory: Start, hop: InjectingHop
) -> None:
    hoopy = hoopy_factory(targets={"app": {"host": "127.0.0.1", "port": hop.port}})
    conn = hoopy.connect()
    thread_id(conn)
    hop.inject_and_close(frame(build_ok(), 1)[0])
    sock = conn._sock
    assert sock is not None
    assert readable_within(sock, PROMPT)
    assert read_to_eof(sock) == b"", "an unsolicited OK must not reach the client"
    conn._sock = None
    hoopy.stop()
    assert "protocol error: target 'app' sent an unsolicited packet" in hoopy.stderr_text()


# --- pools ---------------------------------------------------------------------------------


class CheckingPool:
    """A minimal pool that checks an idle connection before reuse the way go-sql-driver/mysql
    does (conncheck.go: a non-blocking read; EOF or unexpected bytes mean the server ended
    it), without a round trip to the server."""

    def __init__(self, connect: Callable[[], pymysql.connections.Connection]) -> None:
        self.connect = connect
        self.idle: list[pymysql.connections.Connection] = []
        self.discarded = 0

    def get(self) -> pymysql.connections.Connection:
        while self.idle:
            conn = self.idle.pop()
            sock = conn._sock
            if sock is not None and not readable_within(sock, 0):
                return conn
            self.discarded += 1
            conn._sock = None
        return self.connect()

    def put(self, conn: pymysql.connections.Connection) -> None:
        self.idle.append(conn)


@pytest.mark.parametrize("how", ["kill", "wait_timeout"])
def test_pymysql_pool_that_checks_before_reuse_never_hands_out_a_dead_one(
    hoopy_factory: Start, mariadb: MariaDBServer, how: str
) -> None:
    hoopy = hoopy_factory()
    pool = CheckingPool(hoopy.connect)
    conn = pool.get()
    first = thread_id(conn)
    if how == "wait_timeout":
        with conn.cursor() as cur:
            cur.execute("SET SESSION wait_timeout = 1")
    pool.put(conn)
    if how == "kill":
        mariadb.admin_sql(f"KILL {first}")
    sock = conn._sock
    assert sock is not None
    assert readable_within(sock, PROMPT), "the server ended the session; hoopy kept it open"
    again = pool.get()
    assert pool.discarded == 1
    assert thread_id(again) != first  # a live connection, and the query ran
    again.close()


def node_pool(
    mode: str, endpoint: tuple[str, int], user: str, password: str, mariadb: MariaDBServer
) -> dict[str, Any]:
    require_node_mysql2()
    env = {
        **os.environ,
        "HOOPY_HOST": endpoint[0],
        "HOOPY_PORT": str(endpoint[1]),
        "HOOPY_USER": user,
        "HOOPY_PASSWORD": password,
        "DB_HOST": mariadb.host,
        "DB_PORT": str(mariadb.port),
        "DB_USER": APP_USER,  # may KILL its own sessions, which hoopy's upstream ones are
        "DB_PASSWORD": APP_PASSWORD,
    }
    result = subprocess.run(
        ["node", str(NODE_DIR / "pool_server_close.js"), "--mode", mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


@pytest.mark.parametrize("via", ["hoopy", "direct"])
@pytest.mark.parametrize("mode", ["kill", "wait_timeout"])
def test_node_mysql2_pool_drops_the_connection_the_server_ended(
    hoopy_factory: Start, mariadb: MariaDBServer, mode: str, via: str
) -> None:
    # "direct" is the control: what the pool does without hoopy in between.
    if via == "hoopy":
        hoopy = hoopy_factory()
        out = node_pool(mode, hoopy.tcp["app"], DEV_USER, DEV_PASSWORD, mariadb)
    else:
        out = node_pool(mode, (mariadb.host, mariadb.port), APP_USER, APP_PASSWORD, mariadb)
    assert out["error"] is None, out
    assert out["event"] is not None, "the pool never heard that the server ended the session"
    assert out["second"] != out["first"], out


# --- the server shuts down -----------------------------------------------------------------


@pytest.fixture
def doomed_server() -> Iterator[MariaDBServer]:
    """A MariaDB of this test's own, to shut down (the session's server stays up)."""
    server = MariaDBServer(tls=False)
    try:
        server.start()
        server.admin_sql(f"CREATE DATABASE {TEST_DB}")
        server.create_user(APP_USER, APP_PASSWORD, grants=[f"ALL ON {TEST_DB}.*"])
        yield server
    finally:
        server.close()


def test_a_server_shutdown_reaches_the_client_as_it_reaches_a_direct_one(
    hoopy_factory: Start, doomed_server: MariaDBServer, tmp_path: Path
) -> None:
    hoopy = hoopy_factory(
        targets={"app": {"host": doomed_server.host, "port": doomed_server.port}},
        audit={"directory": str(tmp_path / "audit")},
    )
    through = hoopy.connect()
    direct = doomed_server.connect(APP_USER, APP_PASSWORD, database=TEST_DB)
    thread_id(through)
    thread_id(direct)
    doomed_server.admin_sql("SHUTDOWN")
    seen = {}
    for name, conn in (("direct", direct), ("hoopy", through)):
        sock = conn._sock
        assert sock is not None
        assert readable_within(sock, PROMPT), f"{name}: the shutdown never reached the client"
        seen[name] = read_to_eof(sock)
        conn._sock = None
    # Whatever the server says on the way down, byte for byte (MariaDB 10.11 says nothing to
    # an idle session; MySQL's ERR 1053 would be relayed as the KILL case above relays 4031).
    assert seen["hoopy"] == seen["direct"]
    # hoopy stays up for its other targets, and the record says why the session ended.
    assert hoopy.running
    hoopy.stop()
    reasons = session_end_reasons(tmp_path / "audit")
    assert reasons == ["target 'app' closed the connection while the session was idle"]
