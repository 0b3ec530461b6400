"""Shared helpers for the wire-fidelity tests: the same client code, direct vs through hoopy.

Each test runs one function against two *legs*: a direct connection to MariaDB as the
upstream account hoopy would use (``app`` for gateway users, ``alice`` in passthrough), and
a connection through hoopy. It compares what the client library reports on both legs.

Hoopy is started once per test module and login mode (``HoopyPool``), not per test, to keep
the whole set fast; every test still gets its own database (``fresh_db``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pymysql
from pymysql.constants import CLIENT

from tests.gateway_rig import (
    ALICE_PASSWORD,
    ALICE_USER,
    APP_PASSWORD,
    APP_USER,
    DEV_PASSWORD,
    DEV_USER,
    HoopyProcess,
    default_config,
)
from tests.rig import MariaDBServer

MODES = ("gateway_users", "passthrough")

# A payload that crosses the protocol's 16 MiB packet boundary (max_allowed_packet is 64M).
BIG_BLOB_SIZE = 20 * 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class Leg:
    """Where and as whom a client connects."""

    name: str  # "direct" or "hoopy"
    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None
    tls_ca: str | None = None  # CA that verifies this endpoint's certificate


@dataclass(frozen=True)
class Pair:
    mode: str
    upstream_user: str  # the MariaDB account both legs end up as
    direct: Leg
    hoopy: Leg
    mariadb: MariaDBServer
    process: HoopyProcess = field(repr=False)

    @property
    def legs(self) -> tuple[Leg, Leg]:
        return (self.direct, self.hoopy)

    def admin(self, *statements: str) -> None:
        """Run SQL directly as the upstream account in the test database (setup)."""
        conn = pymysql.connect(
            host=self.direct.host,
            port=self.direct.port,
            user=self.direct.user,
            password=self.direct.password,
            database=self.direct.database,
            autocommit=True,
            ssl_disabled=True,
            client_flag=CLIENT.MULTI_STATEMENTS,
        )
        try:
            with conn.cursor() as cur:
                for stmt in statements:
                    cur.execute(stmt)
                    while cur.nextset():
                        pass
        finally:
            conn.close()

    def both(self, run: Callable[[Leg], T], *, setup: tuple[str, ...] = ()) -> tuple[T, T]:
        """``run`` on the direct leg, then (after re-running ``setup``) through hoopy.

        ``setup`` is re-run before each leg so that both see the same fresh tables
        (AUTO_INCREMENT counters included).
        """
        results = []
        for leg in self.legs:
            if setup:
                self.admin(*setup)
            results.append(run(leg))
        return results[0], results[1]


class HoopyPool:
    """One hoopy process per login mode, started on first use."""

    def __init__(self, mariadb: MariaDBServer) -> None:
        self.mariadb = mariadb
        self.processes: dict[str, HoopyProcess] = {}

    def get(self, mode: str) -> HoopyProcess:
        proc = self.processes.get(mode)
        if proc is None or not proc.running:
            workdir = Path(tempfile.mkdtemp(prefix="hoopy-gw-"))
            proc = HoopyProcess(default_config(self.mariadb, workdir, login=mode), workdir=workdir)
            self.processes[mode] = proc
            proc.start()
        return proc

    def pair(self, mode: str, database: str) -> Pair:
        proc = self.get(mode)
        mariadb = self.mariadb
        if mode == "passthrough":
            upstream = (ALICE_USER, ALICE_PASSWORD)
            front = (ALICE_USER, ALICE_PASSWORD)
        else:
            upstream = (APP_USER, APP_PASSWORD)
            front = (DEV_USER, DEV_PASSWORD)
        host, port = proc.tcp["app"]
        return Pair(
            mode=mode,
            upstream_user=upstream[0],
            direct=Leg(
                "direct",
                mariadb.host,
                mariadb.port,
                *upstream,
                database,
                unix_socket=mariadb.unix_socket,
                tls_ca=mariadb.ca_path,
            ),
            hoopy=Leg(
                "hoopy",
                host,
                port,
                *front,
                database,
                unix_socket=proc.unix_socket["app"],
                tls_ca=proc.tls_cert,
            ),
            mariadb=mariadb,
            process=proc,
        )

    def close(self) -> None:
        for mode, proc in self.processes.items():
            proc.close()
            text = proc.stderr_text()
            if text:
                print(f"--- hoopy ({mode}) pid {proc.pid} stderr (exit {proc.returncode}) ---")
                print(text)


def hoopy_pool(mariadb: MariaDBServer) -> Iterator[HoopyPool]:
    """Body of each test module's module-scoped pool fixture."""
    pool = HoopyPool(mariadb)
    try:
        yield pool
    finally:
        pool.close()


