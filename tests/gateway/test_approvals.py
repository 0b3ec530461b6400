"""Approvals through real clients, with the ``hoopy approvals`` CLI as the approver.

One hoopy per module: target ``app`` (gateway users) and target ``tok`` (token logins) on the
rig's MariaDB, both with the rule set ``appr`` below, the local admin socket, a TLS admin
listener for token approvers, and a webhook to an HTTP server in this process. Each test
makes its own table, so the rules (which match on table-name prefixes) pick the mode.

Each test checks the three places a decision shows: what the client got, what the table
holds (whether the statement ran, and how many times), and the audit records of each step.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import secrets
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pymysql
import pytest
from typer.testing import CliRunner

from hoopy.audit.reader import iter_records
from hoopy.cli import app as hoopy_cli
from hoopy.identity.dev_tokens import create_signing_key
from hoopy.wire.params import MYSQL_TYPE_LONG, MYSQL_TYPE_LONGLONG, Param, encode_execute
from tests.gateway.test_raw_protocol import BASE_CAPS, RawClient, count_response
from tests.gateway.test_tokens import AUDIENCE, ISSUER, mint
from tests.gateway_rig import (
    DEV_PASSWORD,
    DEV_USER,
    REPO_ROOT,
    TEST_DB,
    HoopyProcess,
    deep_merge,
    default_config,
)
from tests.rig import MariaDBServer

WEBHOOK_SECRET = "hook-secret-for-tests"

RULES = {
    "appr": {
        "default": "allow",
        "rules": [
            {
                "name": "hold-delete",
                "action": "review",
                "kinds": ["delete"],
                "tables": ["h_*"],
                "message": "deleting needs a second pair of eyes",
                "approval": {"mode": "hold", "timeout": 60},
            },
            {
                "name": "hold-short",
                "action": "review",
                "kinds": ["delete"],
                "tables": ["hs_*"],
                "approval": {"mode": "hold", "timeout": 1.5},
            },
            {
                "name": "retry-update",
                "action": "review",
                "kinds": ["update"],
                "tables": ["r_*"],
                "approval": {"mode": "retry", "valid_for": 120},
            },
            {
                "name": "dba-two",
                "action": "review",
                "kinds": ["update", "delete"],
                "tables": ["two_*"],
                "approval": {"mode": "retry", "approvers": ["dba"], "approvals": 2},
            },
            {
                "name": "dba-one",
                "action": "review",
                "kinds": ["update", "delete"],
                "tables": ["dba_*"],
                "approval": {"mode": "retry", "approvers": ["dba"]},
            },
        ],
    }
}


class Webhook:
    """An HTTP server that keeps every POST it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, approval_id: str) -> list[str]:
        return [
            body["event"]
            for body in (json.loads(b) for _, b in list(self.requests))
            if body["approval"]["id"] == approval_id
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return create_signing_key(tmp_path_factory.mktemp("approval-keys") / "keys")


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def approvals_config(
    mariadb: MariaDBServer, workdir: Path, jwks: Path, webhook_url: str
) -> dict[str, Any]:
    base = default_config(mariadb, workdir)
    tok_target = {**base["targets"]["app"], "login": "tokens", "guardrails": ["appr"]}
    return deep_merge(
        base,
        {
            "listeners": [
                *base["listeners"],
                {"name": "tok", "target": "tok", "tcp": "127.0.0.1:0", "tls": True},
            ],
            "targets": {"app": {"guardrails": ["appr"]}, "tok": tok_target},
            "roles": {
                "developers": {"groups": ["developers"], "targets": ["app", "tok"]},
            },
            "issuers": {
                "idp": {
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "jwks_file": str(jwks),
                    "groups_claim": "realm_access.roles",
                }
            },
            "guardrails": RULES,
            "audit": {"directory": str(workdir / "audit")},
            "approvals": {
                "listener": {"tcp": "127.0.0.1:0"},
                "webhook_url": webhook_url,
                "webhook_secret_env": "HOOK_SECRET",
            },
        },
    )


@pytest.fixture(scope="module")
def gateway(
    mariadb: MariaDBServer,
    tmp_path_factory: pytest.TempPathFactory,
    keys: tuple[Path, Path],
    webhook: Webhook,
) -> Iterator[HoopyProcess]:
    workdir = tmp_path_factory.mktemp("approvals")
    config = approvals_config(mariadb, workdir, keys[1], webhook.url)
    proc = HoopyProcess(config, workdir=workdir, env={"HOOK_SECRET": WEBHOOK_SECRET})
    proc.start()
    yield proc
    proc.close()
    print(f"--- hoopy stderr ---\n{proc.stderr_text()}")


@pytest.fixture
def make_table(mariadb: MariaDBServer) -> Iterator[Callable[[str], str]]:
    """``make_table(prefix)``: a fresh three-row table whose name starts with ``prefix``
    (the rules pick the approval mode by prefix)."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}{secrets.token_hex(4)}"
        mariadb.admin_sql(
            f"CREATE TABLE {TEST_DB}.{name} (id INT PRIMARY KEY, v INT)",
            f"INSERT INTO {TEST_DB}.{name} VALUES (1, 10), (2, 20), (3, 30)",
        )
        made.append(name)
        return name

    yield make
    for name in made:
        mariadb.admin_sql(f"DROP TABLE IF EXISTS {TEST_DB}.{name}")


def count(mariadb: MariaDBServer, table: str) -> int:
    return int(mariadb.admin_sql(f"SELECT COUNT(*) FROM {TEST_DB}.{table}")[0][0])


def values(mariadb: MariaDBServer, table: str) -> list[tuple[Any, ...]]:
    return list(mariadb.admin_sql(f"SELECT id, v FROM {TEST_DB}.{table} ORDER BY id"))


# --- the approver: the real CLI -----------------------------------------------------------


_RUNNER = CliRunner()


def cli(gateway: HoopyProcess, *args: str) -> Any:
    """``hoopy approvals ARGS --json`` on the gateway's admin socket, run in this process (the
    CLI's own code, without a Python start per call); the parsed output, or a
    CompletedProcess with the exit code and output when it failed. ``--watch`` runs as a
    process of its own (test_cli_watch_prints_each_new_request_as_it_arrives)."""
    argv = ["approvals", *args, "--json"]
    if "--url" not in args:
        argv += ["--socket", gateway.ready["admin"]["unix_socket"]]
    done = _RUNNER.invoke(hoopy_cli, argv)
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    if done.exit_code != 0:
        return subprocess.CompletedProcess(argv, done.exit_code, done.stdout, done.stderr)
    return json.loads(done.stdout)


def remote(gateway: HoopyProcess, token_file: Path, *args: str) -> Any:
    host, port = gateway.ready["admin"]["tcp"]
    return cli(
        gateway,
        *args,
        "--url",
        f"https://{host}:{port}",
        "--token-file",
        str(token_file),
        "--ca",
        str(gateway.tls_cert),
    )


def pending_for(gateway: HoopyProcess, table: str, timeout: float = 20) -> dict[str, Any]:
    """Wait for the pending request whose statement names ``table``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = cli(gateway, "list")
        assert isinstance(listed, list), listed.stderr
        for a in listed:
            if table in (a.get("sql") or ""):
                return a
        time.sleep(0.2)
    raise AssertionError(f"no pending approval for {table}")


def approval_id(message: str) -> str:
    found = re.search(r"approval (ap-[a-z0-9]+)", message)
    assert found, message
    return found.group(1)


def steps(gateway: HoopyProcess, approval: str) -> list[str]:
    audit = Path(gateway.config["audit"]["directory"])
    return [
        r["step"]
        for r in iter_records(audit)
        if r.get("kind") == "approval" and r.get("approval") == approval
    ]


def statement_records(gateway: HoopyProcess, sql: str) -> list[dict[str, Any]]:
    audit = Path(gateway.config["audit"]["directory"])
    return [r for r in iter_records(audit) if r.get("kind") == "statement" and r.get("sql") == sql]


def hoopy(*argv: str) -> str:
    """``hoopy ARGV`` in this process (as ``cli``); its output."""
    done = _RUNNER.invoke(hoopy_cli, list(argv), env={"COLUMNS": "200"})
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    assert done.exit_code == 0, done.stderr
    return str(done.stdout)


def replay(gateway: HoopyProcess, session: str, *args: str) -> Any:
    """``hoopy replay SESSION``: the timeline (parsed with --json, else the text)."""
    text = hoopy("replay", session, "--config", str(gateway.config_path), *args)
    return json.loads(text) if "--json" in args else text


def audit_search(gateway: HoopyProcess, *args: str) -> list[dict[str, Any]]:
    text = hoopy("audit", "search", *args, "--json", "--config", str(gateway.config_path))
    return list(json.loads(text))


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def run_async(sql: str, connect: Callable[[], Any]) -> Future[Any]:
    """Run ``sql`` on a new connection in a thread: (rowcount, None) or (None, error)."""

    def work() -> Any:
        conn = connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.rowcount, None
        except pymysql.err.MySQLError as exc:
            return None, exc.args
        finally:
            conn.close()

    return ThreadPoolExecutor(1).submit(work)


def refused(conn: Any, sql: str, params: Any = None) -> str:
    with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as info:
        cur.execute(sql, params)
    code, message = info.value.args
    assert code == 1290, (code, message)
    return str(message)


# --- hold ---------------------------------------------------------------------------------


def test_pymysql_held_delete_runs_once_approved(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str], webhook: Webhook
) -> None:
    table = make_table("h_")
    sql = f"DELETE FROM {table} WHERE v > 15"
    held = run_async(sql, lambda: gateway.connect(database=TEST_DB))
    request = pending_for(gateway, table)
    # The approver sees who, where, what, why, and the estimate; the client still waits.
    shown = cli(gateway, "show", request["id"])
    assert shown["requester"]["name"] == "dev"
    assert shown["requester"]["method"] == "gateway_user"
    assert shown["target"] == "app" and shown["database"] == TEST_DB
    assert shown["sql"] == sql
    assert shown["rule"] == "appr/hold-delete"
    assert shown["message"] == "deleting needs a second pair of eyes"
    assert isinstance(shown["estimate"], int)
    assert shown["mode"] == "hold" and shown["state"] == "pending"
    assert not held.done()
    assert count(mariadb, table) == 3
    # The rest of the gateway keeps serving meanwhile.
    other = gateway.connect(database=TEST_DB)
    with other.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        assert cur.fetchone() == (3,)
    other.close()
    decided = cli(gateway, "approve", request["id"], "--reason", "looks right")
    assert decided["outcome"] == "approved"
    assert held.result(timeout=20) == (2, None)
    assert values(mariadb, table) == [(1, 10)]
    assert steps(gateway, request["id"]) == ["requested", "approved", "used"]
    (record,) = statement_records(gateway, sql)
    assert record["verdict"] == "approved"
    assert record["rule"] == "appr/hold-delete"
    assert record["approval"] == request["id"]
    # Approving again changes nothing: the request is used.
    again = cli(gateway, "approve", request["id"])
    assert again.returncode == 1 and "used already" in again.stderr
    wait_for(lambda: webhook.events(request["id"]) == ["requested", "approved", "used"])
    headers, body = next(
        (h, b) for h, b in webhook.requests if json.loads(b)["approval"]["id"] == request["id"]
    )
    expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-hoopy-signature"] == f"sha256={expected}"
    assert "fingerprint" not in json.loads(body)["approval"]


