"""The session index: sidecars kept by the writer, tails scanned by readers, and lookups that
read only the byte ranges the index names."""

from __future__ import annotations

import json
from pathlib import Path

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
from hoopy.audit.reader import audit_files, iter_records
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
