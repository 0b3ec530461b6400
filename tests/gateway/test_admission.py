"""What a client costs before it has logged in, and what failed logins cost it afterwards.

- Silent or unauthenticated clients hold no upstream connection (gateway users, tokens) or
  only a bounded number (passthrough), and buffer only small packets.
- Failed logins delay later attempts of the same user from the same address (MySQL's
  connection_control model), never anyone else's, and never refuse valid credentials;
  COM_CHANGE_USER failures count the same; hoopy's own upstream failures do not count.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import mariadb
import pymysql
import pytest

from hoopy.identity.dev_tokens import create_signing_key
from tests.gateway.test_robustness import assert_serves, read_packet
from tests.gateway_rig import (
    ALICE_PASSWORD,
    ALICE_USER,
    APP_PASSWORD,
    DEV_PASSWORD,
    DEV_USER,
    TEST_DB,
    HoopyProcess,
)
from tests.rig import MariaDBServer

Start = Any  # the hoopy_factory fixture's start()

CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_SSL = 1 << 11
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_PLUGIN_AUTH = 1 << 19
MAX_HEADER_LENGTH = 0xFFFFFF - 1  # the largest single packet a client can declare


def unauthenticated(mariadb: MariaDBServer) -> int:
    """Connections the server holds that have not logged in yet."""
    rows = mariadb.admin_sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'unauthenticated user'"
    )
    return int(rows[0][0])


def silent_clients(hoopy: HoopyProcess, stack: ExitStack, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = stack.enter_context(socket.create_connection(hoopy.tcp["app"], timeout=10))
        socks.append(sock)
    return socks


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --------------------------------------------------------------------------
# unauthenticated clients
# --------------------------------------------------------------------------


@pytest.mark.parametrize("login", ["gateway_users", "tokens"])
def test_silent_clients_hold_no_upstream_connection(
    mariadb: MariaDBServer, hoopy_factory: Start, login: str, tmp_path: Path
) -> None:
    overrides: dict[str, Any] = {}
    if login == "tokens":
        _, jwks = create_signing_key(tmp_path / "keys")
        overrides = {
            "issuers": {"dev": {"issuer": "hoopy-dev", "audience": "hoopy", "jwks_file": str(jwks)}}
        }
    hoopy = hoopy_factory(login, **overrides)
    before = unauthenticated(mariadb)
    with ExitStack() as stack:
        socks = silent_clients(hoopy, stack, 40)
        for sock in socks:
            _, greeting = read_packet(sock)  # hoopy has dealt with every one of them
            assert greeting[0] == 10
        # Each greeting carries an id of hoopy's own: no upstream session exists yet.
        assert unauthenticated(mariadb) <= before
    if login == "gateway_users":
        assert_serves(hoopy)


def test_passthrough_logins_in_flight_are_bounded(
    mariadb: MariaDBServer, hoopy_factory: Start
) -> None:
    hoopy = hoopy_factory(
        "passthrough",
        gateway={
            "max_pending_logins": 6,
            "max_pending_logins_per_address": 3,
            "handshake_timeout": 4.0,
        },
    )
    before = unauthenticated(mariadb)
    with ExitStack() as stack:
        socks = silent_clients(hoopy, stack, 3)
        for sock in socks:
            read_packet(sock)  # the target's greeting, relayed: three upstreams held
        late = silent_clients(hoopy, stack, 12)
        assert unauthenticated(mariadb) - before <= 3
        # A real client from the same address while the slots are taken: a clear refusal
        # (after it has waited half the handshake timeout), not a hang.
        with pytest.raises(pymysql.err.OperationalError) as info:
            hoopy.connect(ALICE_USER, ALICE_PASSWORD, database=TEST_DB)
        assert info.value.args[0] == 1040
        assert "too many logins in progress" in info.value.args[1]
        assert unauthenticated(mariadb) - before <= 3
        for sock in late:
            sock.close()
        for sock in socks:
            sock.close()
    # The silent ones are gone: logins work again.
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = hoopy.connect(ALICE_USER, ALICE_PASSWORD, database=TEST_DB)
            break
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != 1040 or time.monotonic() > deadline:
                raise
    conn.close()


def _handshake_header(length: int, seq: int = 1) -> bytes:
    return struct.pack("<I", length)[:3] + bytes((seq,))


@pytest.mark.parametrize("tls", [False, True])
def test_pre_auth_packets_are_small(hoopy_factory: Start, tls: bool) -> None:
    """A client that declares a 16 MiB handshake packet is refused at the header, over TLS
    too, and 20 of them do not grow the gateway's memory by what they declared."""
    hoopy = hoopy_factory()
    assert hoopy.pid is not None
    before = rss_kib(hoopy.pid)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ExitStack() as stack:
        socks = []
        for _ in range(20):
            sock: Any = stack.enter_context(socket.create_connection(hoopy.tcp["app"], timeout=10))
            read_packet(sock)
            seq = 1
            if tls:
                caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
                request = struct.pack("<IIB", caps | CLIENT_SSL, 1 << 24, 45) + bytes(23)
                sock.sendall(_handshake_header(len(request)) + request)
                sock = stack.enter_context(ctx.wrap_socket(sock))
                seq = 2
            # All but the last MiB, on every connection at once: a gateway that buffers what
            # was declared now holds 15 MiB per client. (OSError: refused at the header.)
            with contextlib.suppress(OSError):
                sock.sendall(_handshake_header(MAX_HEADER_LENGTH, seq) + bytes(15 << 20))
            socks.append(sock)
        grown_mib = (rss_kib(hoopy.pid) - before) / 1024
        assert grown_mib < 64, f"gateway grew by {grown_mib:.0f} MiB for 20 pending handshakes"
        for sock in socks:
            try:
                _, err = read_packet(sock)
            except OSError:
                continue  # closed at once (a reset may overtake the ERR)
            assert err[0] == 0xFF
            code = struct.unpack("<H", err[1:3])[0]
            assert code in (1043, 1153), err
    assert_serves(hoopy)