def test_cli_watch_prints_each_new_request_as_it_arrives(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str]
) -> None:
    table = make_table("r_")
    argv = [sys.executable, "-m", "hoopy", "approvals", "list", "--watch", "--json",
            "--socket", gateway.ready["admin"]["unix_socket"]]  # fmt: skip
    watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        seen: list[str] = []
        reader = ThreadPoolExecutor(1)
        conn = gateway.connect(database=TEST_DB)
        asked = approval_id(refused(conn, f"UPDATE {table} SET v = 0 WHERE id = 1"))
        conn.close()
        # Lines for what was pending already may come first; the new request follows.
        deadline = time.monotonic() + 30
        while asked not in seen:
            assert watcher.stdout is not None
            line = reader.submit(watcher.stdout.readline).result(
                timeout=max(deadline - time.monotonic(), 0.1)
            )
            assert line, "the watcher stopped"
            seen.append(json.loads(line)["id"])
        assert seen.count(asked) == 1
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


def test_pymysql_held_delete_denied_gets_the_reason_and_does_not_run(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str]
) -> None:
    table = make_table("h_")
    sql = f"DELETE FROM {table} WHERE id = 1"
    held = run_async(sql, lambda: gateway.connect(database=TEST_DB))
    request = pending_for(gateway, table)
    no_reason = cli(gateway, "deny", request["id"], "--reason", "")
    assert no_reason.returncode == 1 and "needs a reason" in no_reason.stderr
    cli(gateway, "deny", request["id"], "--reason", "not during the freeze")
    rowcount, error = held.result(timeout=20)
    assert rowcount is None
    assert error[0] == 1290
    assert "denied by" in error[1] and "not during the freeze" in error[1]
    assert count(mariadb, table) == 3
    assert steps(gateway, request["id"]) == ["requested", "denied"]
    (record,) = statement_records(gateway, sql)
    assert record["verdict"] == "review" and record["approval"] == request["id"]


