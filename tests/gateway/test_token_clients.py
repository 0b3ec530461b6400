"""Token logins with stock clients: the matrix in docs/clients.md ("Tokens as the password").

Every client logs in with a token of more than 16 KiB as the password and runs ``SELECT 6*7``:
over TLS verifying hoopy's certificate, over the unix socket with no TLS option, and over plain
TCP, where hoopy refuses before the token is sent and the client must show why. MySQL 9's
``authentication_openid_connect_client`` has no client installable here, so a small raw client
speaks its wire form.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from hoopy.identity.dev_tokens import create_signing_key
from hoopy.wire.handshake import (
    CLIENT_LONG_FLAG,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    CLIENT_TRANSACTIONS,
    HandshakeResponse,
    SSLRequest,
    build_handshake_response,
    build_ssl_request,
    parse_greeting,
)
from hoopy.wire.packets import frame, lenenc_str
from tests.gateway.test_tokens import mint, token_config
from tests.gateway_rig import NODE_DIR, require_node_mysql2
from tests.rig import MariaDBServer

Start = Any
NEEDS_TLS = "token logins need an encrypted connection"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return create_signing_key(tmp_path / "keys")


@pytest.fixture
def hoopy(hoopy_factory: Start, keys: tuple[Path, Path]) -> Any:
    return hoopy_factory(**token_config(keys[1]))


@pytest.fixture
def token(keys: tuple[Path, Path]) -> str:
    token = mint(keys[0], padding="p" * 12_500)
    assert 16 * 1024 < len(token) < 20 * 1024
    return token


def assert_token_login(hoopy: Any, token: str) -> None:
    log = hoopy.stderr_text()
    assert "agent-7 (token from idp, roles developers) from" in log
    assert token not in log


# --- one small adapter per client: tls() and unix() return SELECT 6*7, plain() the error ---


class MariadbCli:
    def run(self, token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "mariadb",
                "--no-defaults",
                "-u",
                "agent",
                f"--password={token}",
                *args,
                "--batch",
                "--skip-column-names",
                "-e",
                "SELECT 6*7",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def tls(self, hoopy: Any, token: str, ca: str) -> int:
        host, port = hoopy.tcp["app"]
        result = self.run(
            token, "-h", host, "-P", str(port), f"--ssl-ca={ca}", "--ssl-verify-server-cert"
        )
        assert result.returncode == 0, result.stderr
        return int(result.stdout)

    def unix(self, hoopy: Any, token: str) -> int:
        result = self.run(token, "-S", hoopy.unix_socket["app"])
        assert result.returncode == 0, result.stderr
        return int(result.stdout)

    def plain(self, hoopy: Any, token: str) -> str:
        host, port = hoopy.tcp["app"]
        result = self.run(token, "-h", host, "-P", str(port), "--skip-ssl")
        assert result.returncode == 1, result.stdout
        return result.stderr


def _dbapi_answer(conn: Any) -> int:
    try:
        cur = conn.cursor()
        cur.execute("SELECT 6*7")
        (answer,) = cur.fetchone()
        cur.close()
        return int(answer)
    finally:
        conn.close()


class PyMySQL:
    error = pymysql.err.OperationalError

    def tls(self, hoopy: Any, token: str, ca: str) -> int:
        host, port = hoopy.tcp["app"]
        return _dbapi_answer(
            pymysql.connect(host=host, port=port, user="agent", password=token, ssl={"ca": ca})
        )

    def unix(self, hoopy: Any, token: str) -> int:
        return _dbapi_answer(
            pymysql.connect(unix_socket=hoopy.unix_socket["app"], user="agent", password=token)
        )

    def plain(self, hoopy: Any, token: str) -> str:
        host, port = hoopy.tcp["app"]
        with pytest.raises(self.error) as info:
            pymysql.connect(host=host, port=port, user="agent", password=token, ssl_disabled=True)
        assert info.value.args[0] == 1045
        return str(info.value)


class MySQLConnector:
    def __init__(self, use_pure: bool) -> None:
        self.use_pure = use_pure

    def connect(self, **options: Any) -> Any:
        import mysql.connector

        if not self.use_pure and not mysql.connector.HAVE_CEXT:
            try:
                import _mysql_connector  # noqa: F401
            except ImportError as exc:
                why = str(exc)
            else:
                why = "mysql.connector.HAVE_CEXT is False"
            pytest.skip(f"mysql-connector-python's C extension is not importable: {why}")
        return mysql.connector.connect(user="agent", use_pure=self.use_pure, **options)

    def tls(self, hoopy: Any, token: str, ca: str) -> int:
        host, port = hoopy.tcp["app"]
        return _dbapi_answer(
            self.connect(
                host=host,
                port=port,
                password=token,
                ssl_ca=ca,
                ssl_verify_cert=True,
                ssl_verify_identity=True,
            )
        )

    def unix(self, hoopy: Any, token: str) -> int:
        return _dbapi_answer(self.connect(unix_socket=hoopy.unix_socket["app"], password=token))

    def plain(self, hoopy: Any, token: str) -> str:
        import mysql.connector

        host, port = hoopy.tcp["app"]
        with pytest.raises(mysql.connector.Error) as info:
            self.connect(host=host, port=port, password=token, ssl_disabled=True)
        assert info.value.errno == 1045
        return str(info.value)


class MySQLClient:
    def tls(self, hoopy: Any, token: str, ca: str) -> int:
        import MySQLdb

        host, port = hoopy.tcp["app"]
        return _dbapi_answer(
            MySQLdb.connect(host=host, port=port, user="agent", password=token, ssl={"ca": ca})
        )

    def unix(self, hoopy: Any, token: str) -> int:
        import MySQLdb

        return _dbapi_answer(
            MySQLdb.connect(unix_socket=hoopy.unix_socket["app"], user="agent", password=token)
        )

    def plain(self, hoopy: Any, token: str) -> str:
        import MySQLdb

        host, port = hoopy.tcp["app"]
        with pytest.raises(MySQLdb.OperationalError) as info:
            MySQLdb.connect(host=host, port=port, user="agent", password=token)
        assert info.value.args[0] == 1045
        return str(info.value)


class AsyncClient:
    """asyncmy or aiomysql: asyncio libraries, run with asyncio.run (not under pytest-trio)."""

    def __init__(self, module: str) -> None:
        self.module = module

    def lib(self) -> Any:
        return pytest.importorskip(self.module)

    async def answer(self, **options: Any) -> int:
        conn = await self.lib().connect(user="agent", **options)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 6*7")
                (answer,) = await cur.fetchone()
        finally:
            conn.close()
        return int(answer)

    def tls(self, hoopy: Any, token: str, ca: str) -> int:
        host, port = hoopy.tcp["app"]
        context = ssl.create_default_context(cafile=ca)  # verifies the chain and host name
        return asyncio.run(self.answer(host=host, port=port, password=token, ssl=context))

    def unix(self, hoopy: Any, token: str) -> int:
        return asyncio.run(self.answer(unix_socket=hoopy.unix_socket["app"], password=token))

    def plain(self, hoopy: Any, token: str) -> str:
        host, port = hoopy.tcp["app"]
        errors = self.lib().errors if self.module == "asyncmy" else pymysql.err
        with pytest.raises(errors.OperationalError) as info:
            asyncio.run(self.answer(host=host, port=port, password=token))
        assert info.value.args[0] == 1045
        return str(info.value)


class NodeMysql2:
    def run(self, token: str, *args: str) -> dict[str, Any]:
        require_node_mysql2()
        result = subprocess.run(
            ["node", str(NODE_DIR / "token_login.js"), *args],
            env={**os.environ, "HOOPY_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.stdout, result.stderr
        out: dict[str, Any] = json.loads(result.stdout)
        assert result.returncode == (0 if out["ok"] else 1), result.stderr
        return out

    def tls(self, hoopy: Any, token: str, ca: str) -> int:
        host, port = hoopy.tcp["app"]
        out = self.run(token, "--host", host, "--port", str(port), "--ca", ca)
        assert out["ok"], out
        return int(out["answer"])

    def unix(self, hoopy: Any, token: str) -> int:
        out = self.run(token, "--socket", hoopy.unix_socket["app"])
        assert out["ok"], out
        return int(out["answer"])

    def plain(self, hoopy: Any, token: str) -> str:
        host, port = hoopy.tcp["app"]
        out = self.run(token, "--host", host, "--port", str(port))
        assert not out["ok"] and out["errno"] == 1045, out
        return str(out["message"])


CLIENTS: dict[str, Any] = {
    "mariadb-cli": MariadbCli(),
    "pymysql": PyMySQL(),
    "mysql-connector-pure": MySQLConnector(use_pure=True),
    "mysql-connector-c": MySQLConnector(use_pure=False),
    "mysqlclient": MySQLClient(),
    "asyncmy": AsyncClient("asyncmy"),
    "aiomysql": AsyncClient("aiomysql"),
    "node-mysql2": NodeMysql2(),
}
clients = pytest.mark.parametrize("client", list(CLIENTS.values()), ids=list(CLIENTS))


@clients
def test_large_token_over_verified_tls(client: Any, hoopy: Any, token: str) -> None:
    assert client.tls(hoopy, token, hoopy.tls_cert) == 42
    assert_token_login(hoopy, token)


@clients
def test_large_token_over_the_unix_socket(client: Any, hoopy: Any, token: str) -> None:
    assert client.unix(hoopy, token) == 42
    assert_token_login(hoopy, token)


@clients
def test_plain_tcp_is_refused_with_the_reason(client: Any, hoopy: Any, token: str) -> None:
    assert NEEDS_TLS in client.plain(hoopy, token)
    log = hoopy.stderr_text()
    assert "agent-7 (token from idp, roles developers) from" not in log and token not in log


@clients
def test_another_ca_is_not_trusted(
    client: Any, hoopy: Any, token: str, mariadb: MariaDBServer
) -> None:
    """The TLS options above really verify hoopy's certificate (the database's CA fails)."""
    assert mariadb.ca_path is not None
    with pytest.raises(Exception) as info:  # each client has its own error type
        client.tls(hoopy, token, mariadb.ca_path)
    deadline = time.monotonic() + 5
    while "TLS handshake failed" not in hoopy.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = hoopy.stderr_text()
    assert "TLS handshake failed" in log, info.value
    assert "agent-7 (token from idp, roles developers) from" not in log


# --- MySQL 9's authentication_openid_connect_client, on the wire ---

OPENID = b"authentication_openid_connect_client"
RAW_CAPS = (
    CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_TRANSACTIONS
    | CLIENT_LONG_FLAG
)


class RawConnection:
    """Just enough of a client: packets, an optional SSLRequest + TLS upgrade, COM_QUERY."""

    def __init__(self, address: tuple[str, int], ca: str | None) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(address, timeout=15)
        self.buf = b""
        _, greeting = self.read()
        self.greeting = parse_greeting(greeting)
        self.seq = 1
        if ca is not None:
            assert self.greeting.capabilities & CLIENT_SSL
            self.send(build_ssl_request(SSLRequest(RAW_CAPS | CLIENT_SSL, 1 << 24, 45)))
            context = ssl.create_default_context(cafile=ca)
            self.sock = context.wrap_socket(self.sock, server_hostname=address[0])
        self.caps = RAW_CAPS | (CLIENT_SSL if ca is not None else 0)

    def send(self, payload: bytes) -> None:
        data, self.seq = frame(payload, self.seq)
        self.sock.sendall(data)

    def read(self) -> tuple[int, bytes]:
        while len(self.buf) < 4 or len(self.buf) < 4 + int.from_bytes(self.buf[:3], "little"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("hoopy closed the connection")
            self.buf += chunk
        length = int.from_bytes(self.buf[:3], "little")
        seq, payload = self.buf[3], self.buf[4 : 4 + length]
        self.buf = self.buf[4 + length :]
        self.seq = (seq + 1) & 0xFF
        return seq, payload

    def login(self, auth_response: bytes, plugin: bytes = OPENID) -> bytes:
        """Send the HandshakeResponse41; returns hoopy's first answer."""
        self.send(
            build_handshake_response(
                HandshakeResponse(
                    capabilities=self.caps,
                    max_packet_size=1 << 24,
                    charset=45,
                    username=b"agent",
                    auth_response=auth_response,
                    auth_plugin=plugin,
                )
            )
        )
        return self.read()[1]

    def select_6_times_7(self) -> int:
        self.seq = 0
        self.send(b"\x03SELECT 6*7")
        assert self.read()[1] == b"\x01"  # one column
        self.read()  # column definition
        assert self.read()[1][0] == 0xFE  # EOF (no CLIENT_DEPRECATE_EOF)
        row = self.read()[1]
        assert row[0] == len(row) - 1, row
        assert self.read()[1][0] == 0xFE
        return int(row[1:])

    def close(self) -> None:
        self.seq = 0
        self.send(b"\x01")
        self.sock.close()


