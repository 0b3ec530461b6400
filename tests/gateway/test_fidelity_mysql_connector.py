"""mysql-connector-python (pure) through hoopy sees what it sees connecting directly."""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import mysql.connector
import pytest
from mysql.connector.connection import MySQLConnection
from mysql.connector.constants import ServerFlag

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
from tests.gateway_rig import APP_PASSWORD, APP_USER
from tests.rig import MariaDBServer

CURSOR_TYPE_READ_ONLY = 1

BINARY_COLUMNS = (
    "id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, dec_, f, d, b, dt, tm, dtm, ts, "
    "c, vc, bin, vb, tx, bl, e, st, js"
)


@pytest.fixture(scope="module")
def pool(mariadb: MariaDBServer) -> Iterator[HoopyPool]:
    yield from hoopy_pool(mariadb)


@pytest.fixture(params=MODES)
def pair(request: pytest.FixtureRequest, pool: HoopyPool, fresh_db: str) -> Pair:
    return pool.pair(request.param, fresh_db)


def connect(leg: Leg, **kw: Any) -> MySQLConnection:
    params: dict[str, Any] = {
        "host": leg.host,
        "port": leg.port,
        "user": leg.user,
        "password": leg.password,
        "database": leg.database,
        "use_pure": True,
        "ssl_disabled": True,
        "charset": "utf8mb4",
        "connection_timeout": 10,
        "autocommit": True,
    }
    params.update(kw)
    conn = mysql.connector.connect(**params)
    assert isinstance(conn, MySQLConnection)  # the pure-Python implementation
    return conn


def error_facts(exc: mysql.connector.Error) -> tuple[Any, ...]:
    return (type(exc).__name__, exc.errno, exc.sqlstate, exc.msg)


# --- result sets and metadata ---------------------------------------------------------------


