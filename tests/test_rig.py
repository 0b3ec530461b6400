"""The test rig itself works, without hoopy: a real MariaDB reachable over TCP, socket, TLS."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pymysql
import pytest

from tests.gateway_rig import (
    ALICE_PASSWORD,
    ALICE_USER,
    APP_PASSWORD,
    APP_USER,
    TEST_DB,
    deep_merge,
    default_config,
    write_toml,
)
from tests.rig import MariaDBServer


def _one(conn: pymysql.connections.Connection, sql: str) -> tuple[object, ...]:
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
    assert row is not None
    return tuple(row)


def test_app_over_tcp(mariadb: MariaDBServer) -> None:
    # pymysql >= 1.2 negotiates TLS whenever the server offers it ("preferred").
    conn = mariadb.connect(APP_USER, APP_PASSWORD, database=TEST_DB, ssl_disabled=True)
    try:
        (version,) = _one(conn, "SELECT VERSION()")
        assert "MariaDB" in str(version)
        assert _one(conn, "SELECT CURRENT_USER(), DATABASE()") == ("app@%", TEST_DB)
        # Plain really is plain, so the TLS test below means something.
        assert _one(conn, "SHOW STATUS LIKE 'Ssl_cipher'") == ("Ssl_cipher", "")
    finally:
        conn.close()


def test_app_over_unix_socket(mariadb: MariaDBServer) -> None:
    conn = pymysql.connect(
        unix_socket=mariadb.unix_socket, user=APP_USER, password=APP_PASSWORD, database=TEST_DB
    )
    try:
        assert "MariaDB" in str(_one(conn, "SELECT VERSION()")[0])
        assert _one(conn, "SELECT CURRENT_USER()") == ("app@localhost",)
    finally:
        conn.close()


def test_app_over_tls_verifies_ca_and_hostname(mariadb: MariaDBServer) -> None:
    assert mariadb.ca_path is not None and Path(mariadb.ca_path).is_file()
    conn = mariadb.connect(APP_USER, APP_PASSWORD, ssl={"ca": mariadb.ca_path})
    try:
        assert "MariaDB" in str(_one(conn, "SELECT VERSION()")[0])
        _, cipher = _one(conn, "SHOW STATUS LIKE 'Ssl_cipher'")
        assert cipher, "TLS was not negotiated"
        _, tls_version = _one(conn, "SHOW STATUS LIKE 'Ssl_version'")
        assert str(tls_version).startswith("TLSv1.")
    finally:
        conn.close()


def test_tls_with_wrong_ca_is_rejected(mariadb: MariaDBServer, tmp_path: Path) -> None:
    from tests.rig import generate_tls_files

    other = generate_tls_files(tmp_path / "other")
    with pytest.raises(pymysql.err.OperationalError):
        mariadb.connect(APP_USER, APP_PASSWORD, ssl={"ca": str(other.ca_cert)}).close()


def test_alice_and_fresh_db(mariadb: MariaDBServer, fresh_db: str) -> None:
    conn = mariadb.connect(ALICE_USER, ALICE_PASSWORD, database=fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(10))")
            cur.execute("INSERT INTO t VALUES (1, 'é')")
            cur.execute("SELECT s FROM t")
            assert cur.fetchall() == (("é",),)
    finally:
        conn.close()


def test_wrong_password_is_rejected(mariadb: MariaDBServer) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        mariadb.connect(APP_USER, "nope").close()
    assert info.value.args[0] == 1045


def test_standalone_server_restart_and_cleanup() -> None:
    server = MariaDBServer(tls=False)
    try:
        server.start()
        port = server.port
        assert server.ca_path is None
        assert server.admin_sql("SELECT 1") == [(1,)]
        server.stop()
        assert not server.running
        server.start()
        assert server.port == port
        assert server.admin_sql("SHOW VARIABLES LIKE 'have_ssl'") == [("have_ssl", "DISABLED")]
    finally:
        server.close()
    assert not server.running
    assert not server.base_dir.exists()


def test_hoopy_config_round_trips_through_toml(mariadb: MariaDBServer, tmp_path: Path) -> None:
    config = deep_merge(
        default_config(mariadb, tmp_path, login="passthrough"),
        {"targets": {"app": {"tls": "verify-ca", "tls_ca": mariadb.ca_path}}, "users": None},
    )
    path = tmp_path / "hoopy.toml"
    write_toml(path, config)
    loaded = tomllib.loads(path.read_text())
    assert loaded == config
    assert loaded["targets"]["app"]["port"] == mariadb.port
    assert loaded["targets"]["app"]["login"] == "passthrough"
    assert loaded["targets"]["app"]["tls"] == "verify-ca"
    assert "users" not in loaded
    assert loaded["listeners"][0]["tcp"] == "127.0.0.1:0"
