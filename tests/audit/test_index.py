"""The session index: sidecars kept by the writer, tails scanned by readers, and lookups that
read only the byte ranges the index names."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.audit import index as index_module
from hoopy.audit.index import (
    AuditIndex,
    FileIndex,
    IndexKeeper,
    SessionNotFound,
    index_path,
    rebuild,
    session_records,
    write_sidecar,
)
from hoopy.audit.query import SessionFilter, find_sessions
from hoopy.audit.reader import audit_files, iter_records, verify
from hoopy.audit.records import AuditChain
from hoopy.audit.writer import AuditWriter

T0 = 1_795_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_sessions(
    directory: Path,
    plan: list[tuple[str, str]],
    *,
    rotate_bytes: int = 1 << 30,
    keeper: bool = True,
) -> AuditWriter:
    """Write records for (session, kind) pairs in the given interleaving."""
    clock = Clock()
    writer = AuditWriter(
        directory, rotate_bytes=rotate_bytes, clock=clock, index=IndexKeeper() if keeper else None
    )
    writer.open()
    seqs: dict[str, int] = {}
    for session, kind in plan:
        clock.now += 0.5
        record: dict[str, object] = {"kind": kind, "session": session}
        if kind == "session_start":
            record.update(
                principal={"name": f"user-{session}"}, target="app", client={"address": "1.2.3.4:5"}
            )
        elif kind == "statement":
            seqs[session] = seqs.get(session, 0) + 1
            record.update(seq=seqs[session], sql=f"SELECT {seqs[session]}", verdict="allow")
        elif kind == "outcome":
            record.update(
                seq=seqs.get(session, 0),
                rows=1,
                error={"code": 1064} if session == "s-err" else None,
            )
        elif kind == "session_end":
            record.update(reason="client quit", statements=seqs.get(session, 0))
        writer.append(record, write_now=kind != "outcome")
    return writer


def session_plan(names: list[str], statements: int) -> list[tuple[str, str]]:
    plan = [(n, "session_start") for n in names]
    for _ in range(statements):
        for n in names:
            plan += [(n, "statement"), (n, "outcome")]
    return plan + [(n, "session_end") for n in names]


def expected_records(directory: Path, session: str) -> list[dict[str, object]]:
    return [r for r in iter_records(directory) if r.get("session") == session]


def test_sessions_are_found_through_sidecars_across_rotation(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    writer = write_sessions(directory, session_plan(["s-a", "s-b", "s-err"], 20), rotate_bytes=2000)
    writer.close()
    files = audit_files(directory)
    assert len(files) > 3
    assert all(index_path(f).exists() for f in files), "every file has a sidecar"
    index = AuditIndex.load(directory)
    assert set(index.sessions) == {"s-a", "s-b", "s-err"}
    summary = index.find("s-b")
    assert len(summary.spans) > 1, "the session spans several files"
    assert list(session_records(summary)) == expected_records(directory, "s-b")
    data = summary.to_json()
    assert data["principal"] == "user-s-b" and data["target"] == "app"
    assert data["statements"] == 20 and data["errors"] == 0
    assert data["end_reason"] == "client quit"
    assert index.find("s-err").total("errors") == 20


def test_the_index_is_a_cache_missing_or_stale_sidecars_are_scanned(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    writer = write_sessions(directory, session_plan(["s-a", "s-b"], 5), rotate_bytes=1500)
    writer.close()
    files = audit_files(directory)
    index_path(files[0]).unlink()  # missing
    index_path(files[1]).write_text("not json\n")  # unreadable
    # Stale: claims fewer bytes than the file has (the gateway saves every few seconds).
    stale = FileIndex.load(files[-1])
    assert stale is not None
    stale.sessions.clear()
    stale.size = 0
    write_sidecar(index_path(files[-1]), stale.dump())
    index = AuditIndex.load(directory)
    for session in ("s-a", "s-b"):
        assert list(session_records(index.find(session))) == expected_records(directory, session)


def test_a_sidecar_describing_more_than_its_file_is_rebuilt(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["s-a"], 3)).close()
    path = audit_files(directory)[0]
    index = FileIndex.load(path)
    assert index is not None
    index.size += 10_000  # e.g. the file was replaced by a shorter copy
    index.sessions["ghost"] = index.sessions["s-a"]
    write_sidecar(index_path(path), index.dump())
    assert set(AuditIndex.load(directory).sessions) == {"s-a"}


def test_the_writer_recovers_its_index_after_a_crash(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    writer = write_sessions(directory, session_plan(["s-a"], 3))
    # Crash: no close(), so no sidecar for the current file; a new writer takes over.
    del writer
    writer = write_sessions(directory, session_plan(["s-b"], 2))
    writer.close()
    index = FileIndex.load(audit_files(directory)[0])
    assert index is not None and set(index.sessions) == {"s-a", "s-b"}


def test_prefix_lookup_is_unique_or_explains(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["abc-1", "abc-2", "xyz"], 1)).close()
    index = AuditIndex.load(directory)
    assert index.find("xy").session == "xyz"
    with pytest.raises(SessionNotFound, match="matches 2 sessions"):
        index.find("abc")
    with pytest.raises(SessionNotFound, match="no session"):
        index.find("nope")


def test_reindex_rebuilds_identical_sidecars(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["s-a", "s-b"], 4), rotate_bytes=1200).close()
    before = {p.name: index_path(p).read_bytes() for p in audit_files(directory)}
    for p in audit_files(directory):
        index_path(p).unlink()
    list(rebuild(directory))
    after = {p.name: index_path(p).read_bytes() for p in audit_files(directory)}
    assert before == after


@settings(max_examples=40, deadline=None)
@given(
    order=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=60),
    rotate=st.integers(400, 5000),
)
def test_any_interleaving_reads_back_exactly_each_sessions_records(
    tmp_path_factory: pytest.TempPathFactory, order: list[str], rotate: int
) -> None:
    directory = tmp_path_factory.mktemp("audit")
    plan: list[tuple[str, str]] = []
    started: set[str] = set()
    for name in order:
        if name not in started:
            plan.append((name, "session_start"))
            started.add(name)
        plan += [(name, "statement"), (name, "outcome")]
    write_sessions(directory, plan, rotate_bytes=rotate).close()
    index = AuditIndex.load(directory)
    for name in started:
        assert list(session_records(index.find(name))) == expected_records(directory, name)


def test_sidecars_are_private_and_not_audit_files(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["s-a"], 1)).close()
    sidecars = list(directory.glob("*.idx"))
    assert sidecars and all(p.stat().st_mode & 0o777 == 0o600 for p in sidecars)
    header = json.loads(sidecars[0].read_bytes().splitlines()[0])
    assert header["file"] == audit_files(directory)[0].name


def test_readers_save_the_sidecars_they_rebuild_for_finished_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["s-a", "s-b"], 6), rotate_bytes=1500).close()
    files = audit_files(directory)
    for f in files:
        index_path(f).unlink()
    AuditIndex.load(directory)
    assert all(index_path(f).exists() for f in files[:-1])
    assert not index_path(files[-1]).exists(), "the newest file is the gateway's to index"
    # When a sidecar cannot be written (read-only access) the lookup still works, from a scan.
    for f in files[:-1]:
        index_path(f).unlink()

    def refuse(path: Path, data: bytes) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(index_module, "write_sidecar", refuse)
    index = AuditIndex.load(directory)
    assert not any(index_path(f).exists() for f in files)
    assert list(session_records(index.find("s-a"))) == expected_records(directory, "s-a")


# --- a lying index -------------------------------------------------------------------------


def edit_sidecar(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the session lines of ``path``'s sidecar through ``edit`` (what a forger does:
    the header still names the file and the size it covers)."""
    sidecar = index_path(path)
    lines = sidecar.read_bytes().splitlines()
    out = [lines[0]]
    for raw in lines[1:]:
        entry = json.loads(raw)
        edit(entry)
        out.append(json.dumps(entry, separators=(",", ":")).encode())
    sidecar.write_bytes(b"\n".join(out) + b"\n")