def test_mysql_connector_all_types_text_and_binary_protocol(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            cur = conn.cursor()
            cur.execute("SELECT * FROM all_types ORDER BY id")
            out["text"] = (cur.fetchall(), cur.description, cur.column_names, cur.rowcount)
            cur.close()
            cur = conn.cursor(prepared=True)
            # YEAR goes last: mysql-connector mis-decodes a binary YEAR followed by more
            # columns (directly too), which would hide what hoopy relays.
            cur.execute(
                f"SELECT {BINARY_COLUMNS}, y FROM all_types WHERE id >= ? ORDER BY id", (1,)
            )
            out["binary"] = (cur.fetchall(), cur.description, cur.rowcount)
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=ALL_TYPES_SETUP)
    assert len(direct["text"][0]) == 3
    assert direct["binary"][0][0][10] == 2**64 - 1
    assert through["text"] == direct["text"]
    assert through["binary"] == direct["binary"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_mysql_connector_ok_packets_warnings_and_status(pair: Pair) -> None:
    statements = (
        "SET SESSION sql_mode = ''",
        "INSERT INTO ai (v) VALUES (1)",
        "INSERT INTO ai (v) VALUES (2), (3), (4)",
        "UPDATE ai SET v = 1 WHERE v IN (1, 2)",
        "INSERT INTO ai (v, note) VALUES (7, 'far too long'), (8, 'ok')",
        "INSERT INTO ai (v) SELECT v FROM ai WHERE id < 3",
        "BEGIN",
        "DELETE FROM ai WHERE v > 5",
        "ROLLBACK",
        "SET autocommit = 0",
        "INSERT INTO ai (v) VALUES (99)",
        "COMMIT",
        "SET autocommit = 1",
    )

    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {"ok": []}
            for sql in statements:
                result = conn.cmd_query(sql)
                out["ok"].append((sql, result, conn.in_transaction, conn.autocommit))
            result = conn.cmd_query("SELECT id, v, note FROM ai ORDER BY id")
            rows, eof = conn.get_rows()
            out["select"] = (result, rows, eof)
            cur = conn.cursor()
            cur.execute("INSERT INTO ai (v, note) VALUES (5, 'abcdef')")
            out["cursor"] = (cur.rowcount, cur.lastrowid, cur.warning_count)
            cur.execute("SHOW WARNINGS")
            out["show_warnings"] = cur.fetchall()
            cur.close()
            conn.get_warnings = True
            cur = conn.cursor()
            cur.execute("SELECT 1/0, CAST('12abc' AS INT)")
            out["fetchwarnings"] = (cur.fetchall(), cur.warning_count, cur.fetchwarnings())
            cur.close()
            return out
        finally:
            conn.close()

    setup = (
        "DROP TABLE IF EXISTS ai",
        "CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT, note VARCHAR(3))",
    )
    direct, through = pair.both(run, setup=setup)
    ok = {sql: result for sql, result, _, _ in direct["ok"]}
    assert ok["INSERT INTO ai (v) VALUES (2), (3), (4)"]["insert_id"] == 2
    assert ok["UPDATE ai SET v = 1 WHERE v IN (1, 2)"]["info_msg"].startswith(
        "Rows matched: 2  Changed: 1  Warnings: 0"
    )
    assert ok["BEGIN"]["status_flag"] & ServerFlag.STATUS_IN_TRANS
    assert direct["fetchwarnings"][1] >= 1
    for got, want in zip(through["ok"], direct["ok"], strict=True):
        assert got == want
    assert through == direct


def test_mysql_connector_errors_code_sqlstate_message(pair: Pair) -> None:
    def run(leg: Leg) -> list[Any]:
        conn = connect(leg)
        try:
            out: list[Any] = []
            cur = conn.cursor()
            cur.execute(STRICT_SQL_MODE)
            for sql, _ in ERROR_CASES:
                with pytest.raises(mysql.connector.Error) as info:
                    cur.execute(sql)
                out.append((sql, error_facts(info.value)))
            # The same failures from prepared statements (at PREPARE or at EXECUTE).
            pcur = conn.cursor(prepared=True)
            for sql in ("SELEKT ?", "SELECT * FROM no_such_table WHERE a = ?"):
                with pytest.raises(mysql.connector.Error) as info:
                    pcur.execute(sql, (1,))
                out.append(("prepare " + sql, error_facts(info.value)))
            with pytest.raises(mysql.connector.Error) as info:
                pcur.execute("INSERT INTO uniq (id) VALUES (?)", (1,))
            out.append(("execute duplicate", error_facts(info.value)))
            pcur.close()
            cur.execute("SELECT COUNT(*) FROM uniq")
            out.append(cur.fetchall())
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=ERROR_SETUP)
    assert [facts[1] for _, facts in direct[: len(ERROR_CASES)]] == [c for _, c in ERROR_CASES]
    assert direct[len(ERROR_CASES) + 2][1][1:3] == (1062, "23000")
    assert (
        dict(direct[:-1])[
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom f\u00e4ilure', MYSQL_ERRNO = 1644"
        ][2]
        == "45000"
    )
    for got, want in zip(through, direct, strict=True):
        assert got == want


# --- prepared statements --------------------------------------------------------------------

PARAMS: tuple[Any, ...] = (
    0,
    -1,
    127,
    -128,
    2**31 - 1,
    -(2**31),
    2**63 - 1,
    -(2**63),
    1.5,
    -2.25e-300,
    1.7976931348623157e308,
    Decimal("12345678901234.123456"),
    Decimal("-0.000001"),
    "plain",
    "h\u00e9llo \U0001f600 \u00fcn\u00ef \u4e2d",
    "",
    b"\x00\x01\xff\x00",
    b"",
    None,
    datetime.date(2024, 2, 29),
    datetime.datetime(2024, 2, 29, 23, 59, 58, 123456),
    datetime.datetime(1000, 1, 1, 0, 0, 0),
    datetime.time(13, 14, 15, 500000),
    datetime.timedelta(hours=-30, minutes=-1, seconds=-2),
    datetime.timedelta(days=3, microseconds=7),
    True,
    False,
)

