"""PyMySQL through hoopy sees what it sees connecting directly to MariaDB."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT, SERVER_STATUS

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


def connect(leg: Leg, **kw: Any) -> pymysql.connections.Connection:
    params: dict[str, Any] = {
        "host": leg.host,
        "port": leg.port,
        "user": leg.user,
        "password": leg.password,
        "database": leg.database,
        "charset": "utf8mb4",
        "connect_timeout": 10,
        "read_timeout": 30,
        "ssl_disabled": True,
    }
    params.update(kw)
    return pymysql.connect(**params)


FIELD_ATTRS = (
    "catalog",
    "db",
    "table_name",
    "org_table",
    "name",
    "org_name",
    "charsetnr",
    "length",
    "type_code",
    "flags",
    "scale",
)


def field_attrs(cur: pymysql.cursors.Cursor) -> list[dict[str, Any]]:
    assert cur._result is not None and cur._result.fields is not None
    return [{a: getattr(f, a) for a in FIELD_ATTRS} for f in cur._result.fields]


class ErrorRecorder:
    """Captures the raw ERR payloads PyMySQL turns into exceptions (it drops the SQLSTATE)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.packets: list[bytes] = []
        original = pymysql.err.raise_mysql_exception

        def recording(data: bytes) -> None:
            self.packets.append(bytes(data))
            original(data)

        monkeypatch.setattr(pymysql.err, "raise_mysql_exception", recording)

    def last(self) -> tuple[int, str, str, bytes]:
        data = self.packets[-1]
        errno = int.from_bytes(data[1:3], "little")
        assert data[3:4] == b"#", data
        return errno, data[4:9].decode(), data[9:].decode("utf-8"), data


# --- result sets and metadata ---------------------------------------------------------------


def test_pymysql_all_types_rows_and_metadata(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM all_types ORDER BY id")
                out["table"] = (cur.fetchall(), cur.description, field_attrs(cur), cur.rowcount)
                cur.execute(
                    "SELECT 1 AS one, -1.50 AS dec_lit, 'x' AS s, NULL AS n, 2e0 AS dbl, "
                    "CAST(18446744073709551615 AS UNSIGNED) AS big, _binary'b\\0' AS bin, "
                    "CURRENT_USER() AS who, DATABASE() AS db, CONVERT('\u00e9' USING latin1) AS l1, "
                    "DATE '2024-02-29' + INTERVAL 1 DAY AS next_day, "
                    "JSON_OBJECT('a', 1) AS js, ti + 0 AS expr FROM all_types WHERE id = 1"
                )
                out["expressions"] = (cur.fetchall(), cur.description, field_attrs(cur))
                cur.execute("SELECT id, vc FROM all_types WHERE id > 100")
                out["empty"] = (cur.fetchall(), cur.description, field_attrs(cur), cur.rowcount)
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=ALL_TYPES_SETUP)
    rows = direct["table"][0]
    assert len(rows) == 3 and rows[0][1] == -128 and rows[0][10] == 2**64 - 1
    assert direct["expressions"][0][0][7] == f"{pair.upstream_user}@%"
    assert through["table"] == direct["table"]
    assert through["expressions"] == direct["expressions"]
    assert through["empty"] == direct["empty"]


def test_pymysql_affected_rows_insert_ids_warnings_and_info(pair: Pair) -> None:
    statements = (
        "SET SESSION sql_mode = ''",
        "INSERT INTO ai (v) VALUES (1)",
        "INSERT INTO ai (v) VALUES (2), (3), (4)",
        "SELECT LAST_INSERT_ID()",
        "INSERT INTO ai (id, v) VALUES (100, 5)",
        "INSERT INTO ai (v) VALUES (6)",
        "UPDATE ai SET v = 1 WHERE v IN (1, 2)",
        "INSERT INTO ai (v, note) VALUES (7, 'far too long'), (8, 'ok')",
        "SHOW WARNINGS",
        "SELECT 1/0 AS q",
        "SHOW WARNINGS",
        "INSERT INTO ai (id, v) VALUES (1, 0) ON DUPLICATE KEY UPDATE v = 42",
        "REPLACE INTO ai (id, v) VALUES (2, 9)",
        "INSERT INTO ai (v) SELECT v FROM ai WHERE id < 5",
        "SELECT LAST_INSERT_ID(12345)",
        "SELECT LAST_INSERT_ID()",
        "DELETE FROM ai WHERE v > 5",
        "UPDATE ai SET v = v WHERE id = -1",
        "SELECT id, v, note FROM ai ORDER BY id",
    )

    def run(leg: Leg) -> list[Any]:
        conn = connect(leg, autocommit=True)
        try:
            out = []
            with conn.cursor() as cur:
                for sql in statements:
                    cur.execute(sql)
                    result = conn._result
                    assert result is not None
                    out.append(
                        (
                            sql,
                            cur.rowcount,
                            cur.lastrowid,
                            conn.insert_id(),
                            result.affected_rows,
                            result.insert_id,
                            result.warning_count,
                            result.message,
                            result.server_status,
                            cur.fetchall(),
                        )
                    )
            return out
        finally:
            conn.close()

    setup = (
        "DROP TABLE IF EXISTS ai",
        "CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT, note VARCHAR(3))",
    )
    direct, through = pair.both(run, setup=setup)
    by_sql = {entry[0]: entry for entry in direct}
    update_info = by_sql["UPDATE ai SET v = 1 WHERE v IN (1, 2)"][7]
    assert b"Rows matched: 2  Changed: 1  Warnings: 0" in update_info
    assert by_sql["INSERT INTO ai (v) VALUES (2), (3), (4)"][1:3] == (3, 2)
    assert by_sql["INSERT INTO ai (v, note) VALUES (7, 'far too long'), (8, 'ok')"][6] == 1
    for got, want in zip(through, direct, strict=True):
        assert got == want


