"""hoopy's upstream client against caching_sha2_password servers, honest and hostile.

MariaDB has no caching_sha2_password (10.11 offers mysql_native_password, ed25519, unix_socket,
pam and gssapi; its client library speaks caching_sha2, its server does not), so the honest
server here is a second hoopy, whose front door announces caching_sha2_password: hoopy A's
target is hoopy B's listener, B's target MariaDB.

The hostile server is a stand-in for an attacker, not for the database: a socket server that
greets without TLS, announces caching_sha2_password, asks for full authentication and offers
its own RSA key, hoping to be sent hoopy's database password.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hoopy.wire.handshake import (
    CLIENT_CONNECT_ATTRS,
    CLIENT_DEPRECATE_EOF,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_TRANSACTIONS,
    Greeting,
    build_greeting,
)
from hoopy.wire.messages import build_ok
from tests.gateway_rig import APP_PASSWORD, APP_USER, DEV_PASSWORD_ENV, TEST_DB
from tests.rig import MariaDBServer

Start = Any


@pytest.mark.parametrize("tls", ["off", "verify-identity"])
def test_pymysql_through_two_gateways_caching_sha2_upstream(hoopy_factory: Start, tls: str) -> None:
    inner = hoopy_factory()
    host, port = inner.tcp["app"]
    target: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": "dev",
        "password_env": DEV_PASSWORD_ENV,
        "tls": tls,
    }
    if tls != "off":
        target["tls_ca"] = inner.tls_cert
    outer = hoopy_factory(targets={"app": target})
    conn = outer.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER(), VERSION()")
        user, version = cur.fetchone()
        assert user.startswith("app@")
        assert "MariaDB" in version
    conn.close()
    # The inner gateway saw the outer one log in as the gateway user 'dev'.
    assert "dev (gateway_user, roles developers)" in inner.stderr_text()


def test_pymysql_wrong_upstream_password_is_an_operator_error(hoopy_factory: Start) -> None:
    inner = hoopy_factory()
    host, port = inner.tcp["app"]
    outer = hoopy_factory(
        targets={
            "app": {
                "host": host,
                "port": port,
                "user": "dev",
                "tls": "off",
                "password_env": "WRONG_PW",
            }
        },
        env={"WRONG_PW": "not-the-password"},
    )
    with pytest.raises(pymysql.err.OperationalError) as info:
        outer.connect()
    # Not the client's fault, so not its 1045, and no database account in what it is told
    # (issue: the refusal showed the account name); the gateway log has the server's words.
    assert info.value.args[0] == 1429
    assert "refused hoopy's own credentials" in info.value.args[1]
    assert "Access denied" not in info.value.args[1] and "'dev'@" not in info.value.args[1]
    assert "refused hoopy's login: Access denied for user 'dev'" in outer.stderr_text()


# -- a hostile target ------------------------------------------------------------------------

NONCE = b"attacker-chosen-nonc"
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
_CAPABILITIES = (  # everything a MySQL 8 server offers, except CLIENT_SSL
    CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_CONNECT_ATTRS
    | CLIENT_TRANSACTIONS
    | CLIENT_DEPRECATE_EOF
)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def unmix(encrypted: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """What a server holding ``key`` reads from caching_sha2's RSA-encrypted password."""
    plain = key.decrypt(encrypted, _OAEP)
    return bytes(b ^ NONCE[i % len(NONCE)] for i, b in enumerate(plain))


