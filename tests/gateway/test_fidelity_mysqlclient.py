"""mysqlclient (MySQLdb, on MariaDB Connector/C) through hoopy sees what it sees directly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import MySQLdb
import MySQLdb.cursors
import pytest

from tests.gateway.fidelity import (
    ALL_TYPES_SETUP,
    BIG_TABLE_SETUP,
    ERROR_CASES,
    ERROR_SETUP,
    MODES,
    PROCEDURE_SETUP,
    STRICT_SQL_MODE,
    HoopyPool,
    Leg,
    Pair,
    big_blob,
    hoopy_pool,
)
from tests.rig import MariaDBServer


@pytest.fixture(scope="module")
def pool(mariadb: MariaDBServer) -> Iterator[HoopyPool]:
    yield from hoopy_pool(mariadb)


@pytest.fixture(params=MODES)
def pair(request: pytest.FixtureRequest, pool: HoopyPool, fresh_db: str) -> Pair:
    return pool.pair(request.param, fresh_db)


def connect(leg: Leg, **kw: Any) -> MySQLdb.connections.Connection:
    params: dict[str, Any] = {
        "host": leg.host,
        "port": leg.port,
        "user": leg.user,
        "password": leg.password,
        "database": leg.database,
        "charset": "utf8mb4",
        "connect_timeout": 10,
        "autocommit": True,
    }
    params.update(kw)
    return MySQLdb.connect(**params)


def error_facts(conn: MySQLdb.connections.Connection, exc: MySQLdb.MySQLError) -> tuple[Any, ...]:
    return (type(exc).__name__, *exc.args, conn.sqlstate())


# --- result sets and metadata ---------------------------------------------------------------


def test_mysqlclient_all_types_rows_and_metadata(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            cur = conn.cursor()
            out["rowcount"] = cur.execute("SELECT * FROM all_types ORDER BY id")
            out["table"] = (cur.fetchall(), cur.description, conn.field_count())
            cur.execute(
                "SELECT 1 AS one, -1.50 AS dec_lit, 'x' AS s, NULL AS n, 2e0 AS dbl, "
                "CAST(18446744073709551615 AS UNSIGNED) AS big, CURRENT_USER() AS who, "
                "JSON_OBJECT('a', 1) AS js, CONVERT('\u00e9' USING latin1) AS l1"
            )
            out["expressions"] = (cur.fetchall(), cur.description)
            # Unbuffered (mysql_use_result): the same rows and metadata, streamed.
            scur = conn.cursor(MySQLdb.cursors.SSCursor)
            scur.execute("SELECT * FROM all_types ORDER BY id")
            out["streamed"] = (scur.fetchall(), [d[:2] + d[3:] for d in scur.description])
            scur.close()
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=ALL_TYPES_SETUP)
    rows = direct["table"][0]
    assert len(rows) == 3 and rows[0][10] == 2**64 - 1
    assert direct["expressions"][0][0][6] == f"{pair.upstream_user}@%"
    assert through["table"] == direct["table"]
    assert through["expressions"] == direct["expressions"]
    assert through == direct


def test_mysqlclient_affected_rows_insert_ids_info_and_warnings(pair: Pair) -> None:
    statements = (
        "SET SESSION sql_mode = ''",
        "INSERT INTO ai (v) VALUES (1)",
        "INSERT INTO ai (v) VALUES (2), (3), (4)",
        "SELECT LAST_INSERT_ID()",
        "UPDATE ai SET v = 1 WHERE v IN (1, 2)",
        "INSERT INTO ai (v, note) VALUES (7, 'far too long'), (8, 'ok')",
        "SHOW WARNINGS",
        "INSERT INTO ai (id, v) VALUES (1, 0) ON DUPLICATE KEY UPDATE v = 42",
        "INSERT INTO ai (v) SELECT v FROM ai WHERE id < 3",
        "LOAD DATA INFILE '/nonexistent' INTO TABLE ai",
        "DELETE FROM ai WHERE v > 5",
        "BEGIN",
        "SELECT id, v, note FROM ai ORDER BY id",
        "ROLLBACK",
    )

    def run(leg: Leg) -> list[Any]:
        conn = connect(leg)
        try:
            out = []
            cur = conn.cursor()
            for sql in statements:
                try:
                    count = cur.execute(sql)
                except MySQLdb.MySQLError as exc:
                    out.append((sql, error_facts(conn, exc)))
                    continue
                out.append(
                    (
                        sql,
                        count,
                        cur.lastrowid,
                        conn.insert_id(),
                        conn.affected_rows(),
                        conn.info(),
                        conn.warning_count(),
                        conn.get_autocommit(),
                        cur.fetchall(),
                    )
                )
            cur.close()
            return out
        finally:
            conn.close()

    setup = (
        "DROP TABLE IF EXISTS ai",
        "CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT, note VARCHAR(3))",
    )
    direct, through = pair.both(run, setup=setup)
    by_sql = {entry[0]: entry for entry in direct}
    assert by_sql["UPDATE ai SET v = 1 WHERE v IN (1, 2)"][5] == (
        "Rows matched: 2  Changed: 1  Warnings: 0"
    )
    assert by_sql["INSERT INTO ai (v) VALUES (2), (3), (4)"][1:4] == (3, 2, 2)
    assert by_sql["INSERT INTO ai (v, note) VALUES (7, 'far too long'), (8, 'ok')"][6] == 1
    for got, want in zip(through, direct, strict=True):
        assert got == want


def test_mysqlclient_errors_code_sqlstate_message(pair: Pair) -> None:
    def run(leg: Leg) -> list[Any]:
        conn = connect(leg)
        try:
            out: list[Any] = []
            cur = conn.cursor()
            cur.execute(STRICT_SQL_MODE)
            for sql, _ in ERROR_CASES:
                with pytest.raises(MySQLdb.MySQLError) as info:
                    cur.execute(sql)
                out.append((sql, error_facts(conn, info.value)))
            cur.execute("SELECT COUNT(*) FROM uniq")
            out.append(cur.fetchall())
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=ERROR_SETUP)
    assert [facts[1] for _, facts in direct[:-1]] == [code for _, code in ERROR_CASES]
    assert direct[2][1][3] == "23000"
    for got, want in zip(through, direct, strict=True):
        assert got == want


# --- multi-results, streaming, large values --------------------------------------------------


def _sets(conn: MySQLdb.connections.Connection, cur: Any) -> list[Any]:
    sets = []
    while True:
        sets.append((cur.description, cur.rowcount, cur.fetchall(), conn.info()))
        if not cur.nextset():
            return sets


def test_mysqlclient_multi_statement_and_stored_procedure(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)  # MySQLdb enables CLIENT_MULTI_STATEMENTS by default
        try:
            out: dict[str, Any] = {}
            cur = conn.cursor()
            cur.execute(
                "SELECT 1 AS a; INSERT INTO proc_t (v) VALUES ('four'), ('five'); "
                "UPDATE proc_t SET v = UPPER(v) WHERE id > 3; SELECT id, v FROM proc_t ORDER BY id"
            )
            out["multi"] = _sets(conn, cur)
            cur.execute("CALL two_sets(2)")
            out["call"] = _sets(conn, cur)
            cur.execute("SELECT 'a'; SELECT * FROM nope; SELECT 'b'")
            first = cur.fetchall()
            with pytest.raises(MySQLdb.MySQLError) as info:
                cur.nextset()
            out["error_mid_chain"] = (first, error_facts(conn, info.value))
            cur.execute("SELECT COUNT(*) FROM proc_t")
            out["after"] = cur.fetchall()
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=PROCEDURE_SETUP)
    assert len(direct["multi"]) == 4 and len(direct["call"]) == 3
    assert direct["call"][1][2] == ((5, 4, "x"),)
    assert direct["error_mid_chain"][1][1] == 1146
    assert through == direct


def test_mysqlclient_sscursor_streams_large_result(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            cur = conn.cursor(MySQLdb.cursors.SSCursor)
            cur.execute("SELECT id, payload FROM big ORDER BY id")
            out["first"] = cur.fetchone()
            out["many"] = cur.fetchmany(999)
            out["rest"] = cur.fetchall()
            cur.close()
            cur = conn.cursor(MySQLdb.cursors.SSCursor)
            cur.execute("SELECT id, payload FROM big ORDER BY id DESC")
            out["partial"] = cur.fetchmany(3)
            cur.close()  # drains the rest
            check = conn.cursor()
            check.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM big")
            out["after"] = check.fetchall()
            check.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=BIG_TABLE_SETUP)
    assert 1 + len(direct["many"]) + len(direct["rest"]) == 3000
    assert through == direct


def test_mysqlclient_large_blob_crosses_16mib_packets(pair: Pair) -> None:
    blob = big_blob()

    def run(leg: Leg) -> tuple[Any, ...]:
        conn = connect(leg, read_timeout=60, write_timeout=60)
        try:
            cur = conn.cursor()
            inserted = cur.execute("INSERT INTO blobs (id, data) VALUES (1, %s)", (blob,))
            cur.execute("SELECT id, data, MD5(data) FROM blobs")
            rows = cur.fetchall()
            desc = cur.description
            scur = conn.cursor(MySQLdb.cursors.SSCursor)
            scur.execute("SELECT data FROM blobs")
            streamed = scur.fetchall()
            scur.close()
            cur.execute("SELECT 'in sync'")
            after = cur.fetchall()
            cur.close()
            return inserted, rows, desc, streamed, after
        finally:
            conn.close()

    setup = ("DROP TABLE IF EXISTS blobs", "CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB)")
    direct, through = pair.both(run, setup=setup)
    assert direct[1][0][1] == blob
    assert through[0] == direct[0]
    assert through[1][0][1] == blob, "blob corrupted through hoopy"
    assert through == direct


# --- transports and commands ---------------------------------------------------------------


def test_mysqlclient_unix_socket_to_hoopy(pair: Pair) -> None:
    def probe(conn: MySQLdb.connections.Connection) -> tuple[Any, ...]:
        try:
            cur = conn.cursor()
            cur.execute("SELECT CURRENT_USER(), DATABASE(), 'so\u010dket', REPEAT('y', 100000)")
            rows = cur.fetchall()
            desc = cur.description
            cur.close()
            return rows, desc, conn.get_server_info(), conn.get_proto_info()
        finally:
            conn.close()

    leg = pair.hoopy
    through = connect(leg, host="localhost", port=0, unix_socket=leg.unix_socket)
    assert "socket" in through.get_host_info().lower()
    assert probe(through) == probe(connect(pair.direct))


def test_mysqlclient_tls_to_hoopy(pair: Pair) -> None:
    def run(leg: Leg) -> tuple[Any, ...]:
        conn = connect(leg, ssl={"ca": leg.tls_ca})
        try:
            cur = conn.cursor()
            cur.execute("SELECT CURRENT_USER(), DATABASE(), 'tl\u00df', REPEAT('z', 70000)")
            rows = cur.fetchall()
            cur.close()
            return rows, conn.get_server_info()
        finally:
            conn.close()

    before = pair.process.stderr_text().count(" over TLS")
    direct, through = pair.both(run)
    # MySQLdb does not expose the socket: hoopy's log says whether the session used TLS.
    deadline = time.monotonic() + 5
    while pair.process.stderr_text().count(" over TLS") == before:
        assert time.monotonic() < deadline, "the MySQLdb session through hoopy was not TLS"
        time.sleep(0.02)
    assert through == direct


def test_mysqlclient_ping_select_db_stat_and_thread_id(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            conn.ping()
            conn.select_db("hoopy_test")
            cur = conn.cursor()
            cur.execute("SELECT DATABASE(), CONNECTION_ID()")
            ((db, conn_id),) = cur.fetchall()
            out["db"] = db
            out["thread_id"] = conn.thread_id() == conn_id
            # KILL by the greeting's id names this session (mapped by hoopy for gateway users).
            with pytest.raises(MySQLdb.MySQLError) as killed:
                cur.execute(f"KILL QUERY {conn.thread_id()}")
            out["kill_by_thread_id"] = error_facts(conn, killed.value)
            with pytest.raises(MySQLdb.MySQLError) as info:
                conn.select_db("no_such_db_here")
            out["bad_select_db"] = error_facts(conn, info.value)
            stat = conn.stat()
            out["stat_keys"] = [part.split(":")[0] for part in stat.split("  ")]
            cur.execute(
                "SELECT USER, DB FROM information_schema.PROCESSLIST WHERE ID = %s", (conn_id,)
            )
            out["processlist"] = cur.fetchall()
            out["server"] = (conn.get_server_info(), conn.character_set_name())
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct["thread_id"] and direct["db"] == "hoopy_test"
    assert direct["stat_keys"][0] == "Uptime"
    assert direct["processlist"] == ((pair.upstream_user, "hoopy_test"),)
    assert direct["kill_by_thread_id"][1] == 1317
    # Gateway users are greeted with an id of hoopy's (mapped in KILL), passthrough with
    # the target's own.
    assert through == dict(direct, thread_id=pair.mode == "passthrough")


def test_mysqlclient_change_user_resets_session(pair: Pair) -> None:
    def run(leg: Leg) -> list[Any]:
        conn = connect(leg)
        try:
            cur = conn.cursor()
            cur.execute("SET @marker = 'before'")
            cur.execute("CREATE TEMPORARY TABLE tmp_state (x INT)")
            cur.close()
            conn.change_user(leg.user, leg.password, leg.database)
            cur = conn.cursor()
            cur.execute("SELECT @marker, CURRENT_USER(), DATABASE()")
            out: list[Any] = [cur.fetchall()]
            with pytest.raises(MySQLdb.MySQLError) as info:
                cur.execute("SELECT * FROM tmp_state")
            out.append(error_facts(conn, info.value))
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct[0] == ((None, f"{pair.upstream_user}@%", pair.direct.database),)
    assert direct[1][1] == 1146
    assert through == direct


def test_mysqlclient_kill_query_interrupts_sleep(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        victim = connect(leg)
        killer = connect(leg)
        try:
            # Killed by the greeting's id (what clients' cancel uses); looked up by the
            # session's own (they differ through hoopy with gateway users: admission.py).
            victim_id = victim.thread_id()
            vcur = victim.cursor()
            vcur.execute("SELECT CONNECTION_ID()")
            ((session_id,),) = vcur.fetchall()
            vcur.close()
            outcome: dict[str, Any] = {}

            def sleep() -> None:
                started = time.monotonic()
                cur = victim.cursor()
                try:
                    cur.execute("SELECT SLEEP(30)")
                    outcome["rows"] = cur.fetchall()
                except MySQLdb.MySQLError as exc:
                    outcome["error"] = exc.args
                cur.close()
                outcome["elapsed"] = time.monotonic() - started

            thread = threading.Thread(target=sleep, daemon=True)
            thread.start()
            cur = killer.cursor()
            deadline = time.monotonic() + 10
            while True:
                cur.execute(
                    "SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = %s", (session_id,)
                )
                if cur.fetchall() == (("SELECT SLEEP(30)",),):
                    break
                assert time.monotonic() < deadline, "the SLEEP never started"
                time.sleep(0.02)
            cur.execute(f"KILL QUERY {victim_id}")
            cur.close()
            thread.join(15)
            assert not thread.is_alive(), "KILL QUERY did not interrupt SELECT SLEEP(30)"
            assert outcome.pop("elapsed") < 10
            vcur = victim.cursor()
            vcur.execute("SELECT 'alive'")
            outcome["after"] = vcur.fetchall()
            vcur.close()
            return outcome
        finally:
            victim.close()
            killer.close()

    direct, through = pair.both(run)
    assert direct.get("rows") == ((1,),) or direct["error"][0] == 1317
    assert through == direct


def test_mysqlclient_set_server_option_multi_statements_off(pair: Pair) -> None:
    # COM_SET_OPTION: the server answers with an EOF packet, then enforces the option.

    option_multi_statements_off = 1  # MYSQL_OPTION_MULTI_STATEMENTS_OFF

    def run(leg: Leg) -> list[Any]:
        conn = connect(leg)
        try:
            out: list[Any] = []
            conn.set_server_option(option_multi_statements_off)
            cur = conn.cursor()
            try:
                cur.execute("SELECT 1; SELECT 2")
                out.append(cur.fetchall())
            except MySQLdb.MySQLError as exc:
                out.append(error_facts(conn, exc))
            cur.execute("SELECT 'single still works'")
            out.append(cur.fetchall())
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct[0][1] == 1064
    assert through == direct