def test_pymysql_held_delete_times_out(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str]
) -> None:
    table = make_table("hs_")
    conn = gateway.connect(database=TEST_DB)
    started = time.monotonic()
    message = refused(conn, f"DELETE FROM {table} WHERE id = 1")
    assert time.monotonic() - started >= 1.4
    assert "timed out" in message and "not decided within 1.5s" in message
    assert count(mariadb, table) == 3
    # The session is in step and usable.
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    conn.close()
    assert steps(gateway, approval_id(message)) == ["requested", "expired"]


# --- retry --------------------------------------------------------------------------------


def test_pymysql_retry_runs_once_after_approval(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str], webhook: Webhook
) -> None:
    table = make_table("r_")
    conn = gateway.connect(database=TEST_DB)
    sql = f"UPDATE {table} SET v = v + 1 WHERE id = 2"
    message = refused(conn, sql)
    first = approval_id(message)
    assert "send the same statement again" in message
    # Asking again before the decision names the same request, not a new one.
    assert approval_id(refused(conn, sql + " ;")) == first
    assert cli(gateway, "approve", first)["outcome"] == "approved"
    # The same text (white space and trailing semicolons aside) runs, once.
    with conn.cursor() as cur:
        cur.execute("  " + sql + ";")
        assert cur.rowcount == 1
    assert values(mariadb, table)[1] == (2, 21)
    second = approval_id(refused(conn, sql))
    assert second != first
    assert values(mariadb, table)[1] == (2, 21)
    # A different statement is not covered either.
    assert approval_id(refused(conn, sql.replace("id = 2", "id = 3"))) not in (first, second)
    conn.close()
    assert steps(gateway, first) == ["requested", "approved", "used"]
    wait_for(lambda: webhook.events(first) == ["requested", "approved", "used"])
    # hoopy replay shows each step in its statement's place, and search finds both.
    session = statement_records(gateway, sql)[0]["session"]
    timeline = replay(gateway, session, "--json")
    linked = [s for s in timeline["steps"] if s["statement"].get("approval") == first]
    assert [s["statement"]["verdict"] for s in linked] == ["review", "review", "approved"]
    assert [[a["step"] for a in s["approvals"]] for s in linked] == [
        ["requested", "approved"],
        [],
        ["used"],
    ]
    assert linked[2]["approvals"][0]["requested"]["seq"] == linked[0]["seq"]
    text = replay(gateway, session)
    assert f"APPROVED (appr/retry-update, {first})" in text
    assert f"approval {first} approved by root" in text
    assert f"approval {first} used (asked by #{linked[0]['seq']})" in text
    found = audit_search(gateway, "--approval", first)
    assert [h["seq"] for h in found] == [s["seq"] for s in linked]
    assert [h["seq"] for h in audit_search(gateway, "--verdict", "approved", "--session", session)] == [
        linked[2]["seq"]
    ]


