"""Sessions write the audit trail: records before statements run, outcomes after, no secrets,
and statements refused when the log cannot be written."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from hoopy.audit.reader import iter_records, verify
from tests.gateway_rig import DEV_PASSWORD, DEV_USER, TEST_DB, HoopyProcess, HoopyStartError

Start = Any


def audited(hoopy_factory: Start, tmp_path: Path, **audit: Any) -> tuple[HoopyProcess, Path]:
    directory = tmp_path / "audit"
    hoopy = hoopy_factory(audit={"directory": str(directory), **audit})
    return hoopy, directory


def kinds(directory: Path, session: str | None = None) -> list[dict[str, Any]]:
    return [r for r in iter_records(directory) if session is None or r.get("session") == session]


@pytest.mark.parametrize("durability", ["os", "strict"])
def test_pymysql_session_is_recorded_statement_by_statement(
    hoopy_factory: Start, tmp_path: Path, fresh_db: str, durability: str
) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path, durability=durability)
    conn = hoopy.connect(database=fresh_db, program_name="nightly-etl")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        cur.execute("INSERT INTO t (v) VALUES (1), (2), (3)")
        cur.execute("SELECT * FROM t WHERE v > %s", (1,))
        assert len(cur.fetchall()) == 2
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM missing")
    conn.close()
    hoopy.stop()
    records = kinds(directory)
    start = next(r for r in records if r["kind"] == "session_start")
    session = start["session"]
    assert start["principal"]["name"] == DEV_USER and start["principal"]["method"] == "gateway_user"
    assert start["principal"]["roles"] == ["developers"]
    assert start["connect_attrs"].get("program_name") == "nightly-etl"
    assert start["target"] == "app" and start["database"] == fresh_db
    mine = [r for r in records if r.get("session") == session]
    statements = [r for r in mine if r["kind"] == "statement"]
    outcomes = {r["seq"]: r for r in mine if r["kind"] == "outcome"}
    sql = [s.get("sql") for s in statements if s["command"] == "COM_QUERY"]
    assert "INSERT INTO t (v) VALUES (1), (2), (3)" in sql
    assert "SELECT * FROM t WHERE v > 1" in sql
    insert = next(s for s in statements if s.get("sql", "").startswith("INSERT"))
    assert outcomes[insert["seq"]]["affected_rows"] == 3
    assert outcomes[insert["seq"]]["last_insert_id"] == 1
    select = next(s for s in statements if s.get("sql", "").startswith("SELECT * FROM t"))
    assert outcomes[select["seq"]]["rows"] == 2
    missing = next(s for s in statements if s.get("sql") == "SELECT * FROM missing")
    assert outcomes[missing["seq"]]["error"] == {
        "code": 1146,
        "sqlstate": "42S02",
        "message": f"Table '{fresh_db}.missing' doesn't exist",
    }
    # Every statement's record precedes its outcome; the session ends with totals.
    order = [(r["kind"], r.get("seq")) for r in mine]
    for s in statements:
        if s["seq"] in outcomes:
            assert order.index(("statement", s["seq"])) < order.index(("outcome", s["seq"]))
    end = mine[-1]
    assert end["kind"] == "session_end" and end["errors"] == 1
    assert verify(directory).ok


def test_prepared_statements_are_recorded_with_their_ids(
    hoopy_factory: Start, tmp_path: Path
) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path)
    conn = hoopy.connect_connector(TEST_DB)
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT ? + 1", (41,))
    assert cur.fetchall() == [(42,)]
    conn.close()
    hoopy.stop()
    records = kinds(directory)
    prepare = next(r for r in records if r.get("command") == "COM_STMT_PREPARE")
    assert prepare["sql"] == "SELECT ? + 1"
    prepared_id = next(r for r in records if r["kind"] == "outcome" and r["seq"] == prepare["seq"])[
        "statement_id"
    ]
    execute = next(r for r in records if r.get("command") == "COM_STMT_EXECUTE")
    assert execute["statement_id"] == prepared_id


def test_credentials_never_reach_the_audit_file(hoopy_factory: Start, tmp_path: Path) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path)
    conn = hoopy.connect()
    with conn.cursor() as cur:
        for sql in (
            "CREATE USER 'audit_probe'@'%' IDENTIFIED BY 'Sup3r-S3cret-1'",
            "ALTER USER audit_probe IDENTIFIED BY 'Sup3r-S3cret-2' garbage",
            "SET PASSWORD FOR audit_probe = PASSWORD('Sup3r-S3cret-3')",
            "SELECT PASSWORD('Sup3r-S3cret-4')",
        ):
            # The app account may not create users: the SQL text is what matters.
            with contextlib.suppress(pymysql.err.MySQLError):
                cur.execute(sql)
    conn.close()
    hoopy.stop()
    raw = b"".join(p.read_bytes() for p in directory.glob("audit-*.jsonl"))
    assert b"Sup3r-S3cret" not in raw
    assert raw.count(b"<redacted:credential>") >= 4
    assert DEV_PASSWORD.encode() not in raw


# Issue 8, item 6: each reached the audit file verbatim (and the server accepted each).
EVASIONS = [
    "CREATE USER 'audit_probe'@'%' IDENTIFIED /**/ BY 'Sup3r-S3cret-5'",
    "CREATE USER 'audit_probe'@'%' IDENTIFIED BY/**/'Sup3r-S3cret-6'",
    "CREATE USER 'audit_probe'@'%' IDENTIFIED -- c\n BY 'Sup3r-S3cret-7'",
    "SELECT PASSWORD/**/('Sup3r-S3cret-8')",
    "PREPARE s FROM 'CREATE USER audit_probe IDENTIFIED BY ''Sup3r-S3cret-9'''",
    "CREATE SERVER probe FOREIGN DATA WRAPPER mysql OPTIONS (PASSWORD 'Sup3r-S3cret-10')",
    "CHANGE MASTER TO MASTER_PASSWORD='Sup3r-S3cret-11'",
    "CREATE USER audit_probe IDENTIFIED VIA mysql_native_password USING 'Sup3r-S3cret-12'",
    "SELECT OLD_PASSWORD('Sup3r-S3cret-13')",
    "/*!CREATE USER audit_probe IDENTIFIED BY 'Sup3r-S3cret-14' */",
    # With NO_BACKSLASH_ESCAPES, "\'" does not escape the quote: the literal ends there.
    "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'",
    "CREATE USER audit_probe IDENTIFIED BY 'Sup3r-S3cret-15\\'",
]


def test_credential_evasions_never_reach_the_audit_file_pymysql(
    hoopy_factory: Start, tmp_path: Path
) -> None:
    hoopy, directory = audited(hoopy_factory, tmp_path)
    conn = hoopy.connect()
    with conn.cursor() as cur:
        for sql in EVASIONS:
            with contextlib.suppress(pymysql.err.MySQLError):
                cur.execute(sql)
    conn.close()
    hoopy.stop()
    raw = b"".join(p.read_bytes() for p in directory.glob("audit-*.jsonl"))
    assert b"Sup3r-S3cret" not in raw
    redacted = [r for r in kinds(directory) if "credential" in r.get("redacted", [])]
    assert len(redacted) == len(EVASIONS) - 1  # all but the SET sql_mode


def test_prepared_credential_parameters_are_redacted_mysql_connector(
    hoopy_factory: Start, tmp_path: Path
) -> None:
    """SELECT PASSWORD(?) through a real server-side prepared statement: the parameter of
    each execution is recorded as a credential."""
    hoopy, directory = audited(hoopy_factory, tmp_path)
    conn = hoopy.connect_connector(TEST_DB)
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT PASSWORD(?)", ("Sup3r-S3cret-20",))
    assert cur.fetchall()[0][0]  # the server ran it
    cur.execute("SELECT ? + 1", (41,))
    assert cur.fetchall() == [(42,)]
    conn.close()
    hoopy.stop()
    raw = b"".join(p.read_bytes() for p in directory.glob("audit-*.jsonl"))
    assert b"Sup3r-S3cret" not in raw
    executes = [r for r in kinds(directory) if r.get("command") == "COM_STMT_EXECUTE"]
    assert [p.get("value") for p in executes[0]["params"]] == ["<redacted:credential>"]
    assert executes[0]["params"][0]["redacted"] is True
    assert executes[0]["redacted"] == ["credential"]
    assert executes[1]["params"][0]["value"] == 41  # other statements keep their values


def test_statements_are_refused_when_the_log_cannot_be_written(
    hoopy_factory: Start, tmp_path: Path
) -> None:
    # A file-size limit makes every write past 30 KB fail (EFBIG: Python ignores SIGXFSZ),
    # like a full disk, for the audit file only in practice.
    class Limited(HoopyProcess):
        @property
        def argv(self) -> list[str]:
            return ["prlimit", "--fsize=30000", "--", *super().argv]

    directory = tmp_path / "audit"
    hoopy = hoopy_factory(audit={"directory": str(directory)})
    hoopy.stop()
    limited = Limited(dict(hoopy.config), workdir=tmp_path / "limited").start()
    try:
        conn = limited.connect()
        refused = None
        refused_at = -1
        with conn.cursor() as cur:
            for i in range(400):
                try:
                    cur.execute("SELECT %s, REPEAT('x', 200)", (i,))
                    cur.fetchall()
                except pymysql.err.OperationalError as exc:
                    refused, refused_at = exc, i
                    break
        assert refused is not None, "the audit file never filled up"
        assert refused.args[0] == 3164
        assert "cannot write its audit log, so the statement was not run" in refused.args[1]
        assert str(directory) not in refused.args[1], "clients learn why, not the server's paths"
        # Everything that ran was recorded; the refused statement was neither recorded nor run.
        sql = [r.get("sql", "") for r in kinds(directory) if r["kind"] == "statement"]
        assert sql[-1].startswith(f"SELECT {refused_at - 1},")
        assert not any(s.startswith(f"SELECT {refused_at},") for s in sql)
    finally:
        limited.close()
    assert "statement refused" in limited.stderr_text()


def test_hoopy_refuses_to_start_without_its_audit_log(hoopy_factory: Start, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with pytest.raises(HoopyStartError) as info:
        hoopy_factory(audit={"directory": str(blocker / "audit")})
    assert "hoopy exited with 2" in str(info.value)
    assert "cannot start: cannot open the audit directory" in str(info.value)


def test_two_gateways_cannot_share_an_audit_directory(hoopy_factory: Start, tmp_path: Path) -> None:
    # Both would append to the same chain from different places: the second refuses.
    first, directory = audited(hoopy_factory, tmp_path)
    with pytest.raises(HoopyStartError) as info:
        hoopy_factory(audit={"directory": str(directory)})
    assert f"in use by another hoopy process (pid {first.pid})" in str(info.value)
    # The first one is unaffected, and once it is gone the directory is free again.
    conn = first.connect()
    conn.close()
    first.stop()
    second = hoopy_factory(audit={"directory": str(directory)})
    second.connect().close()
    second.stop()
    assert verify(directory).ok


@pytest.mark.parametrize("durability", ["os", "strict"])
def test_an_idle_sessions_last_outcome_reaches_the_file(
    hoopy_factory: Start, tmp_path: Path, durability: str
) -> None:
    # Outcomes ride on the next statement's write; an idle session has none, so the
    # background task writes them within fsync_interval, in both modes.
    hoopy, directory = audited(hoopy_factory, tmp_path, durability=durability, fsync_interval=0.2)
    conn = hoopy.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT 'last before idle'")
    seq = next(r["seq"] for r in kinds(directory) if r.get("sql") == "SELECT 'last before idle'")
    deadline = time.monotonic() + 3  # 15 intervals; the index save (every 5 s) also flushes
    while time.monotonic() < deadline:
        if any(r["kind"] == "outcome" and r["seq"] == seq for r in kinds(directory)):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the outcome stayed in memory")
    conn.close()
