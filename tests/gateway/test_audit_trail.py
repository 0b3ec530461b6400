"""The running gateway's audit trail against deletion: the live file deleted under it, and the
head state that shows records removed from the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
from typer.testing import CliRunner

from hoopy.audit.head import default_head_path, load_head
from hoopy.audit.reader import audit_files, iter_records, verify
from hoopy.cli import app

Start = Any
# How long the gateway may take to notice a deleted file: its background tick runs every
# fsync_interval (0.05 s here); this is a deadline for a condition, not a sleep.
NOTICE_DEADLINE = 20.0


def statement_files(directory: Path, needle: str) -> list[str]:
    """The audit files holding a statement record whose SQL contains ``needle``."""
    found = []
    for path in audit_files(directory):
        for line in path.read_bytes().splitlines():
            if b'"kind":"statement"' in line and needle.encode() in line:
                found.append(path.name)
    return found


@pytest.mark.parametrize("durability", ["os", "strict"])
def test_deleting_the_live_file_starts_a_new_one_and_the_chain_records_the_gap(
    hoopy_factory: Start, tmp_path: Path, fresh_db: str, durability: str
) -> None:
    directory = tmp_path / "audit"
    hoopy = hoopy_factory(
        audit={"directory": str(directory), "durability": durability, "fsync_interval": 0.05}
    )
    conn = hoopy.connect(database=fresh_db)
    ran: list[int] = []
    refused: list[int] = []
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        (live,) = audit_files(directory)
        live.unlink()
        deadline = time.monotonic() + NOTICE_DEADLINE
        value = 0
        while audit_files(directory) == [] and time.monotonic() < deadline:
            value += 1
            try:
                cur.execute(f"INSERT INTO t VALUES ({value})")
                ran.append(value)
            except pymysql.err.OperationalError as exc:
                # strict: the batch whose fsync found the file gone is refused, fail closed
                assert exc.args[0] == 3164 and "deleted or moved" in exc.args[1], exc
                refused.append(value)
        assert audit_files(directory), "the gateway never noticed the deleted file"
        cur.execute("INSERT INTO t VALUES (100000)")  # after: into the new file
        cur.execute("SELECT id FROM t ORDER BY id")
        in_db = [row[0] for row in cur.fetchall()]
    conn.close()
    hoopy.stop()

    assert in_db == [*ran, 100000] and not set(refused) & set(in_db)
    (new,) = audit_files(directory)
    assert statement_files(directory, "VALUES (100000)") == [new.name]
    start = next(iter_records(directory))
    assert start["kind"] == "file_start" and start["previous_file"] == live.name
    assert start["gap"]["kind"] == "file_lost" and start["gap"]["file"] == live.name
    lost_and_ran = [v for v in ran if not statement_files(directory, f"VALUES ({v})")]
    if durability == "strict":
        # Nothing ran without its record on disk in a file that still exists.
        assert lost_and_ran == []
    else:
        assert start["gap"]["lost_bytes"] > 0  # the documented loss: os mode ran them

    head = default_head_path(directory)
    report = verify(directory, None, head)
    assert report.ok, (report.first_problem, report.index_problems, report.head)
    assert [g.kind for g in report.gaps] == ["file_lost"]
    assert load_head(head, None).position.file == new.name
    cli = CliRunner().invoke(app, ["audit", "verify", str(directory), "--json"])
    assert cli.exit_code == 0, cli.output
    assert [g["kind"] for g in json.loads(cli.stdout)["gaps"]] == ["file_lost"]


def test_records_removed_while_the_gateway_was_stopped_are_found_at_start(
    hoopy_factory: Start, tmp_path: Path, fresh_db: str
) -> None:
    directory = tmp_path / "audit"
    config = {"directory": str(directory), "key_env": "HOOPY_TEST_AUDIT_KEY"}
    env = {"HOOPY_TEST_AUDIT_KEY": "k" * 32}
    hoopy = hoopy_factory(audit=config, env=env)
    conn = hoopy.connect(database=fresh_db)
    with conn.cursor() as cur:
        for i in range(3):
            cur.execute(f"SELECT {i}")
    conn.close()
    hoopy.stop()
    (path,) = audit_files(directory)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-4]))  # the session's end, cut at a line boundary
    path.with_name(path.name + ".idx").unlink()
    key = b"k" * 32
    assert verify(directory, key).ok, "the chain alone cannot tell"
    report = verify(directory, key, default_head_path(directory))
    assert report.head is not None and report.head.problem is not None
    assert "the trail ends before the last record the gateway wrote" in report.head.problem

    hoopy = hoopy_factory(audit=config, env=env)  # starts again: it checks the head
    hoopy.stop()
    report = verify(directory, key, default_head_path(directory))
    assert report.ok and [g.kind for g in report.gaps] == ["trail_truncated"]


@pytest.mark.parametrize("switch", ["handshake", "set names"])
def test_pymysql_gbk_session_cannot_hide_a_credential_from_the_audit(
    hoopy_factory: Any, tmp_path: Path, switch: str
) -> None:
    hoopy = hoopy_factory(audit={"directory": str(tmp_path / "audit")})
    conn = hoopy.connect(charset="gbk" if switch == "handshake" else "utf8mb4")
    with conn.cursor() as cur:
        if switch == "set names":
            cur.execute("SET NAMES gbk")
        with pytest.raises(pymysql.err.OperationalError):  # the identifier is no column
            cur.execute(b"SELECT `a\x81` , 'x' -- ` , PASSWORD('hunter2')")
    conn.close()
    hoopy.stop()
    text = "\n".join(str(r) for r in iter_records(tmp_path / "audit"))
    assert "PASSWORD(" in text and "hunter2" not in text