def test_mysql_connector_prepared_retry_binds_the_parameters(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str]
) -> None:
    table = make_table("r_")
    import mysql.connector

    conn = gateway.connect_connector(TEST_DB, autocommit=True, connection_timeout=15)
    cur = conn.cursor(prepared=True)
    sql = f"UPDATE {table} SET v = ? WHERE id = ?"
    with pytest.raises(mysql.connector.Error) as info:
        cur.execute(sql, (99, 1))
    assert info.value.errno == 1290
    asked = approval_id(str(info.value.msg))
    shown = cli(gateway, "show", asked)
    assert shown["command"] == "COM_STMT_EXECUTE"
    assert [p["value"] for p in shown["params"]] == [99, 1]
    cli(gateway, "approve", asked)
    # Other parameters are another statement.
    with pytest.raises(mysql.connector.Error) as info:
        cur.execute(sql, (99, 2))
    assert approval_id(str(info.value.msg)) != asked
    assert values(mariadb, table) == [(1, 10), (2, 20), (3, 30)]
    cur.execute(sql, (99, 1))
    assert cur.rowcount == 1
    assert values(mariadb, table)[0] == (1, 99)
    conn.close()


def test_mariadb_connector_retry_after_a_refused_execute_that_bound_the_types(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str]
) -> None:
    """libmariadb sends the parameter types with the first EXECUTE only. That EXECUTE was
    refused, so the server never saw them: the next EXECUTE reaches it with them written in
    (wire/params.py, ``bind_types``), and runs with the values the client sent."""
    table = make_table("r_")
    import mariadb as mariadb_client

    host, port = gateway.tcp["app"]
    conn = mariadb_client.connect(
        host=host, port=port, user=DEV_USER, password=DEV_PASSWORD, database=TEST_DB,
        autocommit=True,
    )
    cur = conn.cursor(prepared=True)
    sql = f"UPDATE {table} SET v = ? WHERE id = ?"
    with pytest.raises(mariadb_client.Error) as info:
        cur.execute(sql, (77, 2))
    assert info.value.errno == 1290
    asked = approval_id(str(info.value))
    assert [p["value"] for p in cli(gateway, "show", asked)["params"]] == [77, 2]
    cli(gateway, "approve", asked)
    cur.execute(sql, (77, 2))
    assert cur.rowcount == 1
    assert values(mariadb, table) == [(1, 10), (2, 77), (3, 30)]
    # The statement stays usable for executes that reuse the types the server now has.
    with pytest.raises(mariadb_client.Error):
        cur.execute(sql, (78, 3))
    assert values(mariadb, table)[2] == (3, 30)
    conn.close()
    assert steps(gateway, asked) == ["requested", "approved", "used"]