def test_pymysql_transaction_and_autocommit_status_flags(pair: Pair) -> None:
    def run(leg: Leg) -> list[Any]:
        conn = connect(leg, autocommit=False)
        try:
            seen: list[Any] = [("connect", conn.server_status, conn.get_autocommit())]
            with conn.cursor() as cur:
                for sql in (
                    "SELECT 1",
                    "BEGIN",
                    "INSERT INTO tx (v) VALUES (1)",
                    "SELECT COUNT(*) FROM tx",
                    "ROLLBACK",
                    "SELECT COUNT(*) FROM tx",
                    "SET autocommit = 1",
                    "INSERT INTO tx (v) VALUES (2)",
                    "START TRANSACTION READ ONLY",
                    "SELECT COUNT(*) FROM tx",
                    "COMMIT",
                ):
                    cur.execute(sql)
                    seen.append((sql, conn.server_status, cur.fetchall()))
                conn.autocommit(False)
                seen.append(("autocommit(False)", conn.server_status, conn.get_autocommit()))
                conn.begin()
                seen.append(("begin()", conn.server_status))
                conn.rollback()
                seen.append(("rollback()", conn.server_status))
            return seen
        finally:
            conn.close()

    setup = ("DROP TABLE IF EXISTS tx", "CREATE TABLE tx (v INT) ENGINE=InnoDB")
    direct, through = pair.both(run, setup=setup)
    flags = {entry[0]: entry[1] for entry in direct}
    assert flags["BEGIN"] & SERVER_STATUS.SERVER_STATUS_IN_TRANS
    assert not flags["ROLLBACK"] & SERVER_STATUS.SERVER_STATUS_IN_TRANS
    assert flags["SET autocommit = 1"] & SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT
    assert through == direct


def test_pymysql_errors_code_sqlstate_message(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = ErrorRecorder(monkeypatch)

    def run(leg: Leg) -> list[Any]:
        conn = connect(leg, autocommit=True)
        try:
            out = []
            with conn.cursor() as cur:
                cur.execute(STRICT_SQL_MODE)
                for sql, _ in ERROR_CASES:
                    with pytest.raises(pymysql.err.MySQLError) as info:
                        cur.execute(sql)
                    out.append((sql, type(info.value).__name__, info.value.args, recorder.last()))
                cur.execute("SELECT COUNT(*) FROM uniq")
                out.append(cur.fetchall())
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=ERROR_SETUP)
    assert [entry[2][0] for entry in direct[:-1]] == [code for _, code in ERROR_CASES]
    assert direct[1][3][1] == "42S02" and direct[2][3][1] == "23000"
    for got, want in zip(through, direct, strict=True):
        assert got == want


# --- multi-statements, stored procedures, streaming --------------------------------------


def _drain_sets(cur: pymysql.cursors.Cursor) -> list[Any]:
    sets = []
    while True:
        result = cur._result
        assert result is not None
        sets.append(
            (
                cur.description,
                cur.rowcount,
                cur.fetchall(),
                result.affected_rows,
                result.insert_id,
                result.warning_count,
                result.message,
                result.server_status,
                result.has_next,
            )
        )
        if not cur.nextset():
            return sets


