"""LOAD DATA LOCAL INFILE: refused by default with a clear 1148, relayed when allowed.

With ``allow_local_infile = false`` (the default) hoopy answers the statement itself with
ER_NOT_ALLOWED_COMMAND (1148, 42000) naming the target and the setting, and the client's file
is never read. With ``allow_local_infile = true`` the file flows through and the result
(affected rows, info string, warnings, table contents) equals a direct load.
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import HoopyFactory
from tests.gateway.clients import (
    MARIADB_CLI,
    VERBOSE,
    assert_same_output,
    direct_endpoint,
    hoopy_endpoint,
    one,
    query,
    require_binary,
    run_mariadb,
)
from tests.gateway_rig import APP_PASSWORD, APP_USER, HoopyProcess
from tests.rig import MariaDBServer

TABLE = "CREATE TABLE `{db}`.`{table}` (id INT PRIMARY KEY, name VARCHAR(8), n INT)"
REFUSAL = (
    "LOAD DATA LOCAL INFILE is not allowed on target 'app' "
    "(set allow_local_infile = true in its [targets] section to allow it)"
)

# Rows that load cleanly, and rows that load with warnings (LOCAL implies IGNORE):
# too long (1265), not a number (1366), too few (1261) / too many (1262) columns, a
# duplicate key (1062, skipped): 8 records, 7 rows, 5 warnings.
SMALL_FILE = (
    "1,alpha,10\n"
    "2,beta,20\n"
    "3,waytoolongname,30\n"
    "4,delta,notanumber\n"
    "5,eps\n"
    "6,zeta,60,extra\n"
    "1,dup,99\n"
    "7,\u00e9t\u00e9,70\n"
)


def _write_small(tmp_path: Path) -> Path:
    path = tmp_path / "small.csv"
    path.write_text(SMALL_FILE, encoding="utf-8")
    return path


def _load_sql(db: str, table: str, path: Path, *, verb: str = "LOAD DATA LOCAL INFILE") -> str:
    return (
        f"{verb} '{path}' INTO TABLE `{db}`.`{table}` CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n'"
    )


def _count(mariadb: MariaDBServer, db: str, table: str) -> int:
    return int(mariadb.admin_sql(f"SELECT COUNT(*) FROM `{db}`.`{table}`")[0][0])


def _connect(hoopy: HoopyProcess, **kw: Any) -> pymysql.connections.Connection:
    return hoopy.connect(local_infile=True, **kw)


# --------------------------------------------------------------------------
# refused (the default)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verb",
    [
        "LOAD DATA LOCAL INFILE",
        "load data local infile",
        "/* bulk */ LOAD DATA LOW_PRIORITY LOCAL INFILE",
        "  \n-- comment\nLOAD DATA CONCURRENT LOCAL INFILE",
        # Executable comments: the server runs their content (issue 8, item 7).
        "LOAD DATA /*!LOCAL*/ INFILE",
        "LOAD DATA /*!50000 LOCAL */ INFILE",
        "LOAD DATA /*M!100000 LOCAL */ INFILE",
        "/*!LOAD DATA*/ LOCAL INFILE",
        "LOAD/**/DATA#c\nLOCAL INFILE",
    ],
)
def test_refused_by_default_pymysql(
    mariadb: MariaDBServer,
    hoopy_factory: HoopyFactory,
    fresh_db: str,
    tmp_path: Path,
    verb: str,
) -> None:
    mariadb.admin_sql(TABLE.format(db=fresh_db, table="t"))
    path = _write_small(tmp_path)
    hoopy = hoopy_factory()
    conn = _connect(hoopy)
    try:
        (conn_id,) = one(conn, "SELECT CONNECTION_ID()")
        with pytest.raises(pymysql.err.MySQLError) as info:
            query(conn, _load_sql(fresh_db, "t", path, verb=verb))
        assert info.value.args == (1148, REFUSAL)
        assert _count(mariadb, fresh_db, "t") == 0
        # Same session, same upstream connection, still in sync.
        assert one(conn, "SELECT CONNECTION_ID(), 1 + 1") == (conn_id, 2)
        with conn.cursor() as cur:
            assert cur.execute(f"INSERT INTO `{fresh_db}`.t VALUES (1, 'x', 1)") == 1
        assert one(conn, f"SELECT COUNT(*) FROM `{fresh_db}`.t") == (1,)
    finally:
        conn.close()


@pytest.mark.parametrize("wrap", ["/*!{}*/", "/*M!100000 {} */", "SELECT 1; /*!{} */"])
def test_refused_inside_executable_comments_pymysql(
    mariadb: MariaDBServer,
    hoopy_factory: HoopyFactory,
    fresh_db: str,
    tmp_path: Path,
    wrap: str,
) -> None:
    """The whole statement in an executable comment is refused by hoopy itself (before, the
    target refused it only because CLIENT_LOCAL_FILES is not passed on)."""
    mariadb.admin_sql(TABLE.format(db=fresh_db, table="t"))
    path = _write_small(tmp_path)
    hoopy = hoopy_factory()
    conn = _connect(hoopy, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    try:
        with pytest.raises(pymysql.err.MySQLError) as info, conn.cursor() as cur:
            cur.execute(wrap.format(_load_sql(fresh_db, "t", path)))
            while cur.nextset():
                pass
        assert info.value.args == (1148, REFUSAL)
        assert _count(mariadb, fresh_db, "t") == 0
        assert one(conn, "SELECT 'alive'") == ("alive",)
    finally:
        conn.close()


def test_load_xml_and_a_load_behind_another_statement_are_refused(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str, tmp_path: Path
) -> None:
    """LOAD XML LOCAL and a LOAD DATA LOCAL behind another statement: hoopy refuses them
    (and the upstream leg has no CLIENT_LOCAL_FILES anyway); nothing is loaded."""
    mariadb.admin_sql(TABLE.format(db=fresh_db, table="t"))
    xml = tmp_path / "rows.xml"
    xml.write_text('<list><row id="1" name="x" n="1"/></list>\n')
    path = _write_small(tmp_path)
    hoopy = hoopy_factory()
    conn = _connect(hoopy, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    try:
        for sql in (
            f"LOAD XML LOCAL INFILE '{xml}' INTO TABLE `{fresh_db}`.t",
            "SELECT 1; " + _load_sql(fresh_db, "t", path),
        ):
            with pytest.raises(pymysql.err.MySQLError) as info, conn.cursor() as cur:
                cur.execute(sql)
                while cur.nextset():
                    pass
            assert info.value.args == (1148, REFUSAL)
            assert _count(mariadb, fresh_db, "t") == 0
            assert one(conn, "SELECT 'alive'") == ("alive",)
    finally:
        conn.close()


def test_refused_by_default_cli(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str, tmp_path: Path
) -> None:
    require_binary(MARIADB_CLI)
    mariadb.admin_sql(TABLE.format(db=fresh_db, table="t"))
    path = _write_small(tmp_path)
    hoopy = hoopy_factory()
    script = f"{_load_sql(fresh_db, 't', path)};\nSELECT COUNT(*) AS n FROM `{fresh_db}`.t;\n"
    result = run_mariadb(
        hoopy_endpoint(hoopy), "--local-infile=1", "--batch", "--force", sql=script
    )
    assert result.stderr.endswith(f"ERROR 1148 (42000) at line 1: {REFUSAL}\n".encode()), (
        result.text()
    )
    # --force: the session carried on and answered the next statement.
    assert result.stdout == b"n\n0\n", result.text()
    assert _count(mariadb, fresh_db, "t") == 0


# --------------------------------------------------------------------------
# allowed
# --------------------------------------------------------------------------


def _load_result(
    conn: pymysql.connections.Connection, sql: str
) -> tuple[int, bytes | str, int, list[tuple[Any, ...]]]:
    with conn.cursor() as cur:
        affected = cur.execute(sql)
        result = conn._result
        assert result is not None
        message, warning_count = result.message, result.warning_count
    warnings = query(conn, "SHOW WARNINGS")
    return affected, message, warning_count, warnings


def test_allowed_small_file_equals_direct(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str, tmp_path: Path
) -> None:
    mariadb.admin_sql(
        TABLE.format(db=fresh_db, table="via_hoopy"), TABLE.format(db=fresh_db, table="direct")
    )
    path = _write_small(tmp_path)
    hoopy = hoopy_factory(targets={"app": {"allow_local_infile": True}})
    through_conn = _connect(hoopy)
    direct_conn = mariadb.connect(APP_USER, APP_PASSWORD, local_infile=True)
    try:
        through = _load_result(through_conn, _load_sql(fresh_db, "via_hoopy", path))
        direct = _load_result(direct_conn, _load_sql(fresh_db, "direct", path))
        assert direct[0] == 7  # 8 lines, one duplicate skipped
        # pymysql keeps the OK packet's info string with its length byte in front.
        info = direct[1] if isinstance(direct[1], bytes) else direct[1].encode()
        assert info.endswith(b"Records: 8  Deleted: 0  Skipped: 1  Warnings: 5"), info
        assert direct[2] == 5
        assert through[:3] == direct[:3]
        assert [w[:2] for w in through[3]] == [w[:2] for w in direct[3]]
        assert [w[1] for w in direct[3]] == [1265, 1366, 1261, 1262, 1062]
        # Messages equal but for the table name one of them carries.
        assert [w[2].replace("via_hoopy", "direct") for w in through[3]] == [
            w[2] for w in direct[3]
        ]
        rows_through = query(through_conn, f"SELECT * FROM `{fresh_db}`.via_hoopy ORDER BY id")
        rows_direct = query(direct_conn, f"SELECT * FROM `{fresh_db}`.direct ORDER BY id")
        assert rows_through == rows_direct
        assert rows_through[0] == (1, "alpha", 10)
        # The session goes on normally after the file transfer.
        assert one(through_conn, "SELECT 'after'") == ("after",)
    finally:
        through_conn.close()
        direct_conn.close()


def test_allowed_cli_output_equals_direct(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str, tmp_path: Path
) -> None:
    require_binary(MARIADB_CLI)
    path = _write_small(tmp_path)
    hoopy = hoopy_factory(targets={"app": {"allow_local_infile": True}})
    script = (
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(8), n INT);\n"
        f"{_load_sql(fresh_db, 't', path)};\n"
        "SELECT * FROM t ORDER BY id;\n"
        f"LOAD DATA LOCAL INFILE '{tmp_path}/missing.csv' INTO TABLE t;\n"
        "SELECT COUNT(*) FROM t;\n"
        "DROP TABLE t;\n"
    )
    options = (*VERBOSE, "--local-infile=1", "--force")
    through = run_mariadb(hoopy_endpoint(hoopy), *options, sql=script, database=fresh_db)
    direct = run_mariadb(direct_endpoint(mariadb), *options, sql=script, database=fresh_db)
    out = direct.stdout.decode()
    assert "Query OK, 7 rows affected, 5 warnings" in out, direct.text()
    assert "Records: 8  Deleted: 0  Skipped: 1  Warnings: 5" in out
    assert "Warning (Code 1262): Row 6 was truncated" in out
    assert b"ERROR 2" in direct.stderr  # the CLI cannot open the missing file
    assert_same_output(through, direct)


def _big_file(path: Path, rows: int) -> Path:
    rng = random.Random(1234)
    alphabet = string.ascii_letters + string.digits + " ,;'\"\\\u00e9\u2713"
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for i in range(1, rows + 1):
            text = "".join(rng.choices(alphabet, k=rng.randint(40, 120)))
            text = text.replace("\\", "\\\\").replace("\t", " ")
            f.write(f"{i}\t{text}\t{rng.randint(-(10**9), 10**9)}\n")
    return path


def test_allowed_5mb_file_equals_direct(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str, tmp_path: Path
) -> None:
    path = _big_file(tmp_path / "big.tsv", 60_000)
    assert 4_500_000 < path.stat().st_size < 7_000_000
    big = "CREATE TABLE `{db}`.`{t}` (id INT PRIMARY KEY, txt VARCHAR(200), n INT) ENGINE=InnoDB"
    mariadb.admin_sql(big.format(db=fresh_db, t="via_hoopy"), big.format(db=fresh_db, t="direct"))
    hoopy = hoopy_factory(targets={"app": {"allow_local_infile": True}})
    through_conn = _connect(hoopy, read_timeout=60)
    direct_conn = mariadb.connect(APP_USER, APP_PASSWORD, local_infile=True, read_timeout=60)
    sql = "LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{db}`.`{t}` CHARACTER SET utf8mb4"
    try:
        through = _load_result(through_conn, sql.format(path=path, db=fresh_db, t="via_hoopy"))
        direct = _load_result(direct_conn, sql.format(path=path, db=fresh_db, t="direct"))
        assert direct[0] == 60_000 and direct[2] == 0, direct
        assert through == direct
        digest = (
            "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('|', id, txt, n))), SUM(LENGTH(txt)) "
            "FROM `{db}`.`{t}`"
        )
        assert one(direct_conn, digest.format(db=fresh_db, t="direct"))[0] == 60_000
        assert one(through_conn, digest.format(db=fresh_db, t="via_hoopy")) == one(
            direct_conn, digest.format(db=fresh_db, t="direct")
        )
        assert one(through_conn, "SELECT 'after'") == ("after",)
    finally:
        through_conn.close()
        direct_conn.close()