def test_raw_execute_that_reuses_types_a_refused_execute_bound(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str]
) -> None:
    """libmysqlclient and libmariadb send parameter types only with an execute after
    mysql_stmt_bind_param (sysbench binds once). When hoopy refused the execute that bound
    them, the server never saw them: the approved retry, sent with new_params_bound_flag 0,
    reaches the server with them written in, and runs with the values the client sent."""
    table = make_table("r_")
    host, port = gateway.tcp["app"]
    client = RawClient(host, port, DEV_USER, DEV_PASSWORD, TEST_DB, BASE_CAPS)
    prepared = count_response(client, b"\x16" + f"UPDATE {table} SET v = ? WHERE id = ?".encode())
    assert prepared[0][1][0] == 0x00
    stmt_id = struct.unpack("<I", prepared[0][1][1:5])[0]
    ps = [Param(MYSQL_TYPE_LONGLONG, False, 55), Param(MYSQL_TYPE_LONG, False, 3)]
    bound = encode_execute(stmt_id, ps)
    # header, null bitmap (1 byte), then flag 1 and two 2-byte types: drop them, flag 0
    reusing = bound[:11] + b"\x00" + bound[16:]
    answer = count_response(client, bound)
    assert answer[-1][1][0] == 0xFF and struct.unpack("<H", answer[-1][1][1:3])[0] == 1290
    asked = approval_id(answer[-1][1][9:].decode())
    assert [p["value"] for p in cli(gateway, "show", asked)["params"]] == [55, 3]
    cli(gateway, "approve", asked)
    answer = count_response(client, reusing)
    assert answer[-1][1][:2] == b"\x00\x01", answer  # OK, one row
    assert values(mariadb, table) == [(1, 10), (2, 20), (3, 55)]
    # The server holds the types now: a further reusing execute binds as usual (and is
    # another statement for the rule, so it asks again).
    other = reusing[:-12] + (56).to_bytes(8, "little") + (1).to_bytes(4, "little")
    answer = count_response(client, other)
    assert struct.unpack("<H", answer[-1][1][1:3])[0] == 1290
    shown = cli(gateway, "show", approval_id(answer[-1][1][9:].decode()))
    assert [p["value"] for p in shown["params"]] == [56, 1]
    client.close()
    assert steps(gateway, asked) == ["requested", "approved", "used"]


