"""The audit trail end to end with real clients: decoded parameters, result digests,
verdicts, `hoopy sessions`, `hoopy audit search`, `hoopy replay` (timeline and re-execution
against a second database), and crash safety under SIGKILL."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest
from typer.testing import CliRunner

from hoopy.audit.reader import iter_records, verify
from hoopy.cli import app as hoopy_app
from tests.gateway_rig import (
    DEFAULT_ENV,
    DEV_USER,
    HoopyProcess,
    write_toml,
)

Start = Any


_RUNNER = CliRunner()


def hoopy_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``hoopy ARGS``, run in this process: the CLI's own code, without a Python start per
    call (the live-follow test runs it as a process of its own)."""
    done = _RUNNER.invoke(hoopy_app, list(args), env={**DEFAULT_ENV, "COLUMNS": "200"})
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    result = subprocess.CompletedProcess(list(args), done.exit_code, done.stdout, done.stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"hoopy {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def cli_json(*args: str) -> Any:
    return json.loads(hoopy_cli(*args, "--json", check=True).stdout)


def audited(hoopy_factory: Start, tmp_path: Path, **audit: Any) -> tuple[HoopyProcess, Path]:
    directory = tmp_path / "audit"
    return hoopy_factory(audit={"directory": str(directory), **audit}), directory


def connector(hoopy: HoopyProcess, database: str) -> Any:
    return hoopy.connect_connector(database, autocommit=True)


def session_of(directory: Path, program: str) -> str:
    for r in iter_records(directory):
        if r["kind"] == "session_start" and r["connect_attrs"].get("program_name") == program:
            return str(r["session"])
    raise AssertionError(f"no session of {program}")


def records_of(directory: Path, session: str) -> list[dict[str, Any]]:
    return [r for r in iter_records(directory) if r.get("session") == session]


def test_prepared_parameters_and_result_digests_are_recorded(
    hoopy_factory: Start, tmp_path: Path, fresh_db: str
) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path)
    conn = connector(hoopy, fresh_db)
    cur = conn.cursor(prepared=True)
    cur.execute(
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(50), score DOUBLE, "
        "born DATE, data VARBINARY(10), note TEXT)"
    )
    row = (1, "zoë", 2.5, datetime.date(2001, 2, 3), b"\x00\xff", None)
    cur.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", row)
    cur.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", (2, "bob", -1.0, None, b"ok", "n"))
    for _ in range(2):
        cur.execute("SELECT id, name FROM t WHERE id >= ?", (1,))
        assert len(cur.fetchall()) == 2
    cur.execute("SELECT id, name FROM t WHERE id >= ?", (2,))
    assert cur.fetchall() == [(2, "bob")]
    conn.close()
    hoopy.stop()

    records = list(iter_records(directory))
    executes = [r for r in records if r.get("command") == "COM_STMT_EXECUTE"]
    first = next(r for r in executes if r["sql"].startswith("INSERT"))
    params = first["params"]
    assert [p["value"] if "value" in p else p.get("hex") for p in params] == [
        1,
        "zoë",
        2.5,
        "2001-02-03",
        "00ff",
        None,
    ]
    assert params[0]["type"] in ("TINY", "LONGLONG") and params[2]["type"] == "DOUBLE"
    assert params[3]["type"] == "DATE" and params[5]["type"] == "NULL"
    assert first["verdict"] == "allow" and first["rule"] is None
    outcomes = {r["seq"]: r for r in records if r["kind"] == "outcome"}
    selects = [r for r in executes if r["sql"].startswith("SELECT")]
    digests = [outcomes[s["seq"]].get("digest") for s in selects]
    assert digests[0] and digests[0] == digests[1], "same rows, same digest"
    assert digests[2] and digests[2] != digests[0], "different rows, different digest"
    assert "digest" not in outcomes[first["seq"]], "no result set, no digest"
    start = next(r for r in records if r["kind"] == "session_start")
    assert isinstance(start["client"]["capabilities"], int)