TYPED_TABLE = (
    "DROP TABLE IF EXISTS typed",
    "CREATE TABLE typed (id INT AUTO_INCREMENT PRIMARY KEY, ti TINYINT, tiu TINYINT UNSIGNED, "
    "bi BIGINT, biu BIGINT UNSIGNED, d DOUBLE, dec_ DECIMAL(20,6), vc VARCHAR(50), "
    "vb VARBINARY(50), dt DATE, dtm DATETIME(6), tm TIME(6), flag BOOLEAN, n INT)",
)

TYPED_ROWS: tuple[tuple[Any, ...], ...] = (
    (
        -128, 255, -(2**63), 2**64 - 1, -2.5e-300, Decimal("-99999999999999.999999"),
        "\U0001f600 emoji", b"\x00nul\x00", datetime.date(1000, 1, 1),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime.timedelta(hours=-838, minutes=-59, seconds=-59), True, None,
    ),
    (
        127, 0, 2**63 - 1, 0, 1.0, Decimal("0.000001"), "", b"", datetime.date(2024, 2, 29),
        datetime.datetime(2024, 2, 29, 12, 0), datetime.timedelta(0), False, 0,
    ),
    (None,) * 13,
)  # fmt: skip


def test_mysql_connector_prepared_statement_parameter_types(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            cur = conn.cursor(prepared=True)
            placeholders = ", ".join("?" for _ in PARAMS)
            cur.execute(f"SELECT {placeholders}", PARAMS)
            out["echo"] = (cur.fetchall(), cur.description)
            cur.execute(
                "INSERT INTO typed (ti, tiu, bi, biu, d, dec_, vc, vb, dt, dtm, tm, flag, n) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                TYPED_ROWS[0],
            )
            out["insert"] = (cur.rowcount, cur.lastrowid, cur.warning_count)
            cur.executemany(
                "INSERT INTO typed (ti, tiu, bi, biu, d, dec_, vc, vb, dt, dtm, tm, flag, n) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                TYPED_ROWS[1:],
            )
            out["executemany"] = (cur.rowcount, cur.lastrowid)
            cur.execute("SELECT * FROM typed WHERE id > ? ORDER BY id", (0,))
            out["binary_rows"] = (cur.fetchall(), cur.description)
            cur.close()
            text = conn.cursor()
            text.execute("SELECT * FROM typed ORDER BY id")
            out["text_rows"] = (text.fetchall(), text.description)
            text.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=TYPED_TABLE)
    echoed = direct["echo"][0][0]
    assert echoed[6] == 2**63 - 1 and echoed[14] == PARAMS[14] and echoed[18] is None
    stored = direct["binary_rows"][0]
    # (index 10, a negative TIME, is mis-decoded by mysql-connector itself.)
    assert stored[0][1:11] == TYPED_ROWS[0][:10]
    assert stored[0][12:] == (1, None)
    assert through["echo"] == direct["echo"]
    assert through["insert"] == direct["insert"]
    assert through["executemany"] == direct["executemany"]
    assert through["binary_rows"] == direct["binary_rows"]
    assert through["text_rows"] == direct["text_rows"]