# --- who may approve ----------------------------------------------------------------------


def token_file(tmp_path: Path, keys: tuple[Path, Path], subject: str, roles: list[str]) -> Path:
    path = tmp_path / f"{subject}.jwt"
    path.write_text(mint(keys[0], subject, roles=roles))
    return path


def token_conn(gateway: HoopyProcess, token: str) -> Any:
    """A token login (the MySQL user name is not what identifies a token's principal)."""
    return gateway.connect(
        "agent", token, listener="tok", database=TEST_DB, ssl={"ca": gateway.tls_cert}
    )


def test_self_approval_is_refused_and_remote_tokens_need_the_group(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str], keys: tuple[Path, Path], tmp_path: Path
) -> None:
    table = make_table("dba_")
    alice = token_file(tmp_path, keys, "alice", ["developers", "dba"])
    conn = token_conn(gateway, alice.read_text())
    sql = f"DELETE FROM {table} WHERE id = 3"
    asked = approval_id(refused(conn, sql))
    shown = cli(gateway, "show", asked)
    assert shown["requester"]["identity"] == "token:idp:alice"
    assert shown["requester"]["groups"] == ["developers", "dba"]
    # alice is a dba, but she asked.
    mine = remote(gateway, alice, "approve", asked)
    assert mine.returncode == 1 and "cannot approve" in mine.stderr
    # A token without the group neither sees nor decides it.
    dev = token_file(tmp_path, keys, "dave", ["developers"])
    assert all(a["id"] != asked for a in remote(gateway, dev, "list"))
    hidden = remote(gateway, dev, "approve", asked)
    assert hidden.returncode == 1 and "no approval" in hidden.stderr
    # A token that is not valid is refused outright.
    forged = tmp_path / "forged.jwt"
    forged.write_text(alice.read_text()[:-4] + "AAAA")
    bad = remote(gateway, forged, "list")
    assert bad.returncode == 1 and "not accepted" in bad.stderr
    # Another dba may.
    bob = token_file(tmp_path, keys, "bob", ["dba"])
    assert [a["id"] for a in remote(gateway, bob, "list") if a["id"] == asked] == [asked]
    assert remote(gateway, bob, "approve", asked)["outcome"] == "approved"
    with conn.cursor() as cur:
        cur.execute(sql)
        assert cur.rowcount == 1
    conn.close()
    assert count(mariadb, table) == 2
    audit = Path(gateway.config["audit"]["directory"])
    (approved,) = [
        r
        for r in iter_records(audit)
        if r.get("approval") == asked and r.get("step") == "approved"
    ]
    assert approved["approver"]["identity"] == "token:idp:bob"
    assert approved["approver"]["via"] == "admin_listener"


def test_two_distinct_approvers_are_needed(
    gateway: HoopyProcess, mariadb: MariaDBServer, make_table: Callable[[str], str], keys: tuple[Path, Path], tmp_path: Path
) -> None:
    table = make_table("two_")
    conn = gateway.connect(database=TEST_DB)
    sql = f"UPDATE {table} SET v = 0 WHERE id = 1"
    asked = approval_id(refused(conn, sql))
    # The local socket's user is in no "dba" group: not an approver for this rule.
    local = cli(gateway, "approve", asked)
    assert local.returncode == 1 and "dba" in local.stderr
    bob = token_file(tmp_path, keys, "bob", ["dba"])
    carol = token_file(tmp_path, keys, "carol", ["dba"])
    first = remote(gateway, bob, "approve", asked)
    assert first["outcome"].startswith("approval recorded")
    assert first["approval"]["state"] == "pending"
    twice = remote(gateway, bob, "approve", asked)
    assert twice.returncode == 1 and "another approver" in twice.stderr
    # Still pending: the statement is refused with the same id.
    assert approval_id(refused(conn, sql)) == asked
    assert remote(gateway, carol, "approve", asked)["outcome"] == "approved"
    with conn.cursor() as cur:
        cur.execute(sql)
        assert cur.rowcount == 1
    conn.close()
    assert steps(gateway, asked) == ["requested", "approval_added", "approved", "used"]