def test_pymysql_multi_statement_results(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = ErrorRecorder(monkeypatch)

    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg, autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)
        try:
            out: dict[str, Any] = {}
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT 1 AS a, 'two' AS b; INSERT INTO ms (v) VALUES (10), (20);"
                    "SELECT id, v FROM ms ORDER BY id; UPDATE ms SET v = v + 1 WHERE v > 10;"
                    "SET @x = 5; SELECT @x AS x, LAST_INSERT_ID() AS lid"
                )
                out["sets"] = _drain_sets(cur)
                cur.execute("SELECT 'first' AS f; SELECT * FROM nope; SELECT 'never'")
                first = (cur.description, cur.fetchall())
                with pytest.raises(pymysql.err.ProgrammingError) as info:
                    cur.nextset()
                out["error_mid_chain"] = (first, info.value.args, recorder.last())
                cur.execute("SELECT COUNT(*) FROM ms")
                out["after"] = cur.fetchall()
            return out
        finally:
            conn.close()

    setup = (
        "DROP TABLE IF EXISTS ms",
        "CREATE TABLE ms (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    )
    direct, through = pair.both(run, setup=setup)
    assert len(direct["sets"]) == 6
    assert direct["sets"][2][2] == ((1, 10), (2, 20))
    assert direct["error_mid_chain"][1][0] == 1146
    assert through == direct


def test_pymysql_stored_procedure_two_result_sets_and_ok(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg, autocommit=True)
        try:
            out: dict[str, Any] = {}
            with conn.cursor() as cur:
                cur.execute("CALL two_sets(2)")
                out["call"] = _drain_sets(cur)
                cur.callproc("two_sets", (3,))
                out["callproc"] = _drain_sets(cur)
                cur.execute("SELECT @_two_sets_0")
                out["callproc_args"] = cur.fetchall()
                cur.execute("SELECT id, v FROM proc_t ORDER BY id")
                out["after"] = cur.fetchall()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=PROCEDURE_SETUP)
    call = direct["call"]
    assert len(call) == 3  # two result sets, then the CALL's own OK
    assert call[0][2] == ((1, "one"), (2, "two"))
    assert call[1][2] == ((3, 4, "x"),)
    assert call[2][0] is None
    assert through == direct


def test_pymysql_sscursor_streams_large_result(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg, autocommit=True)
        try:
            out: dict[str, Any] = {}
            with conn.cursor(pymysql.cursors.SSCursor) as cur:
                cur.execute("SELECT id, payload FROM big ORDER BY id")
                out["description"] = cur.description
                out["fields"] = field_attrs(cur)
                out["one"] = cur.fetchone()
                out["many"] = cur.fetchmany(700)
                out["rest"] = cur.fetchall()
                out["status"] = cur._result.server_status if cur._result else None
            # Abandon a stream half-way: the cursor drains it, the connection stays usable.
            cur = conn.cursor(pymysql.cursors.SSCursor)
            cur.execute("SELECT id, payload FROM big ORDER BY id DESC")
            out["partial"] = cur.fetchmany(5)
            cur.close()
            with conn.cursor() as cur2:
                cur2.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM big")
                out["after"] = cur2.fetchall()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=BIG_TABLE_SETUP)
    assert 1 + len(direct["many"]) + len(direct["rest"]) == 3000
    assert direct["rest"][-1] == (3000, "K" * 200)
    assert through == direct


def test_pymysql_large_blob_crosses_16mib_packets(pair: Pair) -> None:
    blob = big_blob()

    def run(leg: Leg) -> tuple[Any, ...]:
        conn = connect(leg, autocommit=True, read_timeout=60, write_timeout=60)
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO blobs (id, data) VALUES (1, %s)", (blob,))
                inserted = cur.rowcount
                cur.execute("SELECT id, data, LENGTH(data), MD5(data) FROM blobs")
                rows = cur.fetchall()
                desc = cur.description
                cur.execute("SELECT 'still in sync'")
                after = cur.fetchall()
            return inserted, rows, desc, after
        finally:
            conn.close()

    setup = ("DROP TABLE IF EXISTS blobs", "CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB)")
    direct, through = pair.both(run, setup=setup)
    assert direct[1][0][1] == blob
    assert through[0] == direct[0]
    assert through[1][0][1] == blob, "blob corrupted through hoopy"
    assert through == direct


# --- transports ---------------------------------------------------------------------------