def test_mysql_connector_prepared_reexecute_reset_long_data_and_close(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            cur = conn.cursor(prepared=True)
            runs = []
            for value in (1, 2, 3):
                cur.execute("SELECT ? * 10, ? AS s", (value, f"v{value}"))
                runs.append((cur._prepared["statement_id"], cur.fetchall()))
            first_id = runs[0][0]
            # (MariaDB's ids are not deterministic per connection: compare them relatively.)
            out["reexecute"] = [(sid - first_id, rows) for sid, rows in runs]
            # Long data (COM_STMT_SEND_LONG_DATA, 128 KiB chunks) for one parameter.
            payload = bytes(range(256)) * 2048  # 512 KiB
            cur.execute("SELECT LENGTH(?), MD5(?), ?", (io.BytesIO(payload), payload, "tail"))
            out["long_data"] = cur.fetchall()
            # A different statement: the cursor closes the old one (COM_STMT_CLOSE).
            cur.execute("SELECT ? + 1", (41,))
            out["next"] = (cur._prepared["statement_id"] - first_id, cur.fetchall())
            cur.close()
            # Executing a closed statement handle is an error the server reports.
            with pytest.raises(mysql.connector.Error) as info:
                conn.cmd_stmt_execute(first_id)
            facts = error_facts(info.value)
            assert f"({first_id})" in facts[3], facts  # the id the client used, unchanged
            out["closed"] = (*facts[:3], facts[3].replace(f"({first_id})", "(<id>)"))
            # Low level: prepare-OK metadata, reset, execute, close.
            prepared = conn.cmd_stmt_prepare(b"SELECT ?, CONCAT(?, 'x') AS c FROM DUAL")
            sid = prepared["statement_id"]
            out["prepare"] = {k: v for k, v in prepared.items() if k != "statement_id"}
            conn.cmd_stmt_reset(sid)
            res = conn.cmd_stmt_execute(sid, (5, "y"), prepared["parameters"])
            conn.unread_result = True  # what the cursor would do
            rows, eof = conn.get_rows(binary=True, columns=res[1])
            out["low_level"] = (res, rows, eof)
            conn.cmd_stmt_close(sid)
            check = conn.cursor()
            check.execute("SHOW SESSION STATUS LIKE 'Prepared_stmt_count'")
            out["after_close"] = check.fetchall()
            check.execute("SELECT 'in sync'")
            out["sync"] = check.fetchall()
            check.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct["reexecute"] == [(0, [(10, "v1")]), (0, [(20, "v2")]), (0, [(30, "v3")])]
    assert direct["closed"][1] == 1243
    assert through == direct


def test_mysql_connector_server_cursor_fetches_in_batches(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            # Server-side cursor: EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH.
            prepared = conn.cmd_stmt_prepare(b"SELECT id, payload FROM big ORDER BY id")
            sid = prepared["statement_id"]
            count, columns, eof = conn.cmd_stmt_execute(sid, flags=CURSOR_TYPE_READ_ONLY)
            out["execute"] = (count, columns, eof)
            assert eof["status_flag"] & ServerFlag.STATUS_CURSOR_EXISTS, eof
            batches = []
            while True:
                conn.cmd_stmt_fetch(sid, 700)
                rows, eof = conn.get_rows(binary=True, columns=columns)
                batches.append((len(rows), rows[:1], rows[-1:], eof))
                if eof["status_flag"] & ServerFlag.STATUS_LAST_ROW_SENT or not rows:
                    break
                assert len(batches) < 20
            out["batches"] = batches
            conn.cmd_stmt_close(sid)
            # The prepared cursor, read in chunks smaller than the result.
            cur = conn.cursor(prepared=True)
            cur.execute("SELECT id, payload FROM big WHERE id > ? ORDER BY id", (10,))
            chunks = []
            while chunk := cur.fetchmany(400):
                chunks.append((len(chunk), chunk[0], chunk[-1]))
            out["fetchmany"] = chunks
            cur.execute("SELECT id, payload FROM big WHERE id > ? ORDER BY id", (2990,))
            out["again"] = cur.fetchall()
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=BIG_TABLE_SETUP)
    assert sum(n for n, *_ in direct["batches"]) == 3000
    assert sum(n for n, *_ in direct["fetchmany"]) == 2990
    assert through["execute"] == direct["execute"]
    assert through["batches"] == direct["batches"]
    assert through == direct


# --- multi-results ------------------------------------------------------------------------


def _sets(cur: Any) -> list[Any]:
    sets = []
    while True:
        rows = cur.fetchall() if cur.with_rows else None
        sets.append((cur.statement, cur.description, rows, cur.rowcount, cur.lastrowid))
        if not cur.nextset():
            return sets


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mysql_connector_multi_statement_and_stored_procedure(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            cur = conn.cursor()
            cur.execute(
                "SELECT 1 AS a; INSERT INTO proc_t (v) VALUES ('four'), ('five'); "
                "SELECT id, v FROM proc_t ORDER BY id; SET @y = 'why'; SELECT @y AS y"
            )
            out["multi"] = _sets(cur)
            cur.execute("CALL two_sets(2)")
            out["call"] = _sets(cur)
            cur.close()
            cur = conn.cursor()
            returned = cur.callproc("two_sets", (3,))
            out["callproc"] = (
                returned,
                [(r.description, r.fetchall()) for r in cur.stored_results()],
            )
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run, setup=PROCEDURE_SETUP)
    assert len(direct["multi"]) == 5
    assert [s[2] for s in direct["call"]][:2] == [[(1, "one"), (2, "two")], [(5, 4, "x")]]
    assert through == direct


# --- a 20 MiB value through the binary protocol -----------------------------------------------


def test_mysql_connector_large_blob_prepared_round_trip(pair: Pair) -> None:
    blob = big_blob()

    def run(leg: Leg) -> tuple[Any, ...]:
        conn = connect(leg, read_timeout=60, write_timeout=60)
        try:
            # Up: a 20 MiB COM_STMT_EXECUTE (two 16 MiB wire packets).
            cur = conn.cursor(prepared=True)
            cur.execute("INSERT INTO blobs (id, data) VALUES (?, ?)", (1, blob))
            inserted = cur.rowcount
            cur.execute("SELECT id, LENGTH(data), MD5(data) FROM blobs WHERE id = ?", (1,))
            summary = cur.fetchall()
            cur.close()
            # Down: a 20 MiB row (mysql-connector cannot read multi-packet *binary* rows,
            # directly either, so the row comes back through the text protocol).
            text = conn.cursor()
            text.execute("SELECT id, data FROM blobs")
            rows = text.fetchall()
            text.execute("SELECT 'in sync'")
            after = text.fetchall()
            text.close()
            return inserted, summary, rows, after
        finally:
            conn.close()

    setup = ("DROP TABLE IF EXISTS blobs", "CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB)")
    direct, through = pair.both(run, setup=setup)
    assert bytes(direct[2][0][1]) == blob
    assert through[:2] == direct[:2]
    assert bytes(through[2][0][1]) == blob, "blob corrupted through hoopy"
    assert through == direct


# --- commands -------------------------------------------------------------------------------


def test_mysql_connector_ping_init_db_statistics(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            out["ping"] = conn.cmd_ping()
            out["init_db"] = conn.cmd_init_db("hoopy_test")
            cur = conn.cursor()
            cur.execute("SELECT DATABASE(), CONNECTION_ID()")
            ((db, conn_id),) = cur.fetchall()
            out["database"] = db
            out["connection_id"] = conn.connection_id == conn_id
            # KILL by the greeting's id names this session (mapped by hoopy for gateway users).
            with pytest.raises(mysql.connector.Error) as killed:
                cur.execute(f"KILL QUERY {conn.connection_id}")
            out["kill_by_connection_id"] = error_facts(killed.value)
            with pytest.raises(mysql.connector.Error) as info:
                conn.cmd_init_db("no_such_db_here")
            out["bad_init_db"] = error_facts(info.value)
            stats = conn.cmd_statistics()
            out["statistics_keys"] = sorted(stats)
            out["statistics_threads"] = stats["Threads"] >= 1
            out["is_connected"] = conn.is_connected()
            cur.execute("SELECT 'after statistics'")
            out["after"] = cur.fetchall()
            cur.close()
            return out
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct["connection_id"] and direct["database"] == "hoopy_test"
    assert "Uptime" in direct["statistics_keys"]
    assert 1317 in direct["kill_by_connection_id"]
    # Gateway users are greeted with an id of hoopy's (mapped in KILL), passthrough with
    # the target's own.
    assert through == dict(direct, connection_id=pair.mode == "passthrough")


SESSION_STATE = (
    "SET @marker = 'set before'",
    "SET SESSION sql_mode = 'ANSI_QUOTES'",
    "CREATE TEMPORARY TABLE tmp_state (x INT)",
    "PREPARE ps FROM 'SELECT 1'",
)


def _probe(conn: MySQLConnection) -> list[Any]:
    """The session state SESSION_STATE sets, as this session sees it now."""
    cur = conn.cursor()
    cur.execute(
        "SELECT @marker, @@session.sql_mode = @@global.sql_mode, CURRENT_USER(), DATABASE()"
    )
    out: list[Any] = [cur.fetchall()]
    for sql in ("SELECT COUNT(*) FROM tmp_state", "EXECUTE ps"):
        try:
            cur.execute(sql)
            out.append(cur.fetchall())
        except mysql.connector.Error as exc:
            out.append(error_facts(exc))
    cur.close()
    return out


def _set_state(conn: MySQLConnection) -> list[Any]:
    cur = conn.cursor()
    for sql in SESSION_STATE:
        cur.execute(sql)
    cur.close()
    return _probe(conn)


def test_mysql_connector_reset_connection_clears_session_state(pair: Pair) -> None:
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            before = _set_state(conn)
            cur = conn.cursor()
            cur.execute("SELECT CONNECTION_ID()")
            ((conn_id,),) = cur.fetchall()
            cur.close()
            reset = conn.cmd_reset_connection()
            after = _probe(conn)
            cur = conn.cursor()
            cur.execute("SELECT CONNECTION_ID()")
            same_thread = cur.fetchall() == [(conn_id,)]
            cur.close()
            return {"before": before, "reset": reset, "after": after, "same": same_thread}
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct["reset"] is True and direct["same"]
    assert direct["before"][1:] == [[(0,)], [(1,)]]
    assert direct["after"][0][0][0] is None  # @marker is gone
    assert direct["after"][1][1] == 1146 and direct["after"][2][1] == 1243
    assert through == direct


def test_mysql_connector_change_user_resets_session(pair: Pair) -> None:
    # Change to the same account again, then (passthrough only) to another real account.
    def run(leg: Leg) -> dict[str, Any]:
        conn = connect(leg)
        try:
            out: dict[str, Any] = {}
            out["before"] = _set_state(conn)
            out["change_same"] = conn.cmd_change_user(leg.user, leg.password, leg.database)
            out["after_same"] = _probe(conn)
            if pair.mode == "passthrough":
                conn.cmd_change_user(APP_USER, APP_PASSWORD, leg.database)
                out["after_app"] = _probe(conn)
                conn.cmd_change_user(leg.user, leg.password, "hoopy_test")
                out["after_back"] = _probe(conn)
            return out
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct["after_same"][0][0][:4] == (
        None,
        1,
        f"{pair.upstream_user}@%",
        pair.direct.database,
    )
    if pair.mode == "passthrough":
        assert direct["after_app"][0][0][2] == "app@%"
    assert through == direct


def test_mysql_connector_change_user_wrong_password_is_refused(pair: Pair) -> None:
    def run(leg: Leg) -> tuple[Any, ...]:
        conn = connect(leg)
        try:
            with pytest.raises(mysql.connector.Error) as info:
                conn.cmd_change_user(leg.user, "wrong-password", leg.database)
            return type(info.value).__name__, info.value.errno, info.value.sqlstate
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert direct[1] == 1045
    assert through == direct