# --- restarts and shutdown ----------------------------------------------------------------


def test_retry_approval_survives_a_restart_and_a_held_statement_fails_at_shutdown(
    mariadb: MariaDBServer,
    make_table: Callable[[str], str],
    keys: tuple[Path, Path],
    webhook: Webhook,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    table = make_table("r_")
    workdir = tmp_path_factory.mktemp("approvals-restart")
    config = approvals_config(mariadb, workdir, keys[1], webhook.url)
    # State and audit outside the process's work dir, which stop() removes.
    config = deep_merge(
        config,
        {
            "gateway": {"state_dir": str(workdir / "kept-state")},
            "audit": {"directory": str(workdir / "kept-audit")},
            "listeners": [
                {k: v for k, v in listener.items() if k != "unix_socket"}
                for listener in config["listeners"]
            ],
        },
    )
    env = {"HOOK_SECRET": WEBHOOK_SECRET}
    sql = f"UPDATE {table} SET v = 7 WHERE id = 1"
    with HoopyProcess(config, env=env) as first:
        conn = first.connect(database=TEST_DB)
        asked = approval_id(refused(conn, sql))
        cli(first, "approve", asked)
        conn.close()
        # A statement held when the gateway stops gets an answer, not a cut connection.
        hold_table = f"h_{secrets.token_hex(4)}"
        mariadb.admin_sql(f"CREATE TABLE {TEST_DB}.{hold_table} (id INT PRIMARY KEY)")
        held = run_async(
            f"DELETE FROM {hold_table} WHERE id = 1", lambda: first.connect(database=TEST_DB)
        )
        held_request = pending_for(first, hold_table)
        first.stop()
        rowcount, error = held.result(timeout=20)
        assert rowcount is None and error[0] == 1290
        assert "cancelled" in error[1] and "shutting down" in error[1]
        mariadb.admin_sql(f"DROP TABLE {TEST_DB}.{hold_table}")
    with HoopyProcess(config, env=env) as second:
        conn = second.connect(database=TEST_DB)
        with conn.cursor() as cur:
            cur.execute(sql)
            assert cur.rowcount == 1
        assert values(mariadb, table)[0] == (1, 7)
        assert approval_id(refused(conn, sql)) != asked
        conn.close()
        kept = cli(second, "list", "--all")
        states = {a["id"]: a["state"] for a in kept}
        assert states[asked] == "used"
        assert states[held_request["id"]] == "cancelled"
        assert steps(second, asked) == ["requested", "approved", "used"]
        assert steps(second, held_request["id"]) == ["requested", "cancelled"]


def test_the_idle_watchdog_does_not_cut_a_held_statement(
    mariadb: MariaDBServer,
    make_table: Callable[[str], str],
    keys: tuple[Path, Path],
    webhook: Webhook,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    table = make_table("h_")
    workdir = tmp_path_factory.mktemp("approvals-idle")
    config = deep_merge(
        approvals_config(mariadb, workdir, keys[1], webhook.url),
        {"gateway": {"idle_timeout": 1}},
    )
    with HoopyProcess(config, workdir=workdir, env={"HOOK_SECRET": WEBHOOK_SECRET}) as proc:
        idle = proc.connect(database=TEST_DB)
        held = run_async(f"DELETE FROM {table} WHERE id = 2", lambda: proc.connect(database=TEST_DB))
        request = pending_for(proc, table)
        # The watchdog has run past its timeout once the idle bystander's session ends.
        audit = Path(proc.config["audit"]["directory"])
        wait_for(
            lambda: any(
                r.get("kind") == "session_end" and str(r.get("reason")).startswith("idle for")
                for r in iter_records(audit)
            ),
            timeout=20,
        )
        assert not held.done()
        cli(proc, "approve", request["id"])
        assert held.result(timeout=20) == (1, None)
        assert count(mariadb, table) == 2
        with pytest.raises(pymysql.err.MySQLError), idle.cursor() as cur:
            cur.execute("SELECT 1")