def test_pymysql_tls_to_hoopy_verifies_gateway_cert(pair: Pair) -> None:
    def run(leg: Leg) -> tuple[Any, ...]:
        assert leg.tls_ca is not None
        conn = connect(leg, ssl_disabled=False, ssl={"ca": leg.tls_ca}, autocommit=True)
        try:
            sock = conn._sock
            assert isinstance(sock, ssl.SSLSocket), type(sock)
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
            assert sock.getpeercert()  # verified against the CA
            with conn.cursor() as cur:
                cur.execute("SELECT CURRENT_USER(), DATABASE(), 'tl\u00df', REPEAT('z', 70000)")
                rows = cur.fetchall()
                desc = cur.description
            return rows, desc, conn.server_version
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct[0][0][0] == f"{pair.upstream_user}@%"
    assert through == direct


def test_pymysql_tls_to_hoopy_rejects_wrong_ca(pair: Pair) -> None:
    assert pair.mariadb.ca_path is not None
    with pytest.raises(pymysql.err.OperationalError):
        connect(pair.hoopy, ssl_disabled=False, ssl={"ca": pair.mariadb.ca_path}).close()


def test_pymysql_unix_socket_to_hoopy(pair: Pair) -> None:
    def run(conn: pymysql.connections.Connection) -> tuple[Any, ...]:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT CURRENT_USER(), DATABASE(), @@version, 'so\u010dket'")
                rows = cur.fetchall()
                desc = cur.description
            return rows, desc, conn.server_version
        finally:
            conn.close()

    leg = pair.hoopy
    assert leg.unix_socket is not None
    through = connect(leg, host=None, port=0, unix_socket=leg.unix_socket)
    assert through.host_info == "Localhost via UNIX socket"
    # hoopy reaches the target over TCP, so compare with a direct TCP connection.
    assert run(through) == run(connect(pair.direct))


# --- commands and session facts -----------------------------------------------------------