def test_sessions_search_and_timeline_from_the_cli(hoopy_factory: Start, tmp_path: Path) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path)
    conn = hoopy.connect(program_name="agent-7")
    with conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE tl (id INT)")
        cur.execute("INSERT INTO tl VALUES (1), (2)")
        cur.execute("SELECT * FROM tl")
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM no_such_table")
        with pytest.raises(pymysql.err.MySQLError):
            cur.execute("LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE tl")
    conn.close()
    other = hoopy.connect(program_name="quiet")
    other.close()
    hoopy.stop()
    session = session_of(directory, "agent-7")
    quiet = session_of(directory, "quiet")

    listed = cli_json("sessions", "--audit-dir", str(directory))
    assert [s["session"] for s in listed] == [quiet, session], "newest first"
    mine = listed[1]
    assert mine["principal"] == DEV_USER and mine["target"] == "app"
    assert mine["program"] == "agent-7"
    # PyMySQL's own SET AUTOCOMMIT, then the five above.
    assert mine["statements"] == 6 and mine["errors"] == 2 and mine["denied"] == 1
    assert mine["end_reason"] == "client quit"
    assert [
        s["session"] for s in cli_json("sessions", "--audit-dir", str(directory), "--errors")
    ] == [session]
    assert [
        s["session"] for s in cli_json("sessions", "--audit-dir", str(directory), "--denied")
    ] == [session]
    assert cli_json("sessions", "--audit-dir", str(directory), "--who", "nobody") == []
    assert len(cli_json("sessions", "--audit-dir", str(directory), "--who", "d*")) == 2
    assert cli_json("sessions", "--audit-dir", str(directory), "--since", "1h") != []
    assert cli_json("sessions", "--audit-dir", str(directory), "--until", "2000-01-01") == []

    hits = cli_json("audit", "search", "--audit-dir", str(directory), "--sql", "insert into tl")
    assert [h["statement"]["sql"] for h in hits] == ["INSERT INTO tl VALUES (1), (2)"]
    assert hits[0]["outcome"]["affected_rows"] == 2 and hits[0]["principal"] == DEV_USER
    denied = cli_json("audit", "search", "--audit-dir", str(directory), "--verdict", "deny")
    assert [h["statement"]["rule"] for h in denied] == ["local_infile"]
    assert denied[0]["outcome"]["error"]["code"] == 1148
    failed = cli_json("audit", "search", "--audit-dir", str(directory), "--error-code", "1146")
    assert [h["statement"]["sql"] for h in failed] == ["SELECT * FROM no_such_table"]
    regex = cli_json(
        "audit", "search", "--audit-dir", str(directory), "--regex", r"^SELECT \* FROM tl$"
    )
    assert len(regex) == 1 and regex[0]["outcome"]["rows"] == 2

    timeline = cli_json("replay", session[:10], "--audit-dir", str(directory))
    assert timeline["session"] == session
    assert [s["statement"].get("sql") for s in timeline["steps"]][1:4] == [
        "CREATE TEMPORARY TABLE tl (id INT)",
        "INSERT INTO tl VALUES (1), (2)",
        "SELECT * FROM tl",
    ]
    text = hoopy_cli("replay", session, "--audit-dir", str(directory), check=True).stdout
    assert f"session {session}" in text and "agent-7" in text
    assert "SELECT * FROM tl" in text and "2 rows" in text
    assert "ERROR 1146 (42S02)" in text and "DENIED (local_infile)" in text
    assert "client quit" in text
    # Through the gateway's config, without the gateway's secrets in the environment.
    config = tmp_path / "gateway.toml"
    write_toml(config, {**hoopy.config, "audit": {"directory": str(directory)}})
    env = {k: v for k, v in os.environ.items() if k not in DEFAULT_ENV}
    via_config = subprocess.run(
        [sys.executable, "-m", "hoopy", "sessions", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert via_config.returncode == 0, via_config.stderr
    assert {s["session"] for s in json.loads(via_config.stdout)} == {session, quiet}
    missing = hoopy_cli("replay", "ffff", "--audit-dir", str(directory))
    assert missing.returncode == 2 and "no session 'ffff'" in missing.stderr


def replay_config(hoopy: HoopyProcess, tmp_path: Path) -> Path:
    path = tmp_path / "replay.toml"
    write_toml(path, hoopy.config)
    return path


def test_replay_reproduces_a_session_on_a_second_database(
    hoopy_factory: Start, tmp_path: Path, database_factory: Callable[[], str], mariadb: Any
) -> None:
    first, second = database_factory(), database_factory()
    hoopy, directory = audited(hoopy_factory, tmp_path)
    config = replay_config(hoopy, tmp_path)
    conn = connector(hoopy, first)
    cur = conn.cursor()
    cur.execute("CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20))")
    cur.execute("INSERT INTO items (name) VALUES ('a'), ('b'), ('c')")
    cur.execute("UPDATE items SET name = 'z' WHERE id > 1")
    cur.execute("SELECT * FROM items ORDER BY id")
    cur.fetchall()
    prepared = conn.cursor(prepared=True)
    prepared.execute("SELECT name FROM items WHERE id = ?", (2,))
    assert prepared.fetchall() == [("z",)]
    prepared.execute("INSERT INTO items (name) VALUES (?)", ("d",))
    conn.close()
    hoopy.stop()
    session = next(r["session"] for r in iter_records(directory) if r["kind"] == "session_start")
    audit = ("--audit-dir", str(directory), "--config", str(config))

    dry = hoopy_cli("replay", session, *audit, "--dry-run", check=True).stdout
    assert "run  #" in dry and "write" in dry and "INSERT INTO items" in dry

    on_second = (*audit, "--execute", "--target", "app", "--database", second)
    refused = hoopy_cli("replay", session, *on_second)
    assert refused.returncode == 2
    assert "may write" in refused.stderr and "--allow-writes" in refused.stderr
    assert mariadb.admin_sql(f"SHOW TABLES FROM `{second}`") == [], "nothing may run"

    report = cli_json("replay", session, *on_second, "--allow-writes")
    assert report["differences"] == [], report
    ran = {r["seq"]: r["outcome"] for r in report["results"] if r["outcome"]}
    assert any(o.get("affected_rows") == 3 for o in ran.values())
    assert any(o.get("digest") for o in ran.values())
    rows = mariadb.admin_sql(f"SELECT name FROM `{second}`.items ORDER BY id")
    assert rows == [("a",), ("z",), ("z",), ("d",)]

    # The same session again on the now-filled database: CREATE TABLE fails and rows differ.
    again = hoopy_cli("replay", session, *on_second, "--allow-writes")
    assert again.returncode == 1
    assert "differs" in again.stdout and "error" in again.stdout

    # Only the reads: the EXECUTE and RESET of a skipped PREPARE are skipped with it. The
    # SELECT * differs now (the database holds the rows of two runs).
    reads = hoopy_cli("replay", session, *on_second, "--skip-writes", "--json")
    assert reads.returncode == 1, reads.stderr
    result = json.loads(reads.stdout)
    reasons = {s["reason"] for s in result["skipped"]}
    assert "write skipped (--skip-writes)" in reasons
    assert any(r.startswith("its statement was not prepared") for r in reasons)
    assert {(d["seq"], d["field"]) for d in result["differences"]} <= {(7, "rows"), (7, "digest")}
    assert result["differences"]


def test_sigkill_mid_load_leaves_no_unrecorded_statement(
    hoopy_factory: Start, tmp_path: Path, fresh_db: str, mariadb: Any
) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path)
    setup = hoopy.connect(database=fresh_db)
    with setup.cursor() as cur:
        cur.execute("CREATE TABLE k (worker INT, n INT, PRIMARY KEY (worker, n))")
    setup.close()
    stop = threading.Event()

    def load(worker: int) -> None:
        try:
            conn = hoopy.connect(database=fresh_db)
            with conn.cursor() as cur:
                n = 0
                while not stop.is_set():
                    cur.execute(f"INSERT INTO k VALUES ({worker}, {n})")
                    n += 1
        except pymysql.err.MySQLError:
            return  # the gateway died under us

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    hoopy.send_signal(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    with mariadb.admin_connect(database=fresh_db) as conn, conn.cursor() as cur:
        cur.execute("SELECT worker, n FROM k")
        stored = set(cur.fetchall())
    assert len(stored) > 20, "the load did not run"
    recorded = {r.get("sql") for r in iter_records(directory) if r["kind"] == "statement"}
    missing = [
        row for row in stored if f"INSERT INTO k VALUES ({row[0]}, {row[1]})" not in recorded
    ]
    assert missing == [], "rows reached the database without their audit record"
    # Restart on the same directory: the chain continues and verifies; sessions cut by the
    # crash show as open.
    again = HoopyProcess(dict(hoopy.config), workdir=tmp_path / "again").start()
    conn = again.connect()
    conn.close()
    again.stop()
    report = verify(directory)
    assert report.ok, report.first_problem
    listed = cli_json("sessions", "--audit-dir", str(directory), "--limit", "0")
    assert sum(1 for s in listed if s["ended"] is None) >= 4


def test_sensitive_literals_are_redacted_when_configured(
    hoopy_factory: Start, tmp_path: Path, fresh_db: str
) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path, redact=["secrets", "personal"])
    conn = connector(hoopy, fresh_db)
    cur = conn.cursor()
    cur.execute("CREATE TABLE p (email VARCHAR(80), card VARCHAR(30))")
    cur.execute("INSERT INTO p VALUES ('jane.doe@example.com', '4111 1111 1111 1111')")
    cur.execute("SELECT * FROM p WHERE email = 'nobody@example.org' AND card = 'x'")
    cur.fetchall()
    prepared = conn.cursor(prepared=True)
    prepared.execute("SELECT * FROM p WHERE email = ?", ("jane.doe@example.com",))
    prepared.fetchall()
    conn.close()
    hoopy.stop()
    raw = b"".join(p.read_bytes() for p in directory.glob("audit-*.jsonl"))
    assert b"jane.doe@example.com" not in raw and b"nobody@example.org" not in raw
    assert b"4111 1111 1111 1111" not in raw
    statements = [r for r in iter_records(directory) if r["kind"] == "statement"]
    insert = next(s for s in statements if s.get("sql", "").startswith("INSERT INTO p"))
    assert insert["redacted"] == ["card", "email"]
    execute = next(s for s in statements if s["command"] == "COM_STMT_EXECUTE")
    assert execute["params"][0]["redacted"] is True and execute["redacted"] == ["email"]
    # The non-sensitive literal stays readable.
    assert any("card = 'x'" in s.get("sql", "") for s in statements)


def test_audit_is_on_by_default_in_the_state_directory(hoopy_factory: Start) -> None:
    hoopy = hoopy_factory()
    assert "audit" not in hoopy.config
    conn = hoopy.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT 'default-on'")
    conn.close()
    directory = Path(hoopy.config["gateway"]["state_dir"]) / "audit"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [r for r in iter_records(directory) if r.get("sql") == "SELECT 'default-on'"]
        if found:
            break
        time.sleep(0.1)
    assert found, "the statement was not recorded in <state_dir>/audit"
    assert verify(directory).ok


def test_audit_can_be_turned_off_explicitly(hoopy_factory: Start) -> None:
    hoopy = hoopy_factory(audit={"enabled": False})
    conn = hoopy.connect()
    conn.close()
    state = Path(hoopy.config["gateway"]["state_dir"])
    assert not (state / "audit").exists()


def test_replay_follows_a_live_session_until_it_ends(hoopy_factory: Start, tmp_path: Path) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path, rotate_bytes=4000)
    conn = hoopy.connect(program_name="live-agent")
    with conn.cursor() as cur:
        cur.execute("SELECT 'before follow'")
    session = ""
    deadline = time.monotonic() + 10
    while not session and time.monotonic() < deadline:
        try:
            session = session_of(directory, "live-agent")
        except AssertionError:
            time.sleep(0.1)
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hoopy",
            "replay",
            session,
            "--audit-dir",
            str(directory),
            "--follow",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **DEFAULT_ENV},
    )
    try:
        time.sleep(1.0)
        assert follower.poll() is None, "follow returned while the session is open"
        with conn.cursor() as cur:
            # Enough records to rotate files several times while following.
            for i in range(40):
                cur.execute(f"SELECT 'during follow {i}', REPEAT('x', 100)")
        conn.close()
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    timeline = json.loads(out)
    sql = [s["statement"].get("sql", "") for s in timeline["steps"]]
    assert "SELECT 'before follow'" in sql
    assert sum(s.startswith("SELECT 'during follow") for s in sql) == 40
    assert timeline["end"]["reason"] == "client quit"
    assert len(list(directory.glob("audit-*.jsonl"))) > 3, "rotation happened meanwhile"