# --------------------------------------------------------------------------
# failed-login delays
# --------------------------------------------------------------------------

OPS_PASSWORD = "ops-pw"
OPS_ENV = {"HOOPY_TEST_OPS_PASSWORD": OPS_PASSWORD}
DELAY = 0.6


def _delayed_config(**gateway: Any) -> dict[str, Any]:
    return {
        "gateway": {
            "login_delay_after_failures": 3,
            "login_delay": DELAY,
            "login_delay_max": DELAY,
            **gateway,
        },
        "users": {
            "ops": {"password_env": "HOOPY_TEST_OPS_PASSWORD", "groups": ["developers"]},
        },
    }


def _delay_lines(hoopy: HoopyProcess, user: str) -> int:
    return sum(
        f"login of {user!r} from" in line and "delayed" in line
        for line in hoopy.stderr_text().splitlines()
    )


def _fail(hoopy: HoopyProcess, user: str = DEV_USER) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        hoopy.connect(user, "not-the-password")
    assert info.value.args[0] == 1045


def test_failed_logins_delay_only_that_user_from_that_address(hoopy_factory: Start) -> None:
    hoopy = hoopy_factory(env=OPS_ENV, **_delayed_config())
    for _ in range(3):
        _fail(hoopy)
    # Another user from the same address (every agent on a CI runner is 127.0.0.1) is not
    # held back at all, and neither is the same user over another way in (the unix socket).
    hoopy.connect("ops", OPS_PASSWORD).close()
    assert _delay_lines(hoopy, "ops") == 0
    hoopy.connect(DEV_USER, DEV_PASSWORD, unix_socket=hoopy.unix_socket["app"]).close()
    assert _delay_lines(hoopy, DEV_USER) == 0
    # Past the threshold every attempt of that pair waits, wrong or right...
    started = time.monotonic()
    _fail(hoopy)
    assert time.monotonic() - started >= DELAY * 0.9
    assert _delay_lines(hoopy, DEV_USER) == 1
    for _ in range(4):
        _fail(hoopy)
    # ... but valid credentials always get in (no outright block), only later.
    started = time.monotonic()
    hoopy.connect(DEV_USER, DEV_PASSWORD).close()
    assert time.monotonic() - started >= DELAY * 0.9
    assert _delay_lines(hoopy, DEV_USER) == 6
    # A success resets the count: the next failures are answered at once again.
    _fail(hoopy)
    _fail(hoopy)
    hoopy.connect(DEV_USER, DEV_PASSWORD).close()
    assert _delay_lines(hoopy, DEV_USER) == 6
    assert "failed logins in a row for user 'dev'" in hoopy.stderr_text()


