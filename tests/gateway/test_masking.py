"""Masking through real clients: each strategy and protocol, what the audit records, fidelity
of what is not masked, and failing closed.

One hoopy per module on the rig's MariaDB. Target ``app`` applies the set ``pii`` to every
session; the gateway user ``auditor`` has a role exempt from masking on it. The table
``customers`` holds personal data; its columns pick the strategies (see ``MASKING``).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mariadb as mariadb_client
import MySQLdb
import MySQLdb.constants.CLIENT
import pymysql
import pytest
from mariadb.constants import CURSOR

from hoopy.audit.reader import iter_records
from tests.gateway.clients import MARIADB_CLI, hoopy_endpoint, require_binary, run_mariadb
from tests.gateway.test_raw_protocol import BASE_CAPS, RawClient, count_response
from tests.gateway_rig import (
    APP_PASSWORD,
    DEV_PASSWORD,
    DEV_USER,
    REPO_ROOT,
    TEST_DB,
    HoopyProcess,
    deep_merge,
    default_config,
)
from tests.rig import MariaDBServer

AUDITOR_PASSWORD = "auditor-" + secrets.token_hex(8)
SUPPORT_PASSWORD = "support-" + secrets.token_hex(8)
MASK_KEY = secrets.token_hex(32)
TABLE = "customers_" + secrets.token_hex(3)
VIEW = "v_" + TABLE
OTHER = "other_" + TABLE

MASKING = {
    # Content classifiers as a backstop, for the role "support" (on top of "pii").
    "backstop": {
        "rules": [
            {
                "name": "found",
                "classifiers": ["email", "card", "ip"],
                "patterns": ["EMP-[0-9]{6}"],
                "strategy": "redact",
                "replacement": "[classified]",
            }
        ]
    },
    "pii": {
        "hmac_key_env": "HOOPY_TEST_MASK_KEY",
        "rules": [
            {"name": "emails", "columns": ["*.email"], "strategy": "hmac"},
            {"name": "cards", "columns": [f"{TABLE}.card"], "strategy": "keep_last", "keep": 4},
            {"name": "ssn", "columns": ["*ssn*"], "strategy": "redact", "probe": "deny"},
            {"name": "born", "columns": [f"{TEST_DB}.{TABLE}.born"], "strategy": "redact"},
            {"name": "salary", "columns": [f"{TABLE}.salary"], "strategy": "null"},
            {"name": "big", "columns": ["*.secret_blob"], "strategy": "redact"},
        ],
    }
}

ROWS = [
    (1, "alice@example.com", "4111111111111111", "123-45-6789", "1980-05-17", 5000, "first"),
    (2, "bob@example.com", "5500000000000004", "987-65-4321", "1975-01-02", 7000, None),
    (3, None, None, None, None, None, "third"),
]


@pytest.fixture(scope="module")
def gateway(mariadb: MariaDBServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HoopyProcess]:
    mariadb.admin_sql(
        f"CREATE TABLE {TEST_DB}.{TABLE} (id INT PRIMARY KEY, email VARCHAR(80), "
        "card CHAR(16), ssn VARCHAR(11), born DATE, salary INT, note VARCHAR(20))",
        *[
            (f"INSERT INTO {TEST_DB}.{TABLE} VALUES (%s, %s, %s, %s, %s, %s, %s)", row)
            for row in ROWS
        ],
        f"CREATE VIEW {TEST_DB}.{VIEW} AS SELECT id, email AS mail FROM {TEST_DB}.{TABLE}",
        f"CREATE TABLE {TEST_DB}.{OTHER} (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT)",
    )
    workdir = tmp_path_factory.mktemp("masking")
    base = default_config(mariadb, workdir)
    config = deep_merge(
        base,
        {
            "masking": MASKING,
            "targets": {"app": {"masking": ["pii"]}},
            "users": {
                "auditor": {"password_env": "HOOPY_TEST_AUDITOR_PASSWORD", "groups": ["audit"]},
                "support": {"password_env": "HOOPY_TEST_SUPPORT_PASSWORD", "groups": ["support"]},
            },
            "roles": {
                "auditors": {"groups": ["audit"], "targets": ["app"], "masking_exempt": True},
                "support": {"groups": ["support"], "targets": ["app"], "masking": ["backstop"]},
            },
            "audit": {"directory": str(workdir / "audit")},
        },
    )
    env = {
        "HOOPY_TEST_MASK_KEY": MASK_KEY,
        "HOOPY_TEST_AUDITOR_PASSWORD": AUDITOR_PASSWORD,
        "HOOPY_TEST_SUPPORT_PASSWORD": SUPPORT_PASSWORD,
    }
    proc = HoopyProcess(config, workdir=workdir, env=env)
    proc.start()
    yield proc
    proc.close()
    mariadb.admin_sql(
        f"DROP VIEW IF EXISTS {TEST_DB}.{VIEW}",
        f"DROP TABLE IF EXISTS {TEST_DB}.{TABLE}",
        f"DROP TABLE IF EXISTS {TEST_DB}.{OTHER}",
    )


def audit_records(gateway: HoopyProcess) -> list[dict[str, Any]]:
    return list(iter_records(Path(gateway.config["audit"]["directory"])))


def wait_for_outcome(gateway: HoopyProcess, statement: dict[str, Any]) -> dict[str, Any]:
    """The outcome of ``statement`` (outcomes are written with the next record or within
    fsync_interval: they may not be in yet when the client has its answer)."""
    deadline = time.monotonic() + 10
    while True:
        for r in audit_records(gateway):
            if (
                r.get("kind") == "outcome"
                and r.get("session") == statement["session"]
                and r.get("seq") == statement["seq"]
            ):
                return r
        assert time.monotonic() < deadline, "no outcome recorded"
        time.sleep(0.1)


def assert_masked(rows: list[tuple[Any, ...]]) -> None:
    """Rows of ``SELECT id, email, card, ssn, born, salary, note`` as masking must show them."""
    by_id = {r[0]: r for r in rows}
    alice, bob, empty = by_id[1], by_id[2], by_id[3]
    assert str(alice[1]).startswith("h:") and len(alice[1]) == 18
    assert alice[1] != bob[1]
    assert alice[2] == "************1111" and bob[2] == "************0004"
    assert alice[3] == bob[3] == "****"
    assert str(alice[4]) == str(bob[4]) == "1970-01-01"
    assert alice[5] is None and bob[5] is None
    assert alice[6] == "first" and bob[6] is None
    assert empty[1:6] == (None,) * 5 and empty[6] == "third"


SELECT = f"SELECT id, email, card, ssn, born, salary, note FROM {TABLE} ORDER BY id"


def test_pymysql_text_protocol_masks_every_strategy(gateway: HoopyProcess) -> None:
    conn = gateway.connect(database=TEST_DB)
    with conn.cursor() as cur:
        cur.execute(SELECT)
        rows = list(cur.fetchall())
        description = cur.description
    assert_masked(rows)
    # Column metadata stays valid: room for the stand-in, and NULL now possible.
    by_name = {d[0]: d for d in description}
    assert by_name["email"][3] >= 18  # display size
    assert by_name["salary"][6] is True  # null_ok
    # Aliases do not hide the origin; the same value gives the same stand-in (joins work).
    with conn.cursor() as cur:
        cur.execute(f"SELECT email AS e, card AS c FROM {TABLE} WHERE id = 1")
        aliased = cur.fetchone()
    assert aliased == (rows[0][1], rows[0][2])
    conn.close()


def test_the_audit_records_what_was_masked_never_the_values(gateway: HoopyProcess) -> None:
    conn = gateway.connect(database=TEST_DB)
    marker = f"/* masked-audit {secrets.token_hex(4)} */ "
    with conn.cursor() as cur:
        cur.execute(marker + SELECT)
        cur.fetchall()
    conn.close()
    records = audit_records(gateway)
    (statement,) = [r for r in records if r.get("kind") == "statement" and marker in (r.get("sql") or "")]
    outcome = wait_for_outcome(gateway, statement)
    assert outcome["masked"] == {
        "pii/emails": {"columns": ["email"], "values": 2},
        "pii/cards": {"columns": ["card"], "values": 2},
        "pii/ssn": {"columns": ["ssn"], "values": 2},
        "pii/born": {"columns": ["born"], "values": 2},
        "pii/salary": {"columns": ["salary"], "values": 2},
    }
    assert outcome["rows"] == 3
    # hoopy replay shows what was masked with the statement.
    shown = subprocess.run(
        [sys.executable, "-m", "hoopy", "replay", statement["session"], "--config",
         str(gateway.config_path)],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # rich wraps long lines
    assert "rows, masked pii/" in text and "pii/emails: email (2 values)" in text, text
    assert "alice@example.com" not in shown.stdout
    text = Path(gateway.config["audit"]["directory"]).glob("*.jsonl")
    for path in text:
        data = path.read_text()
        for value in ("alice@example.com", "4111111111111111", "123-45-6789", "1980-05-17"):
            assert value not in data


def test_an_exempt_role_sees_the_values(gateway: HoopyProcess) -> None:
    conn = gateway.connect("auditor", AUDITOR_PASSWORD, database=TEST_DB)
    with conn.cursor() as cur:
        cur.execute(SELECT)
        rows = cur.fetchall()
    conn.close()
    assert rows[0][1:4] == ("alice@example.com", "4111111111111111", "123-45-6789")


def test_mysql_connector_prepared_statements_mask_in_the_binary_protocol(
    gateway: HoopyProcess,
) -> None:
    text_conn = gateway.connect(database=TEST_DB)
    with text_conn.cursor() as cur:
        cur.execute(SELECT)
        text_rows = list(cur.fetchall())
    text_conn.close()
    conn = gateway.connect_connector(TEST_DB)
    cur = conn.cursor(prepared=True)
    cur.execute(SELECT.replace("ORDER BY id", "WHERE id > ? ORDER BY id"), (0,))
    rows = [tuple(v.decode() if isinstance(v, bytes | bytearray) else v for v in r) for r in cur.fetchall()]
    assert_masked(rows)
    # The same stand-ins in both protocols.
    assert [r[1] for r in rows] == [r[1] for r in text_rows]
    conn.close()


def test_mariadb_connector_cursor_masks_the_rows_com_stmt_fetch_reads(gateway: HoopyProcess) -> None:
    host, port = gateway.tcp["app"]
    conn = mariadb_client.connect(
        host=host, port=port, user=DEV_USER, password=DEV_PASSWORD, database=TEST_DB
    )
    cur = conn.cursor(cursor_type=CURSOR.READ_ONLY, prefetch_size=1)
    cur.execute(SELECT.replace("ORDER BY id", "WHERE id > ? ORDER BY id"), (0,))
    rows = [cur.fetchone() for _ in range(3)]
    assert_masked(rows)  # type: ignore[arg-type]
    cur.close()
    conn.close()


def test_mysqlclient_and_multiple_result_sets(gateway: HoopyProcess) -> None:
    host, port = gateway.tcp["app"]
    conn = MySQLdb.connect(
        host=host, port=port, user=DEV_USER, password=DEV_PASSWORD, database=TEST_DB,
        client_flag=MySQLdb.constants.CLIENT.MULTI_STATEMENTS,
    )  # fmt: skip
    cur = conn.cursor()
    cur.execute(f"SELECT note FROM {TABLE} WHERE id = 1; {SELECT}; SELECT email FROM {TABLE} WHERE id = 2")
    assert cur.fetchall() == (("first",),)
    assert cur.nextset()
    assert_masked(list(cur.fetchall()))
    assert cur.nextset()
    (email,) = cur.fetchall()[0]
    assert email.startswith("h:")
    assert not cur.nextset()
    conn.close()


def test_mariadb_cli_prints_masked_values(gateway: HoopyProcess) -> None:
    require_binary(MARIADB_CLI)
    result = run_mariadb(hoopy_endpoint(gateway), "--batch", sql=SELECT)
    assert result.returncode == 0, result.text()
    out = result.stdout.decode()
    assert "************1111" in out and "****" in out
    for value in ("alice@example.com", "4111111111111111", "123-45-6789", "1980-05-17", "5000"):
        assert value not in out


def test_results_without_masked_columns_pass_byte_for_byte(
    gateway: HoopyProcess, mariadb: MariaDBServer
) -> None:
    host, port = gateway.tcp["app"]
    direct = RawClient(mariadb.host, mariadb.port, "app", APP_PASSWORD, TEST_DB, BASE_CAPS)
    through = RawClient(host, port, DEV_USER, DEV_PASSWORD, TEST_DB, BASE_CAPS)
    for sql in (
        f"SELECT id, note FROM {TABLE} ORDER BY id",
        f"SELECT note FROM {TABLE}; SELECT id FROM {TABLE} ORDER BY id",
        "SELECT 1",
        f"UPDATE {TABLE} SET note = note WHERE id = 1",
    ):
        payload = b"\x03" + sql.encode()
        assert count_response(through, payload) == count_response(direct, payload), sql
    direct.close()
    through.close()


def test_a_value_that_cannot_be_masked_ends_the_result_with_an_error(gateway: HoopyProcess) -> None:
    conn = gateway.connect(database=TEST_DB)
    marker = f"/* unmaskable {secrets.token_hex(4)} */ "
    with conn.cursor() as cur:
        # Results in a character set hoopy cannot decode: no stand-in can be written.
        cur.execute("SET character_set_results = 'dec8'")
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute(marker + SELECT)
        code, message = info.value.args
        assert code == 1105 and "could not mask" in message and "dec8" in message
    # The session stays in step with its target and goes on.
    with conn.cursor() as cur:
        cur.execute("SET character_set_results = 'utf8mb4'")
        cur.execute(SELECT)
        assert_masked(list(cur.fetchall()))
    conn.close()
    (statement,) = [
        r for r in audit_records(gateway)
        if r.get("kind") == "statement" and marker in (r.get("sql") or "")
    ]  # fmt: skip
    failed = wait_for_outcome(gateway, statement)
    assert failed["error"]["code"] == 1105 and "could not mask" in failed["error"]["message"]
    assert "alice" not in json.dumps(failed)


# --- the evasion corpus --------------------------------------------------------------------

SECRETS = [v for row in ROWS for v in row[1:4] if v]

EVASIONS = [
    f"SELECT email AS e FROM {TABLE}",
    f"SELECT CONCAT(email, '') FROM {TABLE}",
    f"SELECT UPPER(email), LOWER(card) FROM {TABLE}",
    f"SELECT SUBSTRING(card, 1, 16) AS c FROM {TABLE}",
    f"SELECT (SELECT email FROM {TABLE} WHERE id = 1) AS s",
    f"SELECT * FROM (SELECT email FROM {TABLE}) d",
    f"SELECT d.m FROM (SELECT email AS m FROM {TABLE}) AS d",
    f"WITH c AS (SELECT email FROM {TABLE}) SELECT * FROM c",
    f"WITH c (m) AS (SELECT card FROM {TABLE}) SELECT CONCAT(m, '') FROM c",
    f"SELECT email FROM {TABLE} UNION SELECT 'x'",
    f"SELECT 'x' UNION ALL SELECT email FROM {TABLE}",
    f"SELECT * FROM {VIEW}",
    f"SELECT CONCAT(mail, '!') FROM {VIEW}",
    f"SELECT v.mail FROM {VIEW} v JOIN {TABLE} t ON t.id = v.id",
    f"SELECT JSON_OBJECT('e', email) FROM {TABLE}",
    f"SELECT JSON_ARRAYAGG(card) FROM {TABLE}",
    f"SELECT GROUP_CONCAT(email SEPARATOR ',') FROM {TABLE}",
    f"SELECT /*!50000 email AS */ x FROM {TABLE}",
    f"SELECT /*M! CONCAT(email, '') AS */ y FROM {TABLE}",
    f"SELECT HEX(card) FROM {TABLE}",
    f"SELECT REVERSE(ssn) FROM {TABLE}",
    f"SELECT CASE WHEN id > 0 THEN email END FROM {TABLE}",
    f"SELECT IFNULL(email, 'n'), COALESCE(NULL, card) FROM {TABLE}",
    f"SELECT t.* FROM {TABLE} t",
    f"SELECT `email` FROM `{TEST_DB}`.`{TABLE}`",
    f"select EmAiL from {TABLE}",
    f"SELECT id, note FROM {TABLE}; SELECT CONCAT(card, '') FROM {TABLE}",
    # A star inside a derived table or CTE (its columns report the derived table).
    f"SELECT CONCAT(email, ''), UPPER(ssn) FROM (SELECT * FROM {TABLE}) d",
    f"WITH d AS (SELECT * FROM {TABLE}) SELECT CONCAT(card, '') FROM d",
    f"SELECT * FROM (SELECT * FROM {TABLE}) d",
    # A UNION of stars reports names without a table.
    f"SELECT * FROM {TABLE} UNION ALL SELECT * FROM {TABLE}",
]

DENIED = [
    f"SELECT @x := email FROM {TABLE}",
    f"SELECT email INTO @y FROM {TABLE} LIMIT 1",
    f"SET @z = (SELECT email FROM {TABLE} LIMIT 1)",
    f"CREATE TABLE {OTHER}_copy AS SELECT email FROM {TABLE}",
    f"INSERT INTO {OTHER} (note) SELECT email FROM {TABLE}",
    f"UPDATE {OTHER} SET note = (SELECT email FROM {TABLE} LIMIT 1)",
    f"PREPARE s FROM 'SELECT CONCAT(email, 1) FROM {TABLE}'",
    f"SELECT email FROM {TABLE} INTO OUTFILE '/tmp/hoopy-masking-leak'",
    # Under the reading of a server that runs it, the comment makes the text unparsable:
    # what feeds the result is unknown, and it names a masked column.
    f"SELECT /*!99999 1 AS */ CONCAT(email, '') FROM {TABLE}",
    # probe = "deny" on ssn: its values cannot be searched for
    f"SELECT id FROM {TABLE} WHERE ssn LIKE '1%'",
    f"SELECT id FROM {TABLE} ORDER BY ssn",
    f"SELECT COUNT(*) FROM {TABLE} GROUP BY ssn",
    f"SELECT id FROM (SELECT * FROM {TABLE}) d WHERE ssn LIKE '1%'",
    f"SELECT id, ssn FROM {TABLE} ORDER BY 2",
    f"SELECT c.id FROM {TABLE} c NATURAL JOIN (SELECT '123-45-6789' AS ssn) x",
    # Writes through VALUES, SET and RETURNING, not only INSERT ... SELECT.
    f"INSERT INTO {OTHER} (note) VALUES ((SELECT email FROM {TABLE} LIMIT 1))",
    f"INSERT INTO {OTHER} SET note = (SELECT ssn FROM {TABLE} LIMIT 1)",
    f"INSERT INTO {OTHER} (note) VALUES ((SELECT 'x' UNION SELECT email FROM {TABLE} LIMIT 1))",
    f"DELETE FROM {OTHER} WHERE id = 0 RETURNING (SELECT CONCAT(email, '') FROM {TABLE} LIMIT 1)",
    # What masking cannot follow at all.
    f"IF 1 THEN SELECT CONCAT(email, '') FROM {TABLE}; END IF",
    f"CREATE FUNCTION f_{TABLE}() RETURNS TEXT RETURN (SELECT email FROM {TABLE} LIMIT 1)",
    f"SELECT * FROM {TABLE} WHERE id = 1 INTO @i, @e, @c, @s, @b, @p, @n",
    "SET character_set_results = utf32",
]


def _stable_id(sql: str) -> str:
    """The test id without the table's random suffix: every pytest-xdist worker imports this
    module and must collect the same ids."""
    return sql.replace(TABLE, "customers")


def leaks(rows: Any) -> list[str]:
    text = repr(rows).lower()
    found = []
    for value in SECRETS:
        v = value.lower()
        for form in (v, v[::-1], v.encode().hex()):
            if form in text:
                found.append(form)
    return found


@pytest.mark.parametrize("sql", EVASIONS, ids=lambda sql: _stable_id(sql))
def test_evasions_come_back_masked(gateway: HoopyProcess, sql: str) -> None:
    conn = gateway.connect(database=TEST_DB, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    with conn.cursor() as cur:
        cur.execute(sql)
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
    conn.close()
    assert any(results), sql  # it ran, and returned rows
    assert leaks(results) == [], (sql, results)


@pytest.mark.parametrize("sql", DENIED, ids=lambda sql: _stable_id(sql))
def test_what_masking_cannot_follow_is_refused(gateway: HoopyProcess, sql: str) -> None:
    conn = gateway.connect(database=TEST_DB)
    with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as info:
        cur.execute(sql)
    code, message = info.value.args
    assert code == 1290 and "hoopy masking" in message, (sql, message)
    assert not any(v in message for v in SECRETS)
    conn.close()


def test_evasions_through_prepared_statements(gateway: HoopyProcess) -> None:
    conn = gateway.connect_connector(TEST_DB)
    cur = conn.cursor(prepared=True)
    for sql in (
        f"SELECT CONCAT(email, '') FROM {TABLE} WHERE id > ?",
        f"SELECT mail FROM {VIEW} WHERE id > ?",
        f"SELECT * FROM (SELECT card FROM {TABLE} WHERE id > ?) d",
    ):
        cur.execute(sql, (0,))
        rows = cur.fetchall()
        assert rows and leaks(rows) == [], (sql, rows)
    conn.close()


def test_errors_and_warnings_of_statements_reading_masked_columns_hide_their_messages(
    gateway: HoopyProcess,
) -> None:
    conn = gateway.connect(database=TEST_DB, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    with conn.cursor() as cur:
        # Error-based exfiltration: the server quotes the value in its message.
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute(
                f"SELECT EXTRACTVALUE(1, CONCAT(0x7e, (SELECT email FROM {TABLE} WHERE id = 1)))"
            )
        code, message = info.value.args
        assert code == 1105 and "hoopy hid this error's message" in message
        assert "alice" not in message
        # Warnings quote values too: SHOW WARNINGS after such a statement hides them.
        cur.execute(f"SELECT CAST(email AS SIGNED) FROM {TABLE} WHERE id = 1")
        assert cur.fetchall()
        cur.execute("SHOW WARNINGS")
        warnings = cur.fetchall()
        assert warnings and all("alice" not in str(w) for w in warnings)
        assert "hidden by hoopy" in warnings[0][2]
        # Also within one multi-statement text.
        cur.execute(f"SELECT CAST(card AS SIGNED) FROM {TABLE} WHERE id = 2; SHOW WARNINGS")
        cur.fetchall()
        assert cur.nextset()
        assert all("5500000000000004" not in str(w) for w in cur.fetchall())
        # Text hoopy cannot parse, with rules whose patterns leave the table open (*ssn*):
        # any word could be such a table, so it is refused, and says why.
        with pytest.raises(pymysql.err.OperationalError) as syntax:
            cur.execute("SELEC 1")
        assert syntax.value.args[0] == 1290 and "cannot parse" in syntax.value.args[1]
        # GET DIAGNOSTICS would copy them into variables: refused.
        with pytest.raises(pymysql.err.OperationalError) as refused:
            cur.execute("GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT")
        assert refused.value.args[0] == 1290
        # A statement without a table keeps the server's last messages: still hidden.
        cur.execute("SELECT 1")
        cur.fetchall()
        cur.execute("SHOW WARNINGS")
        assert "alice" not in str(cur.fetchall())
        # After a statement that reads a table but nothing masked, warnings show again.
        cur.execute(f"SELECT CAST(note AS SIGNED) FROM {TABLE} WHERE id = 1")
        cur.fetchall()
        cur.execute("SHOW WARNINGS")
        assert "first" in str(cur.fetchall())
    conn.close()


def test_content_classifiers_mask_what_looks_sensitive_wherever_it_comes_from(
    gateway: HoopyProcess, mariadb: MariaDBServer
) -> None:
    mariadb.admin_sql(
        (
            f"INSERT INTO {TEST_DB}.{OTHER} (note) VALUES (%s), (%s), (%s), (%s)",
            (
                "write to zed@example.org",
                "card 4111 1111 1111 1111 on file",
                "from 10.1.2.3",
                "badge EMP-123456",
            ),
        ),
    )
    conn = gateway.connect("support", SUPPORT_PASSWORD, database=TEST_DB)
    with conn.cursor() as cur:
        cur.execute(f"SELECT note FROM {OTHER} WHERE note IS NOT NULL ORDER BY id")
        notes = [r[0] for r in cur.fetchall()]
        # Literals and expressions are classified too.
        cur.execute("SELECT CONCAT('mail ', 'amy@example.net'), 'nothing to see', 42")
        literal = cur.fetchone()
        # The column rules of the target's set still apply to the role's members.
        cur.execute(SELECT)
        assert_masked(list(cur.fetchall()))
    conn.close()
    assert notes[-4:] == ["[classified]"] * 4, notes
    assert literal == ("[classified]", "nothing to see", 42)
    # Other roles do not get the backstop.
    conn = gateway.connect(database=TEST_DB)
    with conn.cursor() as cur:
        cur.execute(f"SELECT note FROM {OTHER} WHERE note LIKE 'badge%'")
        assert cur.fetchone() == ("badge EMP-123456",)
    conn.close()


def test_rows_over_16_mib_are_masked_and_the_packets_after_them_renumbered(
    gateway: HoopyProcess, mariadb: MariaDBServer
) -> None:
    """A 17 MiB value takes two packets; masked to "****" its row takes one, so every packet
    after it (the next rows, the EOF, the next result) needs the sequence id one lower: a
    client checks them ("Packet sequence number wrong")."""
    big = f"big_{TABLE}"
    size = 17 * 1024 * 1024
    mariadb.admin_sql(
        f"CREATE TABLE {TEST_DB}.{big} (id INT PRIMARY KEY, secret_blob LONGTEXT, plain LONGTEXT)",
        f"INSERT INTO {TEST_DB}.{big} VALUES (1, REPEAT('s', {size}), 'p'), "
        f"(2, 'short', REPEAT('q', {size})), (3, REPEAT('t', {size}), REPEAT('r', {size}))",
    )
    try:
        conn = gateway.connect(
            database=TEST_DB,
            client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
            max_allowed_packet=64 * 1024 * 1024,
        )
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, secret_blob, plain FROM {big} ORDER BY id; SELECT 1")
            rows = cur.fetchall()
            assert cur.nextset()
            assert cur.fetchall() == ((1,),)
        assert [(r[0], r[1], len(r[2])) for r in rows] == [
            (1, "****", 1),
            (2, "****", size),
            (3, "****", size),
        ]
        assert rows[1][2] == "q" * size
        conn.close()
    finally:
        mariadb.admin_sql(f"DROP TABLE IF EXISTS {TEST_DB}.{big}")


def test_a_long_stream_is_masked_in_both_protocols_and_counted(
    gateway: HoopyProcess, mariadb: MariaDBServer
) -> None:
    """Thousands of rows arrive in reads that cut rows anywhere: each row is masked (the
    compiled loop takes most of them, the per-packet path the rest), NULLs stay NULL, and the
    audit counts every masked value."""
    many = f"many_{TABLE}"
    count = 30_000
    mariadb.admin_sql(
        f"CREATE TABLE {TEST_DB}.{many} (id INT PRIMARY KEY, email VARCHAR(80), "
        "ssn_last INT, note VARCHAR(300))",
        f"INSERT INTO {TEST_DB}.{many} SELECT seq, IF(seq % 7 = 0, NULL, "
        "CONCAT('user', seq, '@example.com')), seq, REPEAT('n', seq % 300) "
        f"FROM {TEST_DB}.seq_1_to_{count}",
    )
    key = MASK_KEY.encode()

    def expected(i: int) -> tuple[Any, ...]:
        email = None if i % 7 == 0 else "h:" + hmac.new(
            key, f"user{i}@example.com".encode(), "sha256"
        ).hexdigest()[:16]
        return (i, email, 0, "n" * (i % 300))

    want = [expected(i) for i in range(1, count + 1)]
    marker = f"/* long-stream {secrets.token_hex(4)} */ "
    query = f"{marker}SELECT id, email, ssn_last, note FROM {many} ORDER BY id"
    try:
        conn = gateway.connect(database=TEST_DB)
        with conn.cursor() as cur:
            cur.execute(query)
            assert list(cur.fetchall()) == want
        conn.close()
        connector = gateway.connect_connector(TEST_DB)
        cur = connector.cursor(prepared=True)
        cur.execute(query.replace("ORDER BY", "WHERE id > ? ORDER BY"), (0,))
        rows = [tuple(v.decode() if isinstance(v, bytes | bytearray) else v for v in r)
                for r in cur.fetchall()]  # fmt: skip
        assert rows == want
        connector.close()
    finally:
        mariadb.admin_sql(f"DROP TABLE IF EXISTS {TEST_DB}.{many}")
    statements = [
        r for r in audit_records(gateway)
        if r.get("kind") == "statement" and marker in (r.get("sql") or "")
        and r.get("command") != "COM_STMT_PREPARE"
    ]  # fmt: skip
    assert [s["command"] for s in statements] == ["COM_QUERY", "COM_STMT_EXECUTE"]
    for statement in statements:
        outcome = wait_for_outcome(gateway, statement)
        assert outcome["rows"] == count
        assert outcome["masked"] == {
            "pii/emails": {"columns": ["email"], "values": count - count // 7},
            "pii/ssn": {"columns": ["ssn_last"], "values": count},
        }


def test_replay_execute_compares_masked_results_as_the_client_saw_them(
    gateway: HoopyProcess, mariadb: MariaDBServer
) -> None:
    """``hoopy replay --execute`` masks the replayed results with the session's masking, so a
    masked session replays clean (digests and masked counts equal), and a masked value that
    changed since shows as a difference."""
    conn = gateway.connect(database=TEST_DB)
    marker = f"/* replay {secrets.token_hex(4)} */ "
    with conn.cursor() as cur:
        cur.execute(marker + SELECT)
        assert_masked(list(cur.fetchall()))
        cur.execute(f"{marker}SELECT id, mail FROM {VIEW} ORDER BY id")  # through a view
        cur.fetchall()
    conn.close()
    connector = gateway.connect_connector(TEST_DB)
    cur = connector.cursor(prepared=True)
    cur.execute(marker + SELECT.replace("ORDER BY id", "WHERE id > ? ORDER BY id"), (0,))
    cur.fetchall()
    connector.close()
    records = audit_records(gateway)
    statements = [
        r for r in records if r.get("kind") == "statement" and marker in (r.get("sql") or "")
    ]
    for statement in statements:
        wait_for_outcome(gateway, statement)
    session = statements[0]["session"]
    sessions = {r["session"] for r in statements}
    assert len(sessions) == 2  # pymysql's, text; mysql-connector's, binary
    env = gateway.env  # the gateway's secrets: replay reads the same config

    def replay(session: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hoopy", "replay", session, "--config",
             str(gateway.config_path), "--execute", "--target", "app", "--json"],
            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env,
        )  # fmt: skip

    for s in sorted(sessions):
        done = replay(s)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["differences"] == []
        masked = [r["outcome"]["masked"] for r in report["results"]
                  if r["outcome"] and r["outcome"].get("masked")]  # fmt: skip
        assert masked, report
        assert "alice@example.com" not in done.stdout
    # The data changes: the masked email of alice differs, and replay says so.
    mariadb.admin_sql(f"UPDATE {TEST_DB}.{TABLE} SET email = 'carol@example.com' WHERE id = 1")
    try:
        done = replay(session)
        assert done.returncode == 1, done.stdout + done.stderr
        fields = {d["field"] for d in json.loads(done.stdout)["differences"]}
        assert fields == {"digest"}
    finally:
        mariadb.admin_sql(f"UPDATE {TEST_DB}.{TABLE} SET email = 'alice@example.com' WHERE id = 1")
