"""The real ``mariadb`` CLI through hoopy prints exactly what it prints connected directly.

Each test runs the same script twice, once through hoopy (gateway user ``dev``, which hoopy
logs in upstream as ``app``; or ``alice`` in passthrough) and once straight to MariaDB as
``app``/``alice``, with options under which the CLI prints column metadata, affected rows,
info strings and warnings, and compares exit code, stdout and stderr byte for byte (only the
"(0.001 sec)" timings are blanked).
"""

from __future__ import annotations

import pytest

from tests.conftest import HoopyFactory
from tests.gateway.clients import (
    MARIADB_CLI,
    VERBOSE,
    CliResult,
    Endpoint,
    assert_same_output,
    direct_endpoint,
    hoopy_endpoint,
    require_binary,
    run_mariadb,
)
from tests.gateway_rig import (
    ALICE_PASSWORD,
    ALICE_USER,
    APP_PASSWORD,
    APP_USER,
    DEV_PASSWORD,
    DEV_USER,
    TEST_DB,
)
from tests.rig import MariaDBServer

pytestmark = pytest.mark.usefixtures("_cli_installed")


@pytest.fixture
def _cli_installed() -> None:
    require_binary(MARIADB_CLI)


TYPES_TABLE = """
CREATE TABLE {db}.types (
    id INT AUTO_INCREMENT PRIMARY KEY,
    t TINYINT, su SMALLINT UNSIGNED, m MEDIUMINT ZEROFILL, i INT NOT NULL DEFAULT 7,
    bu BIGINT UNSIGNED, d DECIMAL(20,6), f FLOAT, dbl DOUBLE, b BIT(10),
    dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(2), y YEAR,
    c CHAR(5), vc VARCHAR(100) CHARACTER SET utf8mb4, lat VARCHAR(20) CHARACTER SET latin1,
    bin BINARY(4), vb VARBINARY(16), tt TINYTEXT, tx TEXT, mb MEDIUMBLOB, lt LONGTEXT,
    e ENUM('red','green','blue'), s SET('a','b','c'), j JSON, ip INET6, u UUID,
    g POINT, UNIQUE KEY uk_vc (vc), KEY k_d (d)
) ENGINE=InnoDB
"""

TYPES_ROWS = """
INSERT INTO {db}.types (t, su, m, i, bu, d, f, dbl, b, dt, dtm, ts, tm, y, c, vc, lat, bin, vb,
                        tt, tx, mb, lt, e, s, j, ip, u, g)
VALUES
 (-128, 65535, 42, -2147483648, 18446744073709551615, -12345678901234.123456, 3.25,
  -1.5e300, b'1010101010', '2024-02-29', '2024-02-29 23:59:58.123456',
  '2024-03-01 00:00:01.5', '-838:59:59.99', 2155, 'ab', 'héllo wörld ✓ 😀', 'caf\\xe9',
  x'00ff10', x'deadbeef00', 'tiny', REPEAT('text ', 300), x'000102030405fffe',
  REPEAT('long', 5000), 'green', 'a,c', '{{"k": [1, 2.5, null, "x"]}}', '::ffff:10.0.0.1',
  '123e4567-e89b-12d3-a456-426614174000', POINT(1.5, -2)),
 (127, 0, 0, 0, 0, 0, 0, 0, b'0', '1000-01-01', '1000-01-01 00:00:00', NULL, '00:00:00',
  1901, '', '', '', '', '', '', '', '', '', 'red', '', '[]', '::', NULL, NULL),
 (NULL, NULL, NULL, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"""

TYPES_SCRIPT = """
SELECT * FROM types ORDER BY id;
SELECT id, HEX(bin), HEX(b), ST_AsText(g), JSON_EXTRACT(j, '$.k[1]') FROM types ORDER BY id;
SELECT 1, 1.5, -1e10, 'x', NULL, _binary 'b', CAST(1 AS UNSIGNED), CAST('2020-01-01' AS DATE),
       NOW() - NOW(), 18446744073709551615 + 0, 1/3, CHAR_LENGTH('✓'), CONVERT('x' USING latin1);
SELECT t.id AS alias_id, COUNT(*) AS n, GROUP_CONCAT(e ORDER BY e) FROM types AS t GROUP BY t.id;
SELECT * FROM types WHERE 1 = 0;
SHOW COLUMNS FROM types;
"""