def test_change_user_failures_are_counted_like_logins(hoopy_factory: Start) -> None:
    """An authenticated session guessing another user's password with COM_CHANGE_USER earns
    the same delays as guessing it at the door (the session ends after each failure)."""
    hoopy = hoopy_factory(env=OPS_ENV, **_delayed_config())
    host, port = hoopy.tcp["app"]
    for _ in range(3):
        conn = mariadb.connect(host=host, port=port, user="ops", password=OPS_PASSWORD)
        with pytest.raises(mariadb.Error) as info:
            conn.change_user(DEV_USER, "guess", TEST_DB)
        assert info.value.errno == 1045
        conn.close()
    assert _delay_lines(hoopy, DEV_USER) == 0
    # The fourth guess waits, through COM_CHANGE_USER and at the door alike.
    conn = mariadb.connect(host=host, port=port, user="ops", password=OPS_PASSWORD)
    started = time.monotonic()
    with pytest.raises(mariadb.Error):
        conn.change_user(DEV_USER, "guess", TEST_DB)
    assert time.monotonic() - started >= DELAY * 0.9
    conn.close()
    assert _delay_lines(hoopy, DEV_USER) == 1
    hoopy.connect(DEV_USER, DEV_PASSWORD).close()
    assert _delay_lines(hoopy, DEV_USER) == 2
    # And a right change-user resets the count like a login does.
    conn = mariadb.connect(host=host, port=port, user="ops", password=OPS_PASSWORD)
    conn.change_user(DEV_USER, DEV_PASSWORD, TEST_DB)
    conn.close()


def test_target_refusing_hoopys_credentials_is_not_the_clients_fault(
    hoopy_factory: Start, tmp_path: Path
) -> None:
    """A rotated database password is an operator problem: the client is told so without the
    database account's name, and its refusals do not count toward its login delays."""
    secret = tmp_path / "db-password"
    secret.write_text("rotated-away")
    secret.chmod(0o600)
    hoopy = hoopy_factory(
        env=OPS_ENV,
        targets={"app": {"password_env": None, "password_file": str(secret)}},
        **_delayed_config(),
    )
    for _ in range(5):
        with pytest.raises(pymysql.err.OperationalError) as info:
            hoopy.connect()
        code, message = info.value.args
        assert code == 1429, info.value.args
        assert "refused hoopy's own credentials" in message
        assert "Access denied" not in message and "'app'@" not in message
    assert "Access denied for user 'app'" in hoopy.stderr_text()  # the log has the detail
    secret.write_text(APP_PASSWORD)
    hoopy.connect().close()
    assert _delay_lines(hoopy, DEV_USER) == 0


def test_passthrough_failures_are_delayed_per_user(
    mariadb: MariaDBServer, hoopy_factory: Start
) -> None:
    config = _delayed_config()
    config["users"] = None
    hoopy = hoopy_factory("passthrough", **config)
    for _ in range(3):
        with pytest.raises(pymysql.err.OperationalError) as info:
            hoopy.connect(ALICE_USER, "wrong", database=TEST_DB)
        assert info.value.args[0] == 1045
    started = time.monotonic()
    conn = hoopy.connect(ALICE_USER, ALICE_PASSWORD, database=TEST_DB)
    assert time.monotonic() - started >= DELAY * 0.9
    conn.close()
    assert _delay_lines(hoopy, ALICE_USER) == 1