def _read_only_bind_mount(directory: Path) -> Callable[[], None] | None:
    """Make ``directory`` read-only for new path lookups (open descriptors keep writing), or
    None when this machine does not allow mounts. Returns the undo."""
    try:
        subprocess.run(
            ["mount", "--bind", str(directory), str(directory)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(directory)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError):
        subprocess.run(["umount", str(directory)], check=False)
        return None
    return lambda: subprocess.run(["umount", str(directory)], check=True)


def test_a_read_only_audit_directory_refuses_statements(
    hoopy_factory: Start, tmp_path: Path
) -> None:
    # Rotation needs a new file: with the directory read-only it cannot be created, so the
    # statement that needs it is refused (root ignores file modes, hence a read-only mount).
    hoopy, directory = audited(hoopy_factory, tmp_path, rotate_bytes=3000)
    conn = hoopy.connect()
    undo = _read_only_bind_mount(directory)
    if undo is None:
        conn.close()
        pytest.skip("needs permission to bind-mount (root with CAP_SYS_ADMIN)")
    refused = None
    try:
        with conn.cursor() as cur:
            for i in range(200):
                try:
                    cur.execute(f"SELECT {i}, REPEAT('y', 100)")
                except pymysql.err.OperationalError as exc:
                    refused = exc
                    break
    finally:
        undo()
    assert refused is not None, "no statement needed a new audit file"
    assert refused.args[0] == 3164
    assert "Read-only file system" in refused.args[1]
    assert str(directory) not in refused.args[1], "clients learn why, not the server's paths"
    # Once the directory is writable again the gateway recovers on its own (reopen <= 1/s).
    time.sleep(1.1)
    with conn.cursor() as cur:
        cur.execute("SELECT 'recovered'")
        assert cur.fetchall() == (("recovered",),)
    conn.close()
    hoopy.stop()
    assert verify(directory).ok
    assert any(r.get("sql") == "SELECT 'recovered'" for r in iter_records(directory))


def test_long_literals_and_long_text_are_recorded_cut_and_not_replayed(
    hoopy_factory: Start, tmp_path: Path, fresh_db: str
) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path, max_value_bytes=100, max_sql_bytes=200)
    conn = connector(hoopy, fresh_db)
    cur = conn.cursor()
    # What the client sees is untouched: only the record is cut.
    cur.execute("SELECT LENGTH('" + "a" * 300 + "')")
    assert cur.fetchall() == [(300,)]
    many = "SELECT " + ", ".join(f"'v{i}'" for i in range(150))
    cur.execute(many)
    assert len(cur.fetchall()[0]) == 150
    prepared = conn.cursor(prepared=True)
    long_prepared = "SELECT ? + " + " + ".join(str(i) for i in range(100))
    prepared.execute(long_prepared, (1,))
    assert prepared.fetchall() == [(1 + sum(range(100)),)]
    conn.close()
    hoopy.stop()

    statements = [r for r in iter_records(directory) if r["kind"] == "statement"]
    oversize = next(s for s in statements if s.get("sql", "").startswith("SELECT LENGTH("))
    assert oversize["sql"] == "SELECT LENGTH('<redacted:oversize>')"
    assert oversize["redacted"] == ["oversize"]
    assert "sql_truncated" not in oversize
    cut = next(s for s in statements if s.get("sql", "").startswith("SELECT 'v0'"))
    assert cut["sql_truncated"] is True and cut["sql_length"] == len(many)
    assert many.startswith(cut["sql"]) and 190 < len(cut["sql"].encode()) <= 200
    prepare = next(s for s in statements if s["command"] == "COM_STMT_PREPARE")
    execute = next(s for s in statements if s["command"] == "COM_STMT_EXECUTE")
    for record in (prepare, execute):
        assert record["sql_truncated"] is True and record["sql_length"] == len(long_prepared)
        assert long_prepared.startswith(record["sql"]) and len(record["sql"]) <= 200
    assert execute["params"][0]["value"] == 1
    assert verify(directory).ok

    session = oversize["session"]
    config = replay_config(hoopy, tmp_path)
    plan = cli_json(
        "replay", session, "--audit-dir", str(directory), "--config", str(config), "--dry-run"
    )
    reasons = {
        (p["statement"]["command"], p["statement"].get("sql", "")[:14]): p["reason"]
        for p in plan
        if not p["run"]
    }
    assert reasons[("COM_QUERY", "SELECT LENGTH(")] == (
        "a literal was too long to record (max_value_bytes)"
    )
    cut_text = "its text was recorded cut (max_sql_bytes)"
    assert reasons[("COM_QUERY", "SELECT 'v0', '")] == cut_text
    assert reasons[("COM_STMT_PREPARE", "SELECT ? + 0 +")] == cut_text
    assert reasons[("COM_STMT_EXECUTE", "SELECT ? + 0 +")].startswith(
        "its statement was not prepared"
    )
