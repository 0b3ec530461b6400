"""Session facts through hoopy: connection ids, KILL, COM_CHANGE_USER, login refusal, and
the TLS mode of the upstream leg.

Passthrough: clients log in with MariaDB's own accounts (alice/alice-pw); hoopy relays the
authentication, so the session upstream *is* the client's session, id included.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.conftest import HoopyFactory
from tests.gateway.clients import one, query
from tests.gateway_rig import (
    ALICE_PASSWORD,
    ALICE_USER,
    APP_PASSWORD,
    APP_USER,
    DEV_USER,
    TEST_DB,
    HoopyProcess,
)
from tests.rig import MariaDBServer, generate_tls_files

LOST_CONNECTION = {2006, 2013, 2055, 1927, 4031}


def _alice(hoopy: HoopyProcess, **kw: Any) -> pymysql.connections.Connection:
    return hoopy.connect(ALICE_USER, ALICE_PASSWORD, database=TEST_DB, **kw)


def _processlist(mariadb: MariaDBServer, thread_id: int) -> tuple[Any, ...] | None:
    rows = mariadb.admin_sql(
        (
            "SELECT ID, USER, SUBSTRING_INDEX(HOST, ':', 1), DB "
            "FROM information_schema.PROCESSLIST WHERE ID = %s",
            (thread_id,),
        )
    )
    return tuple(rows[0]) if rows else None


def _wait_gone(mariadb: MariaDBServer, thread_id: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _processlist(mariadb, thread_id) is None:
            return True
        time.sleep(0.02)
    return False


# --------------------------------------------------------------------------
# connection ids and KILL
# --------------------------------------------------------------------------


def test_connection_id_is_the_upstream_thread_id(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory
) -> None:
    hoopy = hoopy_factory("passthrough")
    conn = _alice(hoopy)
    try:
        (conn_id,) = one(conn, "SELECT CONNECTION_ID()")
        # The id in hoopy's greeting is the target's: clients that KILL by
        # mysql_thread_id() hit the right session.
        assert conn.thread_id() == conn_id
        assert _processlist(mariadb, conn_id) == (conn_id, ALICE_USER, "127.0.0.1", TEST_DB)
        # Seen from inside the session too.
        ids = [row[0] for row in query(conn, "SHOW PROCESSLIST")]
        assert conn_id in ids
        assert one(conn, "SELECT CURRENT_USER()") == ("alice@%",)
    finally:
        conn.close()
    assert _wait_gone(mariadb, conn_id), "upstream session outlived the client"

    # Gateway users: the upstream session belongs to hoopy's vaulted account. hoopy greets
    # before it connects upstream (an unauthenticated client costs the target nothing), so
    # the greeting carries an id of hoopy's own, from a range the server's ids never reach.
    gateway = hoopy_factory()
    conn = gateway.connect()
    try:
        (conn_id,) = one(conn, "SELECT CONNECTION_ID()")
        assert conn.thread_id() != conn_id
        assert 2**30 <= conn.thread_id() < 2**31
        assert _processlist(mariadb, conn_id) == (conn_id, APP_USER, "127.0.0.1", TEST_DB)
    finally:
        conn.close()
    assert _wait_gone(mariadb, conn_id)


@pytest.mark.parametrize("how", ["query", "connection", "com_process_kill"])
def test_gateway_users_kill_by_the_greeting_id(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, how: str
) -> None:
    """Clients kill by the id they were greeted with (the mysql CLI on Ctrl-C sends
    ``KILL QUERY <mysql_thread_id()>`` on a new connection): hoopy maps its own ids to the
    upstream session, and leaves every other id alone."""
    hoopy = hoopy_factory()
    victim, killer, bystander = hoopy.connect(), hoopy.connect(), hoopy.connect()
    try:
        (victim_upstream,) = one(victim, "SELECT CONNECTION_ID()")
        (bystander_upstream,) = one(bystander, "SELECT CONNECTION_ID()")
        greeting_id = victim.thread_id()
        assert greeting_id != victim_upstream
        if how == "query":
            timer = threading.Timer(
                0.3, lambda: query(killer, f"/* cancel */ KILL  QUERY {greeting_id} ;")
            )
            timer.start()
            try:
                with pytest.raises(pymysql.err.OperationalError) as interrupted:
                    query(victim, "SELECT SLEEP(20)")
            finally:
                timer.join()
            assert interrupted.value.args[0] == 1317
            assert one(victim, "SELECT CONNECTION_ID()") == (victim_upstream,)
        else:
            if how == "connection":
                query(killer, f"kill connection {greeting_id}")
            else:
                killer.kill(greeting_id)  # COM_PROCESS_KILL
            assert _wait_gone(mariadb, victim_upstream), "KILL by greeting id missed"
            with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
                query(victim, "SELECT 'after kill'")
        # The bystander was never touched; an id hoopy did not hand out is the server's.
        assert one(bystander, "SELECT CONNECTION_ID()") == (bystander_upstream,)
        unused = max(c.thread_id() for c in (victim, killer, bystander)) + 1000
        with pytest.raises(pymysql.err.OperationalError) as info:
            query(killer, f"KILL {unused}")
        assert info.value.args[0] == 1094  # ER_NO_SUCH_THREAD: passed on, not mapped
    finally:
        for conn in (victim, killer, bystander):
            conn.close()


@pytest.mark.parametrize("login", ["passthrough", "gateway_users"])
def test_kill_one_session_from_another(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, login: str
) -> None:
    hoopy = hoopy_factory(login)

    def connect() -> pymysql.connections.Connection:
        return _alice(hoopy) if login == "passthrough" else hoopy.connect()

    victim, killer, bystander = connect(), connect(), connect()
    try:
        (victim_id,) = one(victim, "SELECT CONNECTION_ID()")
        (killer_id,) = one(killer, "SELECT CONNECTION_ID()")
        (bystander_id,) = one(bystander, "SELECT CONNECTION_ID()")
        assert len({victim_id, killer_id, bystander_id}) == 3

        # KILL QUERY interrupts the running statement only (MariaDB: error 1317).
        timer = threading.Timer(0.3, lambda: query(killer, f"KILL QUERY {victim_id}"))
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(pymysql.err.OperationalError) as interrupted:
                query(victim, "SELECT SLEEP(20)")
        finally:
            timer.join()
        assert interrupted.value.args == (1317, "Query execution was interrupted")
        assert time.monotonic() - started < 10
        assert one(victim, "SELECT 'victim alive'") == ("victim alive",)

        # KILL ends the victim's session: upstream gone, next query fails as "lost".
        with killer.cursor() as cur:
            assert cur.execute(f"KILL {victim_id}") == 0
        assert _wait_gone(mariadb, victim_id), "killed session still in the processlist"
        with pytest.raises(pymysql.err.OperationalError) as info:
            query(victim, "SELECT 'after kill'")
        assert info.value.args[0] in LOST_CONNECTION, info.value.args
        # ... and stays dead (pymysql: InterfaceError once it saw the socket close).
        with pytest.raises((pymysql.err.InterfaceError, pymysql.err.OperationalError)):
            query(victim, "SELECT 'still dead'")

        # Everyone else carries on, on the same upstream sessions.
        assert one(killer, "SELECT CONNECTION_ID()") == (killer_id,)
        assert one(bystander, "SELECT CONNECTION_ID()") == (bystander_id,)
        with pytest.raises(pymysql.err.OperationalError) as info:
            query(killer, "KILL 999999999")
        assert info.value.args[0] == 1094  # ER_NO_SUCH_THREAD, relayed
        fresh = connect()
        try:
            assert one(fresh, "SELECT 1 + 1") == (2,)
        finally:
            fresh.close()
        assert hoopy.running
    finally:
        for conn in (victim, killer, bystander):
            conn.close()


# --------------------------------------------------------------------------
# COM_CHANGE_USER and login refusal
# --------------------------------------------------------------------------


def _connector(hoopy: HoopyProcess, user: str, password: str) -> Any:
    host, port = hoopy.tcp["app"]
    return mysql.connector.connect(
        host=host,
        port=port,
        user=user,
        password=password,
        database=TEST_DB,
        use_pure=True,
        ssl_disabled=True,
        autocommit=True,
        connection_timeout=10,
    )


def _who(conn: Any) -> tuple[Any, ...]:
    cur = conn.cursor()
    cur.execute("SELECT CURRENT_USER(), CONNECTION_ID(), DATABASE(), @@session.sql_mode")
    row = cur.fetchone()
    cur.close()
    return tuple(row)


def test_change_user_relayed_in_passthrough(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    hoopy = hoopy_factory("passthrough")
    conn = _connector(hoopy, ALICE_USER, ALICE_PASSWORD)
    try:
        user, conn_id, db, _ = _who(conn)
        assert (user, db) == ("alice@%", TEST_DB)
        cur = conn.cursor()
        cur.execute("SET @marker = 'before'")
        cur.close()

        conn.cmd_change_user(username=APP_USER, password=APP_PASSWORD, database=fresh_db)
        user, same_id, db, _ = _who(conn)
        # Same upstream session, now as app, in the new database; session state reset.
        assert (user, same_id, db) == ("app@%", conn_id, fresh_db)
        assert _processlist(mariadb, conn_id) == (conn_id, APP_USER, "127.0.0.1", fresh_db)
        cur = conn.cursor()
        cur.execute("SELECT @marker")
        assert cur.fetchone() == (None,)
        cur.close()

        conn.cmd_change_user(username=ALICE_USER, password=ALICE_PASSWORD, database=TEST_DB)
        assert _who(conn)[:3] == ("alice@%", conn_id, TEST_DB)

        # A wrong password: MariaDB's own 1045, and hoopy ends the session.
        with pytest.raises(mysql.connector.Error) as info:
            conn.cmd_change_user(username=APP_USER, password="wrong", database=TEST_DB)
        assert info.value.errno == 1045
        assert "Access denied for user 'app'" in info.value.msg
        with pytest.raises(mysql.connector.Error):
            _who(conn)
        assert not conn.is_connected()
        assert _wait_gone(mariadb, conn_id), "upstream session survived the refused change"
    finally:
        conn.close()

    # hoopy keeps serving.
    again = _connector(hoopy, ALICE_USER, ALICE_PASSWORD)
    try:
        assert _who(again)[0] == "alice@%"
    finally:
        again.close()
    assert hoopy.running


@pytest.mark.parametrize("login", ["passthrough", "gateway_users"])
def test_bad_password_refused_with_1045(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, login: str
) -> None:
    hoopy = hoopy_factory(login)
    user = ALICE_USER if login == "passthrough" else DEV_USER
    with pytest.raises(pymysql.err.OperationalError) as through:
        hoopy.connect(user, "not-the-password")
    assert through.value.args[0] == 1045
    if login == "passthrough":
        # MariaDB's refusal, relayed unchanged.
        with pytest.raises(pymysql.err.OperationalError) as direct:
            mariadb.connect(user, "not-the-password", ssl_disabled=True)
        assert through.value.args == direct.value.args
        assert direct.value.args == (
            1045,
            "Access denied for user 'alice'@'127.0.0.1' (using password: YES)",
        )
    else:
        assert "Access denied for user 'dev'" in through.value.args[1]
    # Unknown user, empty password: refused the same way.
    with pytest.raises(pymysql.err.OperationalError) as nobody:
        hoopy.connect("nobody", "")
    assert nobody.value.args[0] == 1045
    conn = hoopy.connect(user, ALICE_PASSWORD if login == "passthrough" else "dev-pw")
    try:
        assert one(conn, "SELECT 7 * 6") == (42,)
    finally:
        conn.close()


# --------------------------------------------------------------------------
# the upstream leg's TLS
# --------------------------------------------------------------------------


def _ssl_status(conn: pymysql.connections.Connection) -> dict[str, str]:
    rows = query(conn, "SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_cipher', 'Ssl_version')")
    return {name: value for name, value in rows}


@pytest.mark.parametrize("mode", ["verify-ca", "verify-identity", "required"])
@pytest.mark.parametrize("login", ["gateway_users", "passthrough"])
def test_upstream_tls_encrypted(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, mode: str, login: str
) -> None:
    assert mariadb.ca_path
    target: dict[str, Any] = {"tls": mode}
    if mode.startswith("verify"):
        target["tls_ca"] = mariadb.ca_path
    hoopy = hoopy_factory(login, targets={"app": target})
    # Plain TCP to hoopy: what SHOW STATUS reports is the upstream leg alone.
    conn = (
        _alice(hoopy, ssl_disabled=True)
        if login == "passthrough"
        else hoopy.connect(ssl_disabled=True)
    )
    try:
        status = _ssl_status(conn)
        assert status["Ssl_cipher"], status
        assert status["Ssl_version"].startswith("TLSv1."), status
        assert one(conn, "SELECT CURRENT_USER()")[0] in ("alice@%", "app@%")
    finally:
        conn.close()


def test_upstream_tls_off(mariadb: MariaDBServer, hoopy_factory: HoopyFactory) -> None:
    hoopy = hoopy_factory(targets={"app": {"tls": "off"}})
    assert hoopy.tls_cert
    # Even with TLS on the client leg, the upstream leg is plain.
    conn = hoopy.connect(ssl={"ca": hoopy.tls_cert})
    try:
        assert conn.get_server_info()  # logged in
        assert _ssl_status(conn) == {"Ssl_cipher": "", "Ssl_version": ""}
    finally:
        conn.close()


def test_upstream_tls_wrong_ca(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, tmp_path: Path
) -> None:
    other = generate_tls_files(tmp_path / "other-ca", common_name="not-the-mariadb-ca")
    hoopy = hoopy_factory(
        listeners=[
            {"name": "app", "target": "app", "tcp": "127.0.0.1:0", "tls": True},
            {"name": "ok", "target": "ok", "tcp": "127.0.0.1:0", "tls": True},
        ],
        targets={
            "app": {"tls": "verify-ca", "tls_ca": str(other.ca_cert)},
            "ok": {
                "host": mariadb.host,
                "port": mariadb.port,
                "login": "gateway_users",
                "user": APP_USER,
                "password_env": "HOOPY_TEST_DB_PASSWORD",
                "database": TEST_DB,
                "tls": "verify-ca",
                "tls_ca": mariadb.ca_path,
            },
        },
        roles={"developers": {"groups": ["developers"], "targets": ["app", "ok"]}},
    )
    refusals = []
    for _ in range(2):
        with pytest.raises(pymysql.err.OperationalError) as info:
            hoopy.connect()
        refusals.append(info.value.args)
    assert hoopy.running
    # The other target, through the same hoopy, still works (and is encrypted).
    conn = hoopy.connect(listener="ok")
    try:
        assert _ssl_status(conn)["Ssl_cipher"]
        assert one(conn, "SELECT CURRENT_USER()") == ("app@%",)
    finally:
        conn.close()
    for code, message in refusals:
        assert code == 1429, refusals  # ER_CONNECT_TO_FOREIGN_DATA_SOURCE
        # Names the target, that TLS failed, and why (the certificate did not verify).
        assert "target 'app'" in message and "TLS" in message, message
        assert "certificate" in message.lower(), message