def openid_response(token: str) -> bytes:
    return b"\x01" + lenenc_str(token.encode())


def error_of(payload: bytes) -> tuple[int, str]:
    assert payload[0] == 0xFF, payload[:64]
    return int.from_bytes(payload[1:3], "little"), payload[9:].decode()


def test_openid_connect_client_sends_the_token_in_its_handshake_response(
    hoopy: Any, token: str
) -> None:
    conn = RawConnection(hoopy.tcp["app"], hoopy.tls_cert)
    answer = conn.login(openid_response(token))
    assert answer[0] == 0x00, answer[:200]
    assert conn.select_6_times_7() == 42
    conn.close()
    assert_token_login(hoopy, token)


def test_openid_connect_client_answers_an_auth_switch(hoopy: Any, token: str) -> None:
    conn = RawConnection(hoopy.tcp["app"], hoopy.tls_cert)
    switch = conn.login(b"")
    assert switch[0] == 0xFE, switch[:200]
    plugin, _, _data = switch[1:].partition(b"\x00")
    assert plugin == OPENID
    conn.send(openid_response(token))
    _, answer = conn.read()
    assert answer[0] == 0x00, answer[:200]
    assert conn.select_6_times_7() == 42
    conn.close()
    assert_token_login(hoopy, token)


def test_openid_connect_client_is_refused_on_plain_tcp(hoopy: Any, token: str) -> None:
    # A real client refuses to start without TLS; hoopy must not ask for the token either.
    conn = RawConnection(hoopy.tcp["app"], None)
    code, message = error_of(conn.login(b""))
    assert code == 1045 and "connect with TLS" in message
    assert "agent-7 (token from idp, roles developers) from" not in hoopy.stderr_text()


def test_openid_connect_client_with_a_bad_packet_is_refused(hoopy: Any, token: str) -> None:
    conn = RawConnection(hoopy.tcp["app"], hoopy.tls_cert)
    code, message = error_of(conn.login(b"\x02" + lenenc_str(token.encode())))
    assert code == 1045 and "malformed OpenID Connect login packet" in message