def claim_bob_ran_s_a(entry: dict[str, Any]) -> None:
    if entry["session"] == "s-a" and entry.get("start"):
        entry["start"]["principal"] = "bob"
        entry["statements"] = 0


def test_an_edited_sidecar_does_not_change_who_ran_a_session(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["s-a", "s-b"], 3)).close()
    (path,) = audit_files(directory)
    edit_sidecar(path, claim_bob_ran_s_a)
    index = AuditIndex.load(directory)
    assert index.distrusted == [path]
    summary = index.find("s-a").to_json()
    assert summary["principal"] == "user-s-a" and summary["statements"] == 3
    assert find_sessions(index, SessionFilter(who="bob")) == []


def test_a_sidecar_that_omits_a_session_does_not_hide_it(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["s-a", "s-b"], 2)).close()
    (path,) = audit_files(directory)
    sidecar = index_path(path)
    kept = [ln for ln in sidecar.read_bytes().splitlines() if b'"s-b"' not in ln]
    sidecar.write_bytes(b"\n".join(kept) + b"\n")
    assert set(AuditIndex.load(directory).sessions) == {"s-a", "s-b"}


def test_verify_reports_a_lying_index_and_reindex_repairs_it(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["s-a", "s-b"], 5), rotate_bytes=1500).close()
    files = audit_files(directory)
    assert verify(directory).ok
    edit_sidecar(files[0], claim_bob_ran_s_a)
    report = verify(directory)
    assert report.first_problem is None and not report.ok
    assert [p.file for p in report.index_problems] == [index_path(files[0])]
    assert "hoopy audit reindex" in report.index_problems[0].reason
    list(rebuild(directory))
    assert verify(directory).ok
    assert AuditIndex.load(directory).distrusted == []