@dataclass
class HostileTarget:
    """Each connection: greet without TLS, then play ``mode``; records what hoopy sent.

    ``full-auth``: answer the scramble with "perform full authentication" and send its own
    public key if asked (what an impostor would do). ``unasked-key``: send its key at once.
    ``pinned``: like a real MySQL 8 whose key hoopy pinned, then accept the login.
    """

    mode: str
    key: rsa.RSAPrivateKey
    host: str = "127.0.0.1"
    packets: list[bytes] = field(default_factory=list)  # payloads hoopy sent, in order
    finished: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def __post_init__(self) -> None:
        self._closing = False
        self._listener = socket.create_server((self.host, 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        # A blocked accept() does not notice its socket closing: wake it with a connection.
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
            pass
        self._listener.close()
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        # Every connection gets the same act: hoopy also connects once at start-up to learn
        # the greeting (and closes without a word), before the login that matters.
        # ``finished``: a connection ended that carried a login (hoopy sent something, or it
        # came after that first one).
        accepted = 0
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._closing:
                conn.close()
                return
            accepted += 1
            with conn:
                conn.settimeout(20)  # a hoopy that hangs fails the test instead of hanging it
                sent_before = len(self.packets)
                try:
                    self._play(conn)
                except (OSError, ConnectionError):
                    pass
                finally:
                    if len(self.packets) > sent_before or accepted > 1:
                        self.finished.set()

    def _read(self, conn: socket.socket) -> bytes | None:
        header = _recv_exactly(conn, 4)
        if header is None:
            return None
        payload = _recv_exactly(conn, int.from_bytes(header[:3], "little")) or b""
        self.packets.append(payload)
        return payload

    def _play(self, conn: socket.socket) -> None:
        greeting = Greeting(
            server_version=b"8.4.3",
            connection_id=7,
            auth_data=NONCE,
            capabilities=_CAPABILITIES,
            charset=255,
            status=2,
            auth_plugin=b"caching_sha2_password",
        )
        _send(conn, build_greeting(greeting), 0)
        if self._read(conn) is None:  # hoopy's handshake response
            return
        if self.mode == "unasked-key":
            _send(conn, b"\x01" + public_pem(self.key), 2)
        else:
            _send(conn, b"\x01\x04", 2)
        answer = self._read(conn)
        if answer == b"\x02":  # a request for "the server's" key
            _send(conn, b"\x01" + public_pem(self.key), 4)
            answer = self._read(conn)
        if answer is None or self.mode != "pinned":
            return
        _send(conn, build_ok(status=2), 4)
        while (command := self._read(conn)) and command[:1] != b"\x01":  # until COM_QUIT
            _send(conn, build_ok(status=2), 1)


def _send(conn: socket.socket, payload: bytes, seq: int) -> None:
    conn.sendall(len(payload).to_bytes(3, "little") + bytes((seq,)) + payload)


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


_ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextlib.contextmanager
def hostile_target(mode: str, host: str = "127.0.0.1") -> Iterator[HostileTarget]:
    target = HostileTarget(mode, _ATTACKER_KEY, host)
    try:
        yield target
    finally:
        target.close()


def assert_nothing_derived_from_the_password(fake: HostileTarget) -> None:
    sent = b"".join(fake.packets)
    assert APP_PASSWORD.encode() not in sent
    # At most the handshake response (with its scramble: a challenge response, which needs
    # a dictionary attack to invert; see docs/security.md), then nothing: no key request,
    # no cleartext, nothing encrypted to the attacker's key.
    assert len(fake.packets) <= 1, fake.packets


@pytest.mark.parametrize("mode", ["full-auth", "unasked-key"])
def test_pymysql_hostile_target_without_tls_gets_no_password(
    hoopy_factory: Start, mode: str
) -> None:
    # A loopback target: tls defaults to "preferred", so hoopy logs in without TLS. Before,
    # hoopy asked for the key and sent the password encrypted to the attacker's own key.
    with hostile_target(mode) as fake:
        hoopy = hoopy_factory(targets={"app": {"port": fake.port, "tls": None}})
        with pytest.raises(pymysql.err.OperationalError) as info:
            hoopy.connect()
        assert fake.finished.wait(20)
    assert_nothing_derived_from_the_password(fake)
    code, message = info.value.args
    assert code == 1429
    assert "server_public_key" in message and 'tls = "required"' in message, message
    assert APP_PASSWORD not in message and APP_PASSWORD not in hoopy.stderr_text()


def test_pymysql_pinned_server_public_key_is_used_without_asking(
    hoopy_factory: Start, tmp_path: Path
) -> None:
    pinned = tmp_path / "public_key.pem"
    pinned.write_bytes(public_pem(_ATTACKER_KEY))  # the test owns this key: it pins it
    with hostile_target("pinned") as fake:
        hoopy = hoopy_factory(
            targets={"app": {"port": fake.port, "tls": "off", "server_public_key": str(pinned)}}
        )
        conn = hoopy.connect()
        conn.close()
        assert fake.finished.wait(20)
    handshake, encrypted, *_ = fake.packets
    assert encrypted != b"\x02"  # the key was not asked for
    assert unmix(encrypted, fake.key) == APP_PASSWORD.encode() + b"\x00"
    assert APP_PASSWORD.encode() not in handshake


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine off loopback, to reach a local server "over the
    network"; None when the machine has none."""
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source
        candidates.append(s.getsockname()[0])
    for address in candidates:
        if not address.startswith("127.") and address != "0.0.0.0":
            with contextlib.suppress(OSError), socket.create_server((address, 0)):
                return address
    return None


NETWORK_ADDRESS = non_loopback_address()
needs_network_address = pytest.mark.skipif(
    NETWORK_ADDRESS is None, reason="this machine has no non-loopback IPv4 address"
)


@needs_network_address
def test_pymysql_hostile_target_off_loopback_gets_not_even_a_scramble(
    hoopy_factory: Start,
) -> None:
    # Off loopback tls defaults to "required": a target without TLS is refused before hoopy
    # sends anything (before, the default "preferred" logged in in clear).
    assert NETWORK_ADDRESS is not None
    with hostile_target("full-auth", NETWORK_ADDRESS) as fake:
        hoopy = hoopy_factory(
            targets={"app": {"host": NETWORK_ADDRESS, "port": fake.port, "tls": None}}
        )
        with pytest.raises(pymysql.err.OperationalError) as info:
            hoopy.connect()
        assert fake.finished.wait(20)
    assert fake.packets == []
    code, message = info.value.args
    assert code == 1429 and "does not offer TLS" in message and "not on loopback" in message


@pytest.fixture(scope="module")
def mariadb_without_tls_off_loopback() -> Iterator[MariaDBServer]:
    """A real MariaDB with TLS off, listening on a non-loopback address of this machine."""
    if NETWORK_ADDRESS is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    server = MariaDBServer(tls=False)
    server.host = NETWORK_ADDRESS
    try:
        server.start()
        server.admin_sql(f"CREATE DATABASE {TEST_DB}")
        server.create_user(APP_USER, APP_PASSWORD, hosts=("%",), grants=[f"ALL ON {TEST_DB}.*"])
        yield server
    finally:
        server.close()


def test_pymysql_real_mariadb_without_tls_off_loopback_needs_an_explicit_choice(
    hoopy_factory: Start, mariadb_without_tls_off_loopback: MariaDBServer
) -> None:
    server = mariadb_without_tls_off_loopback
    target = {"host": server.host, "port": server.port, "tls": None}
    hoopy = hoopy_factory(targets={"app": target})
    with pytest.raises(pymysql.err.OperationalError) as info:
        hoopy.connect()
    assert info.value.args[0] == 1429
    assert 'set tls = "preferred" for this target' in info.value.args[1]
    # Saying so in the config is enough: then the leg is unencrypted, knowingly.
    knowing = hoopy_factory(targets={"app": {**target, "tls": "preferred"}})
    conn = knowing.connect()
    with conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone() == ("Ssl_cipher", "")
    conn.close()
