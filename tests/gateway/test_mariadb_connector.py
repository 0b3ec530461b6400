"""MariaDB Connector/Python (libmariadb underneath): server-side cursors (COM_STMT_FETCH),
COM_RESET_CONNECTION and COM_CHANGE_USER re-authenticated by hoopy for gateway users."""

from __future__ import annotations

from typing import Any

import mariadb
import pytest
from mariadb.constants import CURSOR

from tests.gateway_rig import DEV_PASSWORD, DEV_USER, TEST_DB
from tests.rig import MariaDBServer

Start = Any


def global_status(server: MariaDBServer, name: str) -> int:
    rows = server.admin_sql(("SHOW GLOBAL STATUS LIKE %s", (name,)))
    return int(rows[0][1])


def connect(hoopy: Any, **kw: Any) -> mariadb.Connection:
    host, port = hoopy.tcp["app"]
    params = dict(host=host, port=port, user=DEV_USER, password=DEV_PASSWORD, database=TEST_DB)
    params.update(kw)
    return mariadb.connect(**params)


def _cursor_rows(conn: mariadb.Connection) -> list[tuple[Any, ...]]:
    cur = conn.cursor(cursor_type=CURSOR.READ_ONLY, prefetch_size=7)
    cur.execute("SELECT seq, CONCAT('row-', seq) FROM seq_1_to_100 WHERE seq > ?", (10,))
    rows = [cur.fetchone() for _ in range(20)] + cur.fetchall()
    cur.close()
    return rows


def test_mariadb_connector_read_only_cursor_uses_com_stmt_fetch(
    hoopy_factory: Start, mariadb: MariaDBServer
) -> None:
    hoopy = hoopy_factory()
    before = global_status(mariadb, "Com_stmt_fetch")
    direct = mariadb_direct(mariadb)
    direct_rows = _cursor_rows(direct)
    direct.close()
    direct_fetches = global_status(mariadb, "Com_stmt_fetch") - before
    conn = connect(hoopy)
    rows = _cursor_rows(conn)
    conn.close()
    assert rows == direct_rows == [(i, f"row-{i}") for i in range(11, 101)]
    assert direct_fetches >= 1
    assert global_status(mariadb, "Com_stmt_fetch") - before == 2 * direct_fetches


def mariadb_direct(server: MariaDBServer, **kw: Any) -> mariadb.Connection:
    params = dict(
        host=server.host, port=server.port, user="app", password="app-secret", database=TEST_DB
    )
    params.update(kw)
    return mariadb.connect(**params)


def _prepared_round_trip(conn: mariadb.Connection) -> tuple[Any, ...]:
    plain = conn.cursor()
    plain.execute("DROP TABLE IF EXISTS t")
    plain.execute("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20), b BLOB)")
    cur = conn.cursor(prepared=True)
    cur.executemany(
        "INSERT INTO t (v, b) VALUES (?, ?)", [("a", b"\x00\x01"), ("b", None), ("c", b"")]
    )
    inserted = cur.rowcount
    # A fresh cursor: Connector/Python 1.1.14 segfaults re-executing after executemany, even
    # connected directly.
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT id, v, b FROM t WHERE id >= ? ORDER BY id", (1,))
    return inserted, cur.fetchall()


def test_mariadb_connector_prepared_and_executemany(
    hoopy_factory: Start, mariadb: MariaDBServer, fresh_db: str
) -> None:
    hoopy = hoopy_factory()
    direct = _prepared_round_trip(mariadb_direct(mariadb, database=fresh_db, autocommit=True))
    through = _prepared_round_trip(connect(hoopy, database=fresh_db, autocommit=True))
    assert through == direct == (3, [(1, "a", b"\x00\x01"), (2, "b", None), (3, "c", b"")])


def test_mariadb_connector_reset_connection(hoopy_factory: Start) -> None:
    hoopy = hoopy_factory()
    conn = connect(hoopy)
    cur = conn.cursor()
    cur.execute("SET @x = 42")
    conn.reset()
    cur = conn.cursor()
    cur.execute("SELECT @x")
    assert cur.fetchall() == [(None,)]
    conn.close()


def test_mariadb_connector_change_user_is_verified_by_hoopy(hoopy_factory: Start) -> None:
    hoopy = hoopy_factory()
    conn = connect(hoopy)
    cur = conn.cursor()
    cur.execute("SET @x = 1")
    cur.execute("SELECT CONNECTION_ID()")
    (thread_id,) = cur.fetchone()
    conn.change_user(DEV_USER, DEV_PASSWORD, TEST_DB)
    cur = conn.cursor()
    cur.execute("SELECT @x, CURRENT_USER(), DATABASE(), CONNECTION_ID()")
    # A fresh session state as hoopy's account, on the same upstream connection.
    x, user, db, same_thread = cur.fetchone()
    assert (x, db, same_thread) == (None, TEST_DB, thread_id)
    assert user.startswith("app@")
    with pytest.raises(mariadb.Error) as info:
        conn.change_user(DEV_USER, "wrong", TEST_DB)
    assert "Access denied for user 'dev'" in str(info.value)
    with pytest.raises(mariadb.Error):  # a failed COM_CHANGE_USER closes the connection
        conn.cursor().execute("SELECT 1")
    assert "COM_CHANGE_USER to 'dev' refused" in hoopy.stderr_text()