def _both(
    through_endpoint: Endpoint,
    direct_ep: Endpoint,
    *options: str,
    sql: str,
    database: str = TEST_DB,
) -> tuple[CliResult, CliResult]:
    """The same CLI run through hoopy, then directly."""
    through = run_mariadb(through_endpoint, *options, sql=sql, database=database)
    direct = run_mariadb(direct_ep, *options, sql=sql, database=database)
    return through, direct


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(VERBOSE, id="column-type-info"),
        pytest.param(("--batch",), id="batch"),
        pytest.param(("--batch", "--binary-as-hex", "--skip-column-names"), id="hex"),
        pytest.param(("--batch", "--quick", "--skip-column-names"), id="quick"),
    ],
)
def test_select_many_column_types(
    options: tuple[str, ...], mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    mariadb.admin_sql(TYPES_TABLE.format(db=fresh_db), TYPES_ROWS.format(db=fresh_db))
    hoopy = hoopy_factory()
    through, direct = _both(
        hoopy_endpoint(hoopy),
        direct_endpoint(mariadb),
        *options,
        sql=TYPES_SCRIPT,
        database=fresh_db,
    )
    assert direct.returncode == 0, direct.text()
    out = direct.stdout.decode("utf-8", "replace")
    assert "héllo wörld ✓ 😀" in out
    if "--column-type-info" in options:
        # The metadata really was printed, so the comparison covers it, including
        # MariaDB's extended type info (JSON, INET6, UUID, POINT).
        assert "Type:       NEWDECIMAL" in out
        assert "Flags:      NOT_NULL PRI_KEY AUTO_INCREMENT NUM PART_KEY" in out
        assert "Type:       BLOB (format=json)" in out
        assert "Type:       STRING (type=inet6)" in out
    assert_same_output(through, direct)


@pytest.mark.parametrize("login", ["gateway_users", "passthrough"])
def test_column_metadata_with_upstream_tls(
    login: str, mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    # With TLS to the target, MariaDB reads the client's capabilities from the SSLRequest:
    # hoopy once sent its SSLRequest without the extended ones, so the CLI (which asks for
    # extended metadata) got plain column definitions and called every result malformed.
    assert mariadb.ca_path
    mariadb.admin_sql(TYPES_TABLE.format(db=fresh_db), TYPES_ROWS.format(db=fresh_db))
    hoopy = hoopy_factory(login, targets={"app": {"tls": "verify-ca", "tls_ca": mariadb.ca_path}})
    user, password = (
        (ALICE_USER, ALICE_PASSWORD) if login == "passthrough" else (DEV_USER, DEV_PASSWORD)
    )
    direct_user = (
        (ALICE_USER, ALICE_PASSWORD) if login == "passthrough" else (APP_USER, APP_PASSWORD)
    )
    through, direct = _both(
        hoopy_endpoint(hoopy, user, password),
        direct_endpoint(mariadb, *direct_user),
        *VERBOSE,
        sql=TYPES_SCRIPT,
        database=fresh_db,
    )
    assert direct.returncode == 0, direct.text()
    assert "Type:       BLOB (format=json)" in direct.stdout.decode("utf-8", "replace")
    assert_same_output(through, direct)


DML_SCRIPT = """
CREATE TABLE dml (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(8) UNIQUE, n INT NOT NULL);
INSERT INTO dml (name, n) VALUES ('a', 1), ('b', 2), ('c', 3);
SELECT LAST_INSERT_ID(), ROW_COUNT();
INSERT IGNORE INTO dml (name, n) VALUES ('a', 9), ('d', 4), ('toolongname', 5);
UPDATE dml SET n = n + 10 WHERE id <= 2;
UPDATE dml SET n = n WHERE id = 1;
INSERT INTO dml (name, n) VALUES ('a', 0) ON DUPLICATE KEY UPDATE n = n + 100;
REPLACE INTO dml (id, name, n) VALUES (2, 'bb', 22);
UPDATE IGNORE dml SET n = NULL WHERE name = 'c';
DELETE FROM dml WHERE n > 100;
SELECT 1 / 0, CAST('12abc' AS SIGNED), CONVERT('x', DATE);
SELECT * FROM dml ORDER BY id;
SHOW WARNINGS;
SIGNAL SQLSTATE '01000' SET MESSAGE_TEXT = 'a custom warning', MYSQL_ERRNO = 1642;
INSERT INTO dml (name, n) SELECT CONCAT('z', id), n FROM dml;
DROP TABLE dml;
DROP TABLE IF EXISTS dml;
"""


def test_dml_affected_rows_info_and_warnings(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    hoopy = hoopy_factory()
    through, direct = _both(
        hoopy_endpoint(hoopy),
        direct_endpoint(mariadb),
        *VERBOSE,
        sql=DML_SCRIPT,
        database=fresh_db,
    )
    out = direct.stdout.decode()
    assert direct.returncode == 0, direct.text()
    # The interesting lines are really there (so "equal" means something).
    assert "Query OK, 3 rows affected" in out
    assert "Records: 3  Duplicates: 0  Warnings: 0" in out
    assert "Records: 3  Duplicates: 1  Warnings: 2" in out
    assert "Rows matched: 2  Changed: 2  Warnings: 0" in out
    assert "Rows matched: 1  Changed: 0  Warnings: 0" in out
    assert "Query OK, 2 rows affected" in out  # ON DUPLICATE KEY UPDATE / REPLACE
    assert "Warning (Code 1062): Duplicate entry 'a' for key 'name'" in out
    assert "Warning (Code 1365): Division by 0" in out
    assert "Note (Code 1051): Unknown table" in out
    assert "Query OK, 0 rows affected, 1 warning" in out  # SIGNAL '01000'
    assert "Records: 4  Duplicates: 0  Warnings: 0" in out
    assert_same_output(through, direct)


ERROR_SCRIPT = """
SELECT * FROM no_such_table;
SELEC 1;
SELECT no_such_column FROM DUAL;
CREATE TABLE e (id INT PRIMARY KEY);
INSERT INTO e VALUES (1), (1);
SELECT COUNT(*) FROM e;
SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom failure ✓', MYSQL_ERRNO = 1644;
DROP TABLE e;
USE no_such_db;
SELECT 'still here';
"""


def test_errors_identical(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    hoopy = hoopy_factory()
    # --force: keep going after each error, so every error text is compared.
    through, direct = _both(
        hoopy_endpoint(hoopy),
        direct_endpoint(mariadb),
        *VERBOSE,
        "--force",
        sql=ERROR_SCRIPT,
        database=fresh_db,
    )
    err = direct.stderr.decode()
    assert f"ERROR 1146 (42S02) at line 2: Table '{fresh_db}.no_such_table' doesn't exist" in err
    assert "ERROR 1064 (42000) at line 3: You have an error in your SQL syntax" in err
    assert "ERROR 1054 (42S22) at line 4: Unknown column 'no_such_column'" in err
    assert "ERROR 1062 (23000) at line 6: Duplicate entry '1' for key 'PRIMARY'" in err
    assert "ERROR 1644 (45000) at line 8: custom failure ✓" in err
    assert "ERROR 1044 (42000) at line 10: Access denied for user" in err
    assert_same_output(through, direct)

    # Without --force the CLI stops at the first error, exit code 1, same text.
    through, direct = _both(
        hoopy_endpoint(hoopy),
        direct_endpoint(mariadb),
        "--batch",
        sql="SELECT 1;\nSELECT * FROM hoopy_test.nosuch;\nSELECT 2;\n",
    )
    assert direct.returncode == 1
    assert direct.stdout == b"1\n1\n"
    # (the CLI also echoes the failing query: --print-query-on-error is on by default)
    assert direct.stderr.endswith(
        b"SELECT * FROM hoopy_test.nosuch\n--------------\n\n"
        b"ERROR 1146 (42S02) at line 2: Table 'hoopy_test.nosuch' doesn't exist\n"
    ), direct.stderr
    assert_same_output(through, direct)

    # -e: same error line, exit code 1.
    through, direct = _both(
        hoopy_endpoint(hoopy),
        direct_endpoint(mariadb),
        "-e",
        "SELECT * FROM nosuch",
        sql="",
    )
    assert direct.stderr.endswith(
        b"ERROR 1146 (42S02) at line 1: Table 'hoopy_test.nosuch' doesn't exist\n"
    ), direct.stderr
    assert_same_output(through, direct)


MULTI_SCRIPT = """
CREATE TABLE ms (id INT PRIMARY KEY, v VARCHAR(10));
DELIMITER //
INSERT INTO ms VALUES (1, 'one'), (2, 'two'); SELECT * FROM ms ORDER BY id; UPDATE ms SET v = UPPER(v); SELECT v FROM ms WHERE id = 2; SELECT 1 / 0//
SELECT 'a' AS x; SELECT * FROM nope; SELECT 'never' AS y//
SELECT COUNT(*) AS still_ok FROM ms//
DELIMITER ;
DROP TABLE ms;
"""


def test_multi_statement_script(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    """With a custom delimiter the CLI sends several statements in one COM_QUERY."""
    hoopy = hoopy_factory()
    through, direct = _both(
        hoopy_endpoint(hoopy),
        direct_endpoint(mariadb),
        *VERBOSE,
        "--force",
        sql=MULTI_SCRIPT,
        database=fresh_db,
    )
    out = direct.stdout.decode()
    assert "Records: 2  Duplicates: 0  Warnings: 0" in out
    assert "| TWO  |" in out
    assert "Warning (Code 1365): Division by 0" in out
    assert "| still_ok |" in out and "| never |" not in out
    assert b"ERROR 1146 (42S02) at line 5" in direct.stderr
    assert_same_output(through, direct)


PROCEDURE = """
CREATE PROCEDURE {db}.multi(IN k INT)
BEGIN
    CREATE TEMPORARY TABLE tp (id INT, label VARCHAR(20));
    INSERT INTO tp VALUES (1, 'first'), (2, 'second'), (3, 'third');
    SELECT id, label FROM tp WHERE id <= k ORDER BY id;
    SELECT COUNT(*) AS n, SUM(id) AS s, 'x' AS literal FROM tp;
    UPDATE tp SET label = 'changed' WHERE id = 1;
    SELECT * FROM tp WHERE 1 = 0;
    SELECT 1 / 0 AS warned;
    DROP TEMPORARY TABLE tp;
END
"""


def test_call_procedure_with_multiple_result_sets(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    mariadb.admin_sql(PROCEDURE.format(db=fresh_db))
    hoopy = hoopy_factory()
    script = "CALL multi(2);\nCALL multi(3);\nCALL no_such_proc();\nSELECT 'after' AS a;\n"
    through, direct = _both(
        hoopy_endpoint(hoopy),
        direct_endpoint(mariadb),
        *VERBOSE,
        "--force",
        sql=script,
        database=fresh_db,
    )
    out = direct.stdout.decode()
    assert out.count("rows in set") + out.count("row in set") >= 8
    assert "| second |" in out and "| literal |" in out
    assert b"ERROR 1305 (42000) at line 3: PROCEDURE " in direct.stderr
    assert_same_output(through, direct)


def test_tls_verified_against_hoopy_cert(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory
) -> None:
    hoopy = hoopy_factory()
    assert hoopy.tls_cert, "hoopy did not report its certificate"
    verified = ("--ssl-ca", hoopy.tls_cert, "--ssl-verify-server-cert")
    sql = "SELECT CURRENT_USER(), DATABASE(), 1 + 1;\nSELECT * FROM hoopy_test.nosuch;\n"
    through = run_mariadb(hoopy_endpoint(hoopy), *verified, *VERBOSE, sql=sql)
    direct = run_mariadb(direct_endpoint(mariadb), *VERBOSE, sql=sql)
    assert direct.returncode == 1
    assert_same_output(through, direct)

    # The client leg really is TLS (the CLI's own status, not the upstream's).
    status = run_mariadb(hoopy_endpoint(hoopy), *verified, "-e", "status")
    assert status.returncode == 0, status.text()
    assert "Cipher in use is" in status.stdout.decode(), status.text()

    # And verification really happens: the wrong CA is refused by the client.
    wrong = run_mariadb(
        hoopy_endpoint(hoopy),
        "--ssl-ca",
        str(mariadb.ca_path),
        "--ssl-verify-server-cert",
        "-e",
        "SELECT 1",
    )
    assert wrong.returncode == 1
    assert wrong.stderr.startswith(b"ERROR 2026 (HY000): TLS/SSL error"), wrong.text()


def test_unix_socket(mariadb: MariaDBServer, hoopy_factory: HoopyFactory) -> None:
    hoopy = hoopy_factory()
    sql = "SELECT CURRENT_USER(), DATABASE(), @@version;\nSELECT * FROM seq_1_to_5;\n"
    through = run_mariadb(hoopy_endpoint(hoopy, unix=True), *VERBOSE, sql=sql)
    direct = run_mariadb(direct_endpoint(mariadb), *VERBOSE, sql=sql)
    assert direct.returncode == 0, direct.text()
    assert b"| app@%          | hoopy_test |" in direct.stdout
    assert_same_output(through, direct)


def test_passthrough_login_as_alice(mariadb: MariaDBServer, hoopy_factory: HoopyFactory) -> None:
    hoopy = hoopy_factory("passthrough")
    sql = (
        "SELECT CURRENT_USER(), USER(), DATABASE();\n"
        "CREATE TEMPORARY TABLE pt (a INT);\nINSERT INTO pt VALUES (1), (2);\n"
        "SELECT SUM(a) FROM pt;\nSELECT * FROM mysql.user;\n"
    )
    direct_alice = direct_endpoint(mariadb, ALICE_USER, ALICE_PASSWORD)
    for unix in (False, True):
        through = run_mariadb(
            hoopy_endpoint(hoopy, ALICE_USER, ALICE_PASSWORD, unix=unix),
            *VERBOSE,
            "--force",
            sql=sql,
        )
        direct = run_mariadb(direct_alice, *VERBOSE, "--force", sql=sql)
        assert b"| alice@%        | alice@127.0.0.1 | hoopy_test |" in direct.stdout
        assert b"ERROR 1142 (42000) at line 5: SELECT command denied to user 'alice'" in (
            direct.stderr
        )
        assert_same_output(through, direct)


def test_wrong_password(mariadb: MariaDBServer, hoopy_factory: HoopyFactory) -> None:
    gateway = hoopy_factory()
    result = run_mariadb(hoopy_endpoint(gateway, password="wrong"), "-e", "SELECT 1")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.startswith(b"ERROR 1045 (28000): Access denied for user 'dev'"), (
        result.text()
    )

    # Passthrough relays MariaDB's own refusal: identical to a direct login.
    passthrough = hoopy_factory("passthrough")
    for user in (ALICE_USER, "nobody"):
        through = run_mariadb(hoopy_endpoint(passthrough, user, "wrong"), "-e", "SELECT 1")
        direct = run_mariadb(direct_endpoint(mariadb, user, "wrong"), "-e", "SELECT 1")
        assert (
            direct.stderr
            == (
                f"ERROR 1045 (28000): Access denied for user '{user}'@'127.0.0.1' "
                "(using password: YES)\n"
            ).encode()
        )
        assert_same_output(through, direct)
    # Both hoopys still serve.
    ok = run_mariadb(hoopy_endpoint(gateway), "--batch", "-e", "SELECT 42")
    assert (ok.returncode, ok.stdout) == (0, b"42\n42\n"), ok.text()


def test_stream_100k_rows(mariadb: MariaDBServer, hoopy_factory: HoopyFactory) -> None:
    hoopy = hoopy_factory()
    sql = "SELECT seq FROM seq_1_to_100000;\nSELECT seq, REPEAT('x', seq % 300) FROM seq_1_to_20000;\n"
    expected_first = b"".join(b"%d\n" % i for i in range(1, 100001))
    for options in (
        ("--batch", "--skip-column-names"),
        ("--batch", "--skip-column-names", "--quick"),
    ):
        through, direct = _both(hoopy_endpoint(hoopy), direct_endpoint(mariadb), *options, sql=sql)
        assert direct.returncode == 0, direct.text()
        assert direct.stdout.startswith(expected_first)
        assert len(direct.stdout.splitlines()) == 120000
        assert through.returncode == 0, through.text()
        assert through.stdout == direct.stdout
        assert through.stderr == direct.stderr == b""