def test_an_index_record_that_does_not_match_its_records_is_reported(tmp_path: Path) -> None:
    # The forger edits the sidecar, and the index record binding it, and rewrites the chain
    # after it (possible without a key): verify recomputes the index from the records.
    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["s-a"], 3)).close()
    (path,) = audit_files(directory)
    edit_sidecar(path, claim_bob_ran_s_a)
    data = index_path(path).read_bytes()
    lines = path.read_bytes().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if b'"kind":"index"' in ln)
    prev = json.loads(lines[at])["prev"]
    chain = AuditChain(prev, None)
    for i in range(at, len(lines)):
        record = json.loads(lines[i])
        for k in ("v", "prev", "hash", "sig"):
            record.pop(k, None)
        if i == at:
            record["sha256"] = hashlib.sha256(data).hexdigest()
        lines[i] = chain.line(record)
    path.write_bytes(b"".join(lines))
    assert FileIndex.load(path) is not None, "the forged sidecar is bound now"
    report = verify(directory)
    assert report.first_problem is not None
    assert report.first_problem.reason == "index record does not match the records before it"


def test_the_cli_answers_from_the_records_when_a_sidecar_lies(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hoopy.cli import app

    directory = tmp_path / "audit"
    write_sessions(directory, session_plan(["s-a", "s-b"], 2)).close()
    (path,) = audit_files(directory)
    edit_sidecar(path, claim_bob_ran_s_a)
    runner = CliRunner()
    listed = runner.invoke(app, ["sessions", "--audit-dir", str(directory), "--json"])
    assert listed.exit_code == 0, listed.output
    who = {s["session"]: s["principal"] for s in json.loads(listed.stdout)}
    assert who == {"s-a": "user-s-a", "s-b": "user-s-b"}
    assert "does not match the audit trail" in listed.stderr
    as_bob = runner.invoke(
        app, ["audit", "search", "--audit-dir", str(directory), "--who", "bob", "--json"]
    )
    assert as_bob.exit_code == 0 and json.loads(as_bob.stdout) == []
    as_a = runner.invoke(
        app, ["audit", "search", "--audit-dir", str(directory), "--who", "user-s-a", "--json"]
    )
    assert {h["principal"] for h in json.loads(as_a.stdout)} == {"user-s-a"}
    verified = runner.invoke(app, ["audit", "verify", str(directory), "--no-head"])
    assert verified.exit_code == 1 and "hoopy audit reindex" in verified.stderr
    assert runner.invoke(app, ["audit", "reindex", str(directory)]).exit_code == 0
    assert runner.invoke(app, ["audit", "verify", str(directory), "--no-head"]).exit_code == 0
