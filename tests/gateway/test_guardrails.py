"""Guardrails through real clients: what each action does on the wire and in the audit.

One hoopy per module (the built-in ``default`` set on the target, a role with a set of its
own), one fresh table per test. Each denial is checked three ways: the client's error (ER
1290, HY000, naming the rule), the table (nothing ran), and the audit record (verdict and
rule). The evasion corpus sends each tricky spelling of a denied statement through PyMySQL
and checks that it stays denied.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import tomli_w
from pymysql.constants import CLIENT, COMMAND

from hoopy.audit.reader import iter_records
from tests.gateway.clients import MARIADB_CLI, hoopy_endpoint, require_binary, run_mariadb
from tests.gateway_rig import (
    DB_PASSWORD_ENV,
    DEV_PASSWORD,
    DEV_PASSWORD_ENV,
    TEST_DB,
    HoopyProcess,
    deep_merge,
    default_config,
)
from tests.rig import MariaDBServer

OPS_USER, OPS_PASSWORD = "ops", "ops-pw"
GUARD_USER, GUARD_PASSWORD = "guard", "guard-pw"

RULES = {
    "no-customers": {
        "default": "allow",
        "rules": [
            {
                "name": "customers",
                "action": "deny",
                "tables": [f"{TEST_DB}.customers_*"],
                "message": "ops may not touch customers",
            },
            {"name": "flag-inserts", "action": "log", "kinds": ["insert"]},
            {
                "name": "big-writes",
                "action": "deny",
                "kinds": ["update", "delete"],
                "rows_above": 2,
                "message": "ops may change at most 2 rows at a time",
            },
        ],
    }
}


@pytest.fixture(scope="module")
def gateway(
    mariadb: MariaDBServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HoopyProcess]:
    workdir = tmp_path_factory.mktemp("guardrails")
    # An account of this module's own: were a guardrail to let SET PASSWORD or a privileged
    # statement through, the accounts every other test uses stay as they are.
    mariadb.create_user(GUARD_USER, GUARD_PASSWORD, grants=[f"ALL ON {TEST_DB}.*"])
    config = deep_merge(
        default_config(mariadb, workdir),
        {
            "targets": {
                "app": {
                    "guardrails": ["default"],
                    "user": GUARD_USER,
                    "password_env": "GUARD_PW",
                }
            },
            "guardrails": RULES,
            "users": {OPS_USER: {"password_env": "OPS_PW", "groups": ["ops"]}},
            "roles": {
                "ops": {"groups": ["ops"], "targets": ["app"], "guardrails": ["no-customers"]}
            },
            "audit": {"directory": str(workdir / "audit")},
            # Review verdicts are refused here; tests/gateway/test_approvals.py decides them.
            "approvals": {"enabled": False},
        },
    )
    env = {"OPS_PW": OPS_PASSWORD, "GUARD_PW": GUARD_PASSWORD}
    proc = HoopyProcess(config, workdir=workdir, env=env)
    proc.start()
    yield proc
    proc.close()


@pytest.fixture
def table(mariadb: MariaDBServer) -> Iterator[str]:
    name = f"g_{secrets.token_hex(4)}"
    mariadb.admin_sql(
        f"CREATE TABLE {TEST_DB}.{name} (id INT PRIMARY KEY, v INT)",
        f"INSERT INTO {TEST_DB}.{name} VALUES (1, 10), (2, 20), (3, 30)",
    )
    yield name
    mariadb.admin_sql(f"DROP TABLE IF EXISTS {TEST_DB}.{name}")


def rows(mariadb: MariaDBServer, table: str) -> int:
    return int(mariadb.admin_sql(f"SELECT COUNT(*) FROM {TEST_DB}.{table}")[0][0])


def connect(gateway: HoopyProcess, **kw: Any) -> pymysql.connections.Connection:
    return gateway.connect(database=TEST_DB, **kw)


def denied(conn: pymysql.connections.Connection, sql: str) -> str:
    """Run ``sql``, which must be refused by a guardrail; its error message."""
    with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as info:
        cur.execute(sql)
        while cur.nextset():
            pass
    code, message = info.value.args
    assert code == 1290, (sql, code, message)
    return str(message)


def records(gateway: HoopyProcess, sql: str) -> list[dict[str, Any]]:
    audit = Path(gateway.config["audit"]["directory"])
    return [r for r in iter_records(audit) if r.get("kind") == "statement" and r.get("sql") == sql]


def test_pymysql_delete_without_where_is_denied_naming_the_rule(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str
) -> None:
    conn = connect(gateway)
    message = denied(conn, f"DELETE FROM {table}")
    assert message.startswith("hoopy guardrail default/unbounded-write denied this statement")
    assert "need a WHERE clause" in message
    assert rows(mariadb, table) == 3
    # The connection is in step: the next statement gets its own reply.
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM {table} WHERE id = 1")
        assert cur.rowcount == 1
    assert rows(mariadb, table) == 2
    (record,) = records(gateway, f"DELETE FROM {table}")
    assert record["verdict"] == "deny"
    assert record["rule"] == "default/unbounded-write"
    conn.close()


def test_pymysql_multi_statement_with_one_denied_statement_runs_none_of_it(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str
) -> None:
    conn = connect(gateway, client_flag=CLIENT.MULTI_STATEMENTS)
    denied(conn, f"INSERT INTO {table} VALUES (9, 90); UPDATE {table} SET v = 0")
    assert rows(mariadb, table) == 3
    with conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (9, 90); UPDATE {table} SET v = 0 WHERE id = 9")
        while cur.nextset():
            pass
    assert mariadb.admin_sql(f"SELECT v FROM {TEST_DB}.{table} WHERE id = 9") == [(0,)]
    conn.close()


def test_pymysql_review_is_refused_when_approvals_are_off(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str
) -> None:
    conn = connect(gateway)
    sql = f"ALTER TABLE {table} ADD COLUMN w INT"
    message = denied(conn, sql)
    assert "default/schema-change needs a human's approval for this statement" in message
    assert "approvals are turned off ([approvals] enabled = false), so it was not run" in message
    columns = mariadb.admin_sql(f"SHOW COLUMNS FROM {TEST_DB}.{table}")
    assert [c[0] for c in columns] == ["id", "v"]
    (record,) = records(gateway, sql)
    assert record["verdict"] == "review"
    conn.close()


def test_pymysql_log_rule_runs_the_statement_and_flags_it(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str
) -> None:
    conn = gateway.connect(OPS_USER, OPS_PASSWORD, database=TEST_DB)
    sql = f"INSERT INTO {table} VALUES (4, 40)"
    with conn.cursor() as cur:
        cur.execute(sql)
        assert cur.rowcount == 1
    assert rows(mariadb, table) == 4
    (record,) = records(gateway, sql)
    assert record["verdict"] == "log"
    assert record["rule"] == "no-customers/flag-inserts"
    conn.close()


def test_role_sets_apply_to_the_role_only_and_the_strictest_verdict_wins(
    gateway: HoopyProcess, mariadb: MariaDBServer
) -> None:
    name = f"customers_{secrets.token_hex(3)}"
    mariadb.admin_sql(f"CREATE TABLE {TEST_DB}.{name} (id INT PRIMARY KEY)")
    try:
        ops = gateway.connect(OPS_USER, OPS_PASSWORD, database=TEST_DB)
        message = denied(ops, f"SELECT * FROM {name}")
        assert "no-customers/customers denied" in message
        assert "ops may not touch customers" in message
        # Unqualified, qualified, backquoted: the same table.
        denied(ops, f"SELECT * FROM `{TEST_DB}`.`{name}`")
        # The other role's set is not the developers' (they only have the target's).
        dev = connect(gateway)
        with dev.cursor() as cur:
            cur.execute(f"SELECT * FROM {name}")
        # Both sets apply to ops: the target's default set still denies.
        denied(ops, "SELECT SLEEP(0)")
        ops.close()
        dev.close()
    finally:
        mariadb.admin_sql(f"DROP TABLE {TEST_DB}.{name}")


def test_rows_above_uses_explains_estimate_and_fails_closed_without_one(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str
) -> None:
    ops = gateway.connect(OPS_USER, OPS_PASSWORD, database=TEST_DB)
    message = denied(ops, f"UPDATE {table} SET v = 0 WHERE id > 0")  # all 3 rows
    assert "no-customers/big-writes denied" in message
    with ops.cursor() as cur:
        cur.execute(f"UPDATE {table} SET v = 11 WHERE id = 1")  # EXPLAIN says 1 row
        assert cur.rowcount == 1
        # The estimate ran on hoopy's own connection: this session's state is untouched.
        cur.execute("SELECT ROW_COUNT()")
        assert cur.fetchall() == ((1,),)
    # No estimate (a function in it; a comment): unknown, so the deny rule applies.
    denied(ops, f"UPDATE {table} SET v = ABS(-1) WHERE id = 1")
    denied(ops, f"UPDATE {table} /* one row */ SET v = 1 WHERE id = 1")
    ops.close()
    assert mariadb.admin_sql(f"SELECT v FROM {TEST_DB}.{table} ORDER BY id") == [
        (11,), (20,), (30,)
    ]
    # The developers' sets have no such rule: no estimate is asked for.
    dev = connect(gateway)
    with dev.cursor() as cur:
        cur.execute(f"UPDATE {table} SET v = 0 WHERE id > 0")
        assert cur.rowcount == 3
    dev.close()


def test_use_changes_the_database_tables_resolve_against(
    gateway: HoopyProcess, mariadb: MariaDBServer, fresh_db: str
) -> None:
    name = f"customers_{secrets.token_hex(3)}"
    mariadb.admin_sql(f"CREATE TABLE {TEST_DB}.{name} (id INT PRIMARY KEY)")
    mariadb.admin_sql(
        f"CREATE TABLE `{fresh_db}`.{name} (id INT PRIMARY KEY)",
        f"GRANT ALL ON `{fresh_db}`.* TO '{GUARD_USER}'@'%'",
    )
    try:
        ops = gateway.connect(OPS_USER, OPS_PASSWORD, database=TEST_DB)
        with ops.cursor() as cur:
            cur.execute(f"USE `{fresh_db}`")
            cur.execute(f"SELECT * FROM {name}")  # fresh_db's: allowed
        denied(ops, f"SELECT * FROM {TEST_DB}.{name}")
        ops.select_db(TEST_DB)  # COM_INIT_DB
        denied(ops, f"SELECT * FROM {name}")
        ops.close()
    finally:
        mariadb.admin_sql(
            f"DROP TABLE {TEST_DB}.{name}",
            f"DROP TABLE `{fresh_db}`.{name}",
            f"REVOKE ALL ON `{fresh_db}`.* FROM '{GUARD_USER}'@'%'",
        )


def test_mysql_connector_prepare_of_a_denied_statement_gets_an_err(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str
) -> None:
    import mysql.connector

    conn = gateway.connect_connector(TEST_DB, autocommit=True)
    cur = conn.cursor(prepared=True)
    with pytest.raises(mysql.connector.Error) as info:
        cur.execute(f"DELETE FROM {table} WHERE ? = ?", (1, 1))
    assert info.value.errno == 1290
    assert "default/unbounded-write" in str(info.value.msg)
    assert rows(mariadb, table) == 3
    cur.execute(f"DELETE FROM {table} WHERE id = ?", (2,))
    assert cur.rowcount == 1
    cur.close()
    conn.close()
    assert rows(mariadb, table) == 2


def test_mysql_connector_executions_of_a_flagged_prepare_are_flagged_too(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str
) -> None:
    conn = gateway.connect_connector(TEST_DB, OPS_USER, OPS_PASSWORD, autocommit=True)
    cur = conn.cursor(prepared=True)
    sql = f"INSERT INTO {table} VALUES (?, ?)"
    cur.execute(sql, (7, 70))
    cur.execute(sql, (8, 80))
    cur.close()
    conn.close()
    assert rows(mariadb, table) == 5
    flagged = [(r["command"], r["verdict"], r["rule"]) for r in records(gateway, sql)]
    assert ("COM_STMT_PREPARE", "log", "no-customers/flag-inserts") in flagged
    executions = [f for f in flagged if f[0] == "COM_STMT_EXECUTE"]
    assert executions == [("COM_STMT_EXECUTE", "log", "no-customers/flag-inserts")] * 2


def test_mariadb_cli_prints_the_guardrail_error(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str
) -> None:
    require_binary(MARIADB_CLI)
    result = run_mariadb(hoopy_endpoint(gateway), sql=f"TRUNCATE TABLE {table};\n")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "ERROR 1290 (HY000)" in err
    assert "default/drop-or-truncate" in err
    assert rows(mariadb, table) == 3


def test_commands_that_act_like_statements_are_judged_too(
    gateway: HoopyProcess, mariadb: MariaDBServer
) -> None:
    name = f"hoopy_gd_{secrets.token_hex(4)}"
    mariadb.admin_sql(
        f"CREATE DATABASE {name}", f"GRANT ALL ON `{name}`.* TO '{GUARD_USER}'@'%'"
    )
    try:
        conn = connect(gateway)
        conn._execute_command(COMMAND.COM_DROP_DB, name)  # what mysql_drop_db() sends
        with pytest.raises(pymysql.err.OperationalError) as info:
            conn._read_packet()
        assert info.value.args[0] == 1290
        assert "default/drop-or-truncate" in info.value.args[1]
        assert mariadb.admin_sql(f"SHOW DATABASES LIKE '{name}'") == [(name,)]
        with conn.cursor() as cur:  # still in step
            cur.execute("SELECT 1")
            assert cur.fetchall() == ((1,),)
        conn.close()
    finally:
        mariadb.admin_sql(
            f"DROP DATABASE IF EXISTS {name}", f"REVOKE ALL ON `{name}`.* FROM '{GUARD_USER}'@'%'"
        )


# --- evasions: each must stay denied, and the table stays whole ------------------------------

EVASIONS = [
    "DELETE FROM {t}",
    "delete from {t}",
    "DeLeTe FrOm `{t}`",
    "DELETE/**/FROM/**/{t}",
    "DELETE FROM {t} -- where id = 1",
    "DELETE FROM {t} # where id = 1",
    "/*!DELETE FROM {t}*/",
    "/*!50000 DELETE FROM {t}*/",
    "/*M!100000 DELETE FROM {t}*/",
    "DELETE FROM {t} /*!WHERE 1=1*/",
    "DELETE FROM {t} WHERE 1=1",
    "DELETE FROM {t} WHERE TRUE",
    "DELETE FROM {t} WHERE 1",
    "DELETE FROM {t} WHERE id = id",
    "DELETE FROM {t} WHERE `id` = `id`",
    "DELETE FROM {t} WHERE 1 IN (1)",
    "DELETE FROM {t} WHERE id = 1 OR 1",
    "DELETE FROM {t} WHERE (id = 1) OR (2 > 1)",
    "DELETE FROM {t} WHERE 'a' = 'a'",
    "DELETE FROM {t} LIMIT 1000000",
    "DELETE LOW_PRIORITY QUICK IGNORE FROM {t}",
    "DELETE FROM hoopy_test.{t}",
    "UPDATE {t} SET v = 0",
    "UPDATE {t} SET v = 0 WHERE NOT 0",
    "SELECT 1; DELETE FROM {t}",
    "SELECT 1;DELETE FROM {t};",
    "SET STATEMENT max_statement_time = 10 FOR DELETE FROM {t}",
    "ANALYZE DELETE FROM {t}",
    "PREPARE s FROM 'DELETE FROM {t}'",
    "PREPARE s FROM @q",
    "EXECUTE IMMEDIATE 'DELETE FROM {t}'",
    "EXECUTE IMMEDIATE CONCAT('DELETE FROM ', '{t}')",
    "WITH x AS (SELECT 1) DELETE FROM {t}",
    "TRUNCATE {t}",
    "DROP TABLE {t}",
    "DROP /*!TEMPORARY*/ TABLE {t}",
    "SELECT SLEEP(0) FROM {t}",
    "SELECT sleep /* x */ (0)",
    "SELECT BENCHMARK(1, 1)",
    "SELECT LOAD_FILE('/etc/passwd')",
    "SELECT * FROM {t} INTO OUTFILE '/tmp/hoopy-guardrail-{t}'",
    "SELECT * FROM {t} INTO DUMPFILE '/tmp/hoopy-guardrail-{t}'",
    "CREATE USER evil IDENTIFIED BY 'x'",
    "GRANT ALL ON *.* TO app",
    "SET PASSWORD = PASSWORD('x')",
    "SET GLOBAL max_connections = 1",
    "SET @@global.max_connections = 1",
    "SHUTDOWN",
    "LOAD DATA INFILE '/etc/passwd' INTO TABLE {t}",
    "DO SLEEP(0)",
    "DELETE FROM {t} WHERE id IN (SELECT 1) OR 1=1",
    "NOT A STATEMENT AT ALL",
    "ANALYZE FORMAT=JSON DELETE FROM {t}",
    "EXPLAIN ANALYZE DELETE FROM {t}",
    "SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET GLOBAL max_connections = 1000, max_user_connections = 1",
]


@pytest.fixture(scope="module")
def corpus(
    gateway: HoopyProcess, mariadb: MariaDBServer
) -> Iterator[tuple[pymysql.connections.Connection, str]]:
    """One table and one multi-statement session for the whole corpus: every statement of it
    is denied, so neither ever changes (each test checks that it did not)."""
    name = f"g_corpus_{secrets.token_hex(3)}"
    mariadb.admin_sql(
        f"CREATE TABLE {TEST_DB}.{name} (id INT PRIMARY KEY, v INT)",
        f"INSERT INTO {TEST_DB}.{name} VALUES (1, 10), (2, 20), (3, 30)",
    )
    conn = connect(gateway, client_flag=CLIENT.MULTI_STATEMENTS)
    yield conn, name
    conn.close()
    mariadb.admin_sql(f"DROP TABLE IF EXISTS {TEST_DB}.{name}")


@pytest.mark.parametrize("template", EVASIONS)
def test_pymysql_evasion_corpus_stays_denied(
    corpus: tuple[pymysql.connections.Connection, str], mariadb: MariaDBServer, template: str
) -> None:
    conn, table = corpus
    denied(conn, template.format(t=table))
    assert mariadb.admin_sql(f"SELECT COUNT(*), SUM(v) FROM {TEST_DB}.{table}") == [(3, 60)]
    with conn.cursor() as cur:  # the session is still in step
        cur.execute("SELECT 7")
        assert cur.fetchall() == ((7,),)


@pytest.mark.parametrize("switch", ["handshake", "set names"])
def test_pymysql_gbk_client_cannot_hide_a_statement_in_a_character(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str, switch: str
) -> None:
    # In gbk "\x81`" is one character: the server reads `x\x81` SET ... -- ` as one
    # identifier and runs UPDATE ... SET v = 0 with no WHERE; a byte-wise reading would see
    # a WHERE clause.
    conn = connect(gateway, charset="gbk" if switch == "handshake" else "utf8mb4")
    if switch == "set names":
        with conn.cursor() as cur:
            cur.execute("SET NAMES gbk")
    sql = f"UPDATE {table} AS `x\x81` SET v = 0 WHERE id = ` SET v = 0 -- `".encode("latin-1")
    with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as info:
        cur.execute(sql)
    assert info.value.args[0] == 1290, info.value.args
    assert mariadb.admin_sql(f"SELECT SUM(v) FROM {TEST_DB}.{table}") == [(60,)]
    conn.close()


def test_statements_a_client_library_sends_on_its_own_are_allowed(
    gateway: HoopyProcess, table: str
) -> None:
    conn = connect(gateway)
    with conn.cursor() as cur:
        for sql in [
            "SET NAMES utf8mb4",
            "SET autocommit = 1",
            "SET SESSION sql_mode = 'STRICT_TRANS_TABLES'",
            "SELECT @@version_comment LIMIT 1",
            "SHOW VARIABLES LIKE 'max_allowed_packet'",
            "SHOW TABLES",
            f"SELECT id, v FROM {table} WHERE id = 1 FOR UPDATE",
            "START TRANSACTION",
            f"UPDATE {table} SET v = v + 1 WHERE id = 2",
            "COMMIT",
            f"INSERT INTO {table} VALUES (5, 50) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            f"REPLACE INTO {table} VALUES (6, 60)",
            f"SELECT COUNT(*) FROM {table} t JOIN {table} u ON t.id = u.id",
            f"EXPLAIN SELECT * FROM {table}",
            "SELECT CONNECTION_ID()",
        ]:
            cur.execute(sql)
            cur.fetchall()
    conn.close()


def test_serve_refuses_a_config_naming_an_unknown_set(
    mariadb: MariaDBServer, tmp_path: Path
) -> None:
    config = deep_merge(
        default_config(mariadb, tmp_path), {"targets": {"app": {"guardrails": ["defualt"]}}}
    )
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "hoopy", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, DB_PASSWORD_ENV: "x", DEV_PASSWORD_ENV: DEV_PASSWORD},
    )
    assert result.returncode != 0
    assert "targets.app.guardrails: no rule set named 'defualt'" in result.stderr


# --- hoopy replay --policy ---------------------------------------------------------------


def replay_policy(gateway: HoopyProcess, session: str, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "hoopy", "replay", session, "--policy", "--json",
         "--config", str(gateway.config_path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPS_PW": OPS_PASSWORD, "GUARD_PW": GUARD_PASSWORD},
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_replay_policy_marks_what_todays_rules_would_judge_differently(
    gateway: HoopyProcess, mariadb: MariaDBServer, table: str
) -> None:
    name = f"customers_{secrets.token_hex(3)}"
    mariadb.admin_sql(f"CREATE TABLE {TEST_DB}.{name} (id INT PRIMARY KEY)")
    try:
        conn = connect(gateway)
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {name}")
            cur.execute(f"DELETE FROM {table} WHERE id = 1")
        denied(conn, f"DELETE FROM {table}")
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")  # the last statement reaches the log
        conn.close()
    finally:
        mariadb.admin_sql(f"DROP TABLE {TEST_DB}.{name}")
    session = records(gateway, f"SELECT * FROM {name}")[0]["session"]
    # The session's own sets: nothing would change.
    same = replay_policy(gateway, session)
    assert same["changed"] == 0
    by_sql = {s["sql"]: s for s in same["statements"]}
    assert by_sql[f"DELETE FROM {table}"]["now"]["rule"] == "default/unbounded-write"
    # With the ops role's set too, the customers table would now be refused.
    stricter = replay_policy(gateway, session, "--sets", "default,no-customers")
    changed = [s for s in stricter["statements"] if s["changed"]]
    # And the one-row DELETE: rows_above has no estimate offline, so its deny rule applies.
    assert [s["sql"] for s in changed] == [f"SELECT * FROM {name}", f"DELETE FROM {table} WHERE id = 1"]
    assert changed[1]["now"]["rule"] == "no-customers/big-writes"
    assert "without a row estimate" in changed[1]["note"]
    assert changed[0]["recorded"]["verdict"] == "allow"
    assert changed[0]["now"] == {
        "verdict": "deny",
        "rule": "no-customers/customers",
        "message": "ops may not touch customers",
    }
    # Nothing ran: the table is as the session left it.
    assert rows(mariadb, table) == 2