# A table with (nearly) every column type, and rows that exercise edge values and NULLs.
ALL_TYPES_DDL = """
CREATE TABLE all_types (
    id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED NOT NULL DEFAULT 0,
    bi BIGINT, biu BIGINT UNSIGNED,
    dec_ DECIMAL(20,6), f FLOAT, d DOUBLE, b BIT(10),
    dt DATE, tm TIME(3), dtm DATETIME(6), ts TIMESTAMP NULL DEFAULT NULL, y YEAR,
    c CHAR(10), vc VARCHAR(100) NOT NULL DEFAULT '', bin BINARY(4), vb VARBINARY(50),
    tx TEXT, bl BLOB, e ENUM('red','green','blue'), st SET('a','b','c'), js JSON,
    KEY k_vc (vc)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""

ALL_TYPES_ROWS = """
INSERT INTO all_types (ti, tiu, si, siu, mi, miu, i, iu, bi, biu, dec_, f, d, b,
    dt, tm, dtm, ts, y, c, vc, bin, vb, tx, bl, e, st, js) VALUES
(-128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
 -9223372036854775808, 18446744073709551615, -99999999999999.999999, -1.5, 2.5e-300, b'1010101010',
 '1000-01-01', '-838:59:59.000', '1000-01-01 00:00:00.000000', '1970-01-02 00:00:01', 1901,
 'abc', 'héllo 😀', x'00ff0001', x'00', 'text €', x'000102ff',
 'red', 'a,c', '{"k": [1, 2, {"z": null}]}'),
(127, 0, 32767, 0, 8388607, 0, 2147483647, 0,
 9223372036854775807, 0, 99999999999999.999999, 3.40282e38, -1.7976931348623157e308, b'1',
 '9999-12-31', '838:59:59.999', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07', 2155,
 '', '', x'', x'', '', x'', 'blue', '', '[]'),
(NULL, NULL, NULL, NULL, NULL, NULL, NULL, 7, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, 'nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"""

ALL_TYPES_SETUP = ("DROP TABLE IF EXISTS all_types", ALL_TYPES_DDL, ALL_TYPES_ROWS)

# Statements that fail, each with the error MariaDB reports (checked on the direct leg too).
ERROR_CASES: tuple[tuple[str, int], ...] = (
    ("SELEKT 1", 1064),
    ("SELECT * FROM no_such_table", 1146),
    ("INSERT INTO uniq (id) VALUES (1)", 1062),
    ("INSERT INTO uniq (id, v) VALUES (2, 1/0)", 1365),
    ("INSERT INTO uniq (id, s) VALUES (3, 'this is far too long')", 1406),
    ("SELECT no_such_column FROM uniq", 1054),
    ("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom f\u00e4ilure', MYSQL_ERRNO = 1644", 1644),
    ("SELECT * FROM mysql.user", 1142),
)

ERROR_SETUP = (
    "DROP TABLE IF EXISTS uniq",
    "CREATE TABLE uniq (id INT PRIMARY KEY, v INT, s VARCHAR(5))",
    "INSERT INTO uniq (id) VALUES (1)",
)

# 3,000 rows of 0-399 bytes: more than one fetch batch, streaming-cursor and multi-chunk reads.
BIG_TABLE_SETUP = (
    "DROP TABLE IF EXISTS big",
    "CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(400))",
    "SET STATEMENT max_recursive_iterations = 100000 FOR INSERT INTO big "
    "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 3000) "
    "SELECT n, REPEAT(CHAR(65 + n % 26), n % 400) FROM seq",
)

STRICT_SQL_MODE = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO'"

PROCEDURE_SETUP = (
    "DROP PROCEDURE IF EXISTS two_sets",
    "DROP TABLE IF EXISTS proc_t",
    "CREATE TABLE proc_t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))",
    "INSERT INTO proc_t (v) VALUES ('one'), ('two'), ('three')",
    """CREATE PROCEDURE two_sets(IN n INT)
    BEGIN
        SELECT id, v FROM proc_t WHERE id <= n ORDER BY id;
        UPDATE proc_t SET v = CONCAT(v, '!') WHERE id <= n;
        SELECT COUNT(*) AS total, n * 2 AS doubled, 'x' AS tag FROM proc_t;
    END""",
)


def big_blob() -> bytes:
    """20 MiB of non-repeating-looking bytes, NULs and 0xFF included."""
    block = bytes(range(256)) * 4096  # 1 MiB
    parts = [bytes([i]) + block[i:] + block[:i] for i in range(20)]
    data = b"".join(parts)[:BIG_BLOB_SIZE]
    assert len(data) == BIG_BLOB_SIZE
    return data