def test_pymysql_ping_and_select_db(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = ErrorRecorder(monkeypatch)

    def run(leg: Leg) -> list[Any]:
        conn = connect(leg, autocommit=True)
        try:
            out: list[Any] = []
            conn.ping(reconnect=False)
            out.append(("ping", conn._result))
            with conn.cursor() as cur:
                conn.select_db("hoopy_test")
                cur.execute("SELECT DATABASE()")
                out.append(("select_db", cur.fetchall(), conn.server_status))
                with pytest.raises(pymysql.err.OperationalError) as info:
                    conn.select_db("no_such_db_here")
                out.append(("bad select_db", info.value.args, recorder.last()))
                cur.execute("SELECT DATABASE()")
                out.append(("still", cur.fetchall()))
                conn.select_db(leg.database)
                conn.ping(reconnect=False)
                cur.execute("SELECT DATABASE()")
                out.append(("back", cur.fetchall()))
            return out
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct[1][1] == (("hoopy_test",),)
    assert through == direct


def test_pymysql_greeting_and_connection_id_are_upstream_facts(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT CONNECTION_ID()")
                ((conn_id,),) = cur.fetchall()
                cur.execute(
                    "SELECT USER, DB, COMMAND FROM information_schema.PROCESSLIST WHERE ID = %s",
                    (conn_id,),
                )
                processlist = cur.fetchall()
                cur.execute("SELECT @@version, @@character_set_client, @@collation_connection")
                variables = cur.fetchall()
                # KILL by the greeting's id names this very session (its own KILL statement is
                # what gets interrupted). Through hoopy with gateway users the greeting's id is
                # hoopy's own (it greets before connecting upstream), mapped in KILL.
                with pytest.raises(pymysql.err.OperationalError) as killed:
                    cur.execute(f"KILL QUERY {conn.thread_id()}")
                cur.execute("SELECT 'alive'")
                alive = cur.fetchall()
            return {
                "thread_id_matches": conn.thread_id() == conn_id,
                "kill_by_thread_id": (killed.value.args, alive),
                "processlist": processlist,
                "server_version": conn.server_version,
                "protocol_version": conn.protocol_version,
                "server_charset": conn.server_charset,
                "variables": variables,
            }
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct["thread_id_matches"]
    assert direct["processlist"] == ((pair.upstream_user, pair.direct.database, "Query"),)
    assert direct["kill_by_thread_id"] == ((1317, "Query execution was interrupted"), (("alive",),))
    # Passthrough greets with the target's own greeting, id included; gateway users are
    # greeted before hoopy connects upstream, with an id of hoopy's that KILL maps.
    assert through == dict(direct, thread_id_matches=pair.mode == "passthrough")


def test_pymysql_kill_query_interrupts_sleep(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        victim = connect(leg, autocommit=True)
        killer = connect(leg, autocommit=True)
        try:
            # Killed by the greeting's id (what clients' cancel uses); looked up by the
            # session's own (they differ through hoopy with gateway users: admission.py).
            victim_id = victim.thread_id()
            with victim.cursor() as cur:
                cur.execute("SELECT CONNECTION_ID()")
                ((session_id,),) = cur.fetchall()
            outcome: dict[str, Any] = {}

            def sleep() -> None:
                started = time.monotonic()
                try:
                    with victim.cursor() as cur:
                        cur.execute("SELECT SLEEP(30)")
                        outcome["rows"] = cur.fetchall()
                except pymysql.err.MySQLError as exc:
                    outcome["error"] = exc.args
                outcome["elapsed"] = time.monotonic() - started

            thread = threading.Thread(target=sleep, daemon=True)
            thread.start()
            deadline = time.monotonic() + 10
            with killer.cursor() as cur:
                while True:
                    cur.execute(
                        "SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = %s",
                        (session_id,),
                    )
                    if cur.fetchall() == (("SELECT SLEEP(30)",),):
                        break
                    assert time.monotonic() < deadline, "the SLEEP never started"
                    time.sleep(0.02)
                cur.execute(f"KILL QUERY {victim_id}")
                killed = (cur.rowcount, killer._result.server_status if killer._result else None)
            thread.join(15)
            assert not thread.is_alive(), "KILL QUERY did not interrupt SELECT SLEEP(30)"
            assert outcome.pop("elapsed") < 10
            with victim.cursor() as cur:
                cur.execute("SELECT 'alive', CONNECTION_ID() = %s", (session_id,))
                after = cur.fetchall()
            return {"outcome": outcome, "killed": killed, "after": after}
        finally:
            victim.close()
            killer.close()

    direct, through = pair.both(run)
    assert direct["outcome"] in ({"rows": ((1,),)}, {"error": direct["outcome"].get("error")})
    if "error" in direct["outcome"]:
        assert direct["outcome"]["error"][0] == 1317
    assert through == direct


def test_pymysql_payloads_of_exactly_16mib_minus_one(pair: Pair) -> None:
    # A payload of exactly 0xFFFFFF bytes is followed by an empty packet, both ways.
    row_len = 0xFFFFFF - 4  # 0xFD + 3-byte length + the value: one full wire packet
    head, tail = "SELECT LENGTH('", "') AS l"
    query_fill = 0xFFFFFF - 1 - len(head) - len(tail)  # COM_QUERY byte + SQL text

    def run(leg: Leg) -> tuple[Any, ...]:
        conn = connect(leg, autocommit=True, read_timeout=60, write_timeout=60)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT REPEAT('a', %s) AS s, 'next' AS n", (row_len,))
                ((value, nxt),) = cur.fetchall()
                down = (len(value), value == "a" * row_len, nxt, cur.description)
                cur.execute(head + "b" * query_fill + tail)
                up = cur.fetchall()
                cur.execute("SELECT 'in sync'")
                return down, up, cur.fetchall()
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct[0][:3] == (row_len, True, "next")
    assert direct[1] == ((query_fill,),)
    assert through == direct


def test_pymysql_kill_connection_ends_the_victims_session(pair: Pair) -> None:
    def run(leg: Leg) -> tuple[Any, ...]:
        victim = connect(leg, autocommit=True)
        killer = connect(leg, autocommit=True)
        try:
            with killer.cursor() as cur:
                cur.execute(f"KILL CONNECTION {victim.thread_id()}")
                killed = cur.rowcount
            time.sleep(0.1)
            with pytest.raises(pymysql.err.OperationalError) as info, victim.cursor() as cur:
                cur.execute("SELECT 1")
            # The message is the client's (direct) or hoopy's own ERR (hoopy answers for the
            # lost target, so PyMySQL has not noticed the close yet): the code is what counts,
            # and the session must really be gone.
            with pytest.raises(pymysql.err.Error):
                victim.ping(reconnect=False)
            return killed, info.value.args[0]
        finally:
            with contextlib.suppress(pymysql.err.Error):
                victim.close()
            killer.close()

    direct, through = pair.both(run)
    assert direct == (0, 2013)
    assert through == direct


def test_pymysql_latin1_connection_charset(pair: Pair) -> None:
    def run(leg: Leg) -> tuple[Any, ...]:
        conn = connect(leg, charset="latin1", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT @@character_set_client, @@character_set_results, "
                    "@@collation_connection, 'caf\u00e9' AS s, HEX('\u00e9') AS h"
                )
                return cur.fetchall(), cur.description, field_attrs(cur)
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct[0][0][:2] == ("latin1", "latin1") and direct[0][0][4] == "E9"
    assert through == direct
