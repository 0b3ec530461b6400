"""The approval store: a private, fsync'ed journal replayed and compacted at every open."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.approvals.policy import ApprovalPolicy, Approver, Mode, Require
from hoopy.approvals.store import (
    APPROVED,
    CANCELLED,
    DENIED,
    EXPIRED,
    FINAL_STATES,
    KEEP_FINISHED_SECONDS,
    MAX_LINE_BYTES,
    PENDING,
    USED,
    ApprovalRequest,
    ApprovalStore,
    StoreError,
    new_id,
)

DAY = 86400.0
T0 = 1_795_000_000.0  # 2026-11-18
BOB = Approver("os:bob", "bob", ("dba",), "unix_socket").to_json()
CAROL = Approver("token:corp:carol", "carol", ("sre",), "admin_listener").to_json()


def make_request(
    id: str = "ap-23456789",
    mode: Mode = Mode.RETRY,
    *,
    asked_at: float = T0,
    fingerprint: str = "f" * 64,
    **fields: Any,
) -> ApprovalRequest:
    policy = ApprovalPolicy(mode=mode, timeout=300.0, valid_for=3600.0, approvers=("dba",))
    values: dict[str, Any] = {
        "id": id,
        "mode": mode,
        "policy": policy,
        "requester": {"name": "alice", "method": "token", "identity": "token:corp:alice"},
        "target": "prod",
        "database": "shop",
        "session": "s-1",
        "seq": 7,
        "command": "COM_QUERY",
        "sql": "DELETE FROM orders WHERE id = ?",
        "params": [{"type": "LONG", "value": 1}],
        "rule": "writes.delete",
        "message": "deletes need an approval",
        "fingerprint": fingerprint,
        "asked_at": asked_at,
        "expires_at": asked_at + policy.timeout,
    }
    values.update(fields)
    return ApprovalRequest(**values)


def request_op(request: ApprovalRequest) -> dict[str, Any]:
    return {"op": "request", "request": request.to_json()}


def approve(
    id: str, at: float, approver: dict[str, Any] = BOB, *, final: bool = True
) -> dict[str, Any]:
    return {"op": "approve", "id": id, "at": at, "approver": approver, "final": final}


def line(op: dict[str, Any]) -> bytes:
    return json.dumps(op).encode() + b"\n"


def opened(directory: Path, now: float = T0) -> ApprovalStore:
    store = ApprovalStore(directory)
    store.open(now)
    return store


def reopened(store: ApprovalStore, now: float = T0) -> ApprovalStore:
    store.close()
    return opened(store.directory, now)


def journal_ops(store: ApprovalStore) -> list[dict[str, Any]]:
    return [json.loads(x) for x in store.journal.read_bytes().splitlines()]


def snapshot(store: ApprovalStore) -> dict[str, dict[str, Any]]:
    return {i: r.to_json() for i, r in store.requests.items()}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ApprovalStore]:
    s = opened(tmp_path / "state" / "approvals")
    yield s
    s.close()


# --- files -----------------------------------------------------------------------------------


def test_open_creates_private_files(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "approvals"
    store = opened(directory)
    try:
        assert store.journal == directory / "journal.jsonl"
        assert mode_of(directory) == 0o700
        assert mode_of(store.journal) == 0o600
        assert mode_of(directory / "fingerprint.key") == 0o600
        assert store.journal.read_bytes() == b""
        assert sorted(p.name for p in directory.iterdir()) == ["fingerprint.key", "journal.jsonl"]
    finally:
        store.close()


def test_open_tightens_loose_permissions(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    journal = directory / "journal.jsonl"
    journal.write_bytes(line(request_op(make_request())))
    os.chmod(journal, 0o644)
    store = opened(directory)
    try:
        assert mode_of(directory) == 0o700
        assert mode_of(store.journal) == 0o600
        assert "ap-23456789" in store.requests
    finally:
        store.close()


def test_key_is_32_random_bytes_stable_across_reopen(tmp_path: Path) -> None:
    first = opened(tmp_path / "a")
    key = first.key
    assert len(key) == 32
    assert (tmp_path / "a" / "fingerprint.key").read_bytes() == key
    again = reopened(first)
    try:
        assert again.key == key
    finally:
        again.close()
    other = opened(tmp_path / "b")
    try:
        assert other.key != key
    finally:
        other.close()


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_key_of_the_wrong_size_refuses_to_open(tmp_path: Path, size: int) -> None:
    directory = tmp_path / "approvals"
    directory.mkdir()
    (directory / "fingerprint.key").write_bytes(b"k" * size)
    with pytest.raises(StoreError, match="32-byte key"):
        ApprovalStore(directory).open(T0)
    # It is not replaced: fingerprints already stored were made with it.
    assert (directory / "fingerprint.key").read_bytes() == b"k" * size


def test_a_state_directory_that_is_a_file_refuses_to_open(tmp_path: Path) -> None:
    (tmp_path / "approvals").write_bytes(b"")
    with pytest.raises(StoreError, match="cannot open the approval store"):
        ApprovalStore(tmp_path / "approvals").open(T0)


def test_a_journal_that_is_a_directory_refuses_to_open(tmp_path: Path) -> None:
    (tmp_path / "approvals" / "journal.jsonl").mkdir(parents=True)
    with pytest.raises(StoreError):
        ApprovalStore(tmp_path / "approvals").open(T0)


def test_a_journal_that_cannot_be_rewritten_refuses_to_open(tmp_path: Path) -> None:
    # Compaction writes journal.tmp; here it cannot. (Raised as the OSError itself: the
    # rewrite is outside open()'s StoreError wrapping; the CLI reports both.)
    (tmp_path / "approvals" / "journal.tmp").mkdir(parents=True)
    with pytest.raises((StoreError, OSError)):
        ApprovalStore(tmp_path / "approvals").open(T0)


# --- appending -------------------------------------------------------------------------------


def test_append_needs_an_open_store(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "approvals")
    with pytest.raises(StoreError, match="not open"):
        store.append(request_op(make_request()))
    store.open(T0)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="not open"):
        store.append(request_op(make_request()))
    assert store.requests == {}


def test_append_is_on_disk_before_it_returns(store: ApprovalStore) -> None:
    store.append(request_op(make_request()))
    store.append(approve("ap-23456789", T0 + 1))
    # Another reader sees both lines now, without a close.
    ops = journal_ops(store)
    assert [op["op"] for op in ops] == ["request", "approve"]
    assert store.journal.read_bytes().endswith(b"\n")


def test_journal_lines_are_canonical_json(store: ApprovalStore) -> None:
    store.append({"op": "cancel", "id": "ap-none", "reason": "r", "at": T0})
    assert (
        store.journal.read_bytes()
        == b'{"at":1795000000.0,"id":"ap-none","op":"cancel","reason":"r"}\n'
    )


def test_a_failed_write_is_a_store_error_and_not_applied(store: ApprovalStore) -> None:
    store.append(request_op(make_request()))
    # A descriptor on /dev/full: every write fails with ENOSPC, as on a full disk.
    assert store._fd is not None
    os.close(store._fd)
    store._fd = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(StoreError, match="cannot write the approval store"):
        store.append({"op": "deny", "id": "ap-23456789", "at": T0 + 1, "approver": BOB})
    assert store.requests["ap-23456789"].state == PENDING


@pytest.mark.parametrize("fails", ["fsync", "short write"])
def test_a_write_that_fails_after_reaching_the_file_is_taken_back(
    store: ApprovalStore, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """What a failed change wrote must not take effect later (at the next open, or read by
    another worker): the journal is cut back to where it was."""
    store.append(request_op(make_request()))
    size = store.journal.stat().st_size
    real_write, real_fsync = os.write, os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    def write(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])

    if fails == "fsync":
        monkeypatch.setattr(os, "fsync", fsync)
    else:
        monkeypatch.setattr(os, "write", write)
    with pytest.raises(StoreError, match="cannot write the approval store"):
        store.append({"op": "deny", "id": "ap-23456789", "at": T0 + 1, "approver": BOB})
    monkeypatch.undo()
    assert store.journal.stat().st_size == size
    assert store.requests["ap-23456789"].state == PENDING
    assert reopened(store).requests["ap-23456789"].state == PENDING


def test_a_refresh_during_an_append_neither_waits_nor_counts_the_line_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop looks for other workers' lines while an append of its own is in its
    fsync (in a thread): it must not wait for it, nor apply the line the append applies."""
    directory = tmp_path / "approvals"
    opened(directory).close()
    one, two = shared(directory), shared(directory)
    real_fsync = os.fsync
    looked: list[bool] = []

    def fsync(fd: int) -> None:
        looked.append(one.refresh(wait=False))  # the poller, mid-append
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    locked_append(one, request_op(make_request()))
    monkeypatch.undo()
    assert looked == [False]
    assert one.offset == one.journal.stat().st_size
    locked_append(two, approve("ap-23456789", T0 + 1))
    locked_append(two, {"op": "use", "id": "ap-23456789", "at": T0 + 2, "session": "s"})
    assert one.refresh() is True and one.requests["ap-23456789"].state == USED
    assert one.offset == two.offset == one.journal.stat().st_size
    one.close()
    two.close()


def test_statement_text_cannot_inject_journal_lines(store: ApprovalStore) -> None:
    evil = 'x"}\n{"op":"approve","id":"ap-23456789","at":1,"approver":{},"final":true}\n\u2028\r'
    store.append(request_op(make_request(sql=evil, message=evil, session=evil)))
    assert len(store.journal.read_bytes().splitlines()) == 1
    again = reopened(store)
    try:
        request = again.requests["ap-23456789"]
        assert request.state == PENDING
        assert request.sql == evil
        assert request.message == evil
    finally:
        again.close()


# --- decisions -------------------------------------------------------------------------------


def test_approvals_short_of_enough_keep_it_pending(store: ApprovalStore) -> None:
    store.append(request_op(make_request()))
    store.append(approve("ap-23456789", T0 + 5, final=False))
    request = store.requests["ap-23456789"]
    assert request.state == PENDING
    assert request.approvals == [{**BOB, "at": T0 + 5}]
    assert request.approvers() == [Approver("os:bob", "bob", ("dba",), "unix_socket")]
    assert request.decided_at is None
    assert request.expires_at == T0 + 300


def test_a_final_approval_of_a_retry_starts_its_validity(store: ApprovalStore) -> None:
    store.append(request_op(make_request()))
    store.append(approve("ap-23456789", T0 + 5, final=False))
    store.append(approve("ap-23456789", T0 + 9, CAROL))
    request = store.requests["ap-23456789"]
    assert request.state == APPROVED
    assert request.decided_at == T0 + 9
    assert request.decided_by == CAROL
    assert request.expires_at == T0 + 9 + 3600
    assert [a["identity"] for a in request.approvals] == ["os:bob", "token:corp:carol"]


def test_a_final_approval_of_a_hold_keeps_its_deadline(store: ApprovalStore) -> None:
    store.append(request_op(make_request(mode=Mode.HOLD)))
    store.append(approve("ap-23456789", T0 + 9))
    request = store.requests["ap-23456789"]
    assert request.state == APPROVED
    assert request.expires_at == T0 + 300


def test_deny(store: ApprovalStore) -> None:
    store.append(request_op(make_request()))
    store.append({"op": "deny", "id": "ap-23456789", "at": T0 + 3, "approver": BOB, "reason": "no"})
    request = store.requests["ap-23456789"]
    assert (request.state, request.decided_at, request.decided_by, request.reason) == (
        DENIED,
        T0 + 3,
        BOB,
        "no",
    )


@pytest.mark.parametrize(("op", "state"), [("expire", EXPIRED), ("cancel", CANCELLED)])
def test_expire_and_cancel(store: ApprovalStore, op: str, state: str) -> None:
    store.append(request_op(make_request()))
    store.append({"op": op, "id": "ap-23456789", "at": T0 + 300, "reason": "why"})
    request = store.requests["ap-23456789"]
    assert (request.state, request.decided_at, request.reason) == (state, T0 + 300, "why")


def test_an_unused_approval_expires_but_keeps_its_decision_time(store: ApprovalStore) -> None:
    store.append(request_op(make_request()))
    store.append(approve("ap-23456789", T0 + 9))
    store.append({"op": "expire", "id": "ap-23456789", "at": T0 + 4000, "reason": "not used"})
    request = store.requests["ap-23456789"]
    assert request.state == EXPIRED
    assert request.decided_at == T0 + 9
    assert request.decided_by == BOB


def test_use(store: ApprovalStore) -> None:
    store.append(request_op(make_request()))
    store.append(approve("ap-23456789", T0 + 9))
    store.append({"op": "use", "id": "ap-23456789", "at": T0 + 20, "session": "s-2"})
    request = store.requests["ap-23456789"]
    assert (request.state, request.used_at, request.used_by_session) == (USED, T0 + 20, "s-2")
    assert store.find("f" * 64, APPROVED) is None
    assert store.find("f" * 64, USED) is request


def test_operations_on_unknown_requests_are_ignored(store: ApprovalStore) -> None:
    store.append(request_op(make_request()))
    before = snapshot(store)
    for op in ("approve", "deny", "expire", "cancel", "use"):
        store.append({"op": op, "id": "ap-gone", "at": T0, "approver": BOB, "final": True})
    # What could not be read back is refused before it is written.
    size = store.journal.stat().st_size
    for bad in (
        {"op": "deny", "at": T0, "approver": BOB},  # no id at all
        {"op": "frobnicate", "id": "ap-23456789", "at": T0},
        {"op": "approve", "id": "ap-23456789", "approver": BOB},  # no time
    ):
        with pytest.raises(StoreError, match="not a valid approval operation"):
            store.append(bad)
    assert store.journal.stat().st_size == size
    assert snapshot(store) == before
    again = reopened(store)
    try:
        assert snapshot(again) == before
    finally:
        again.close()


def test_find_matches_fingerprint_and_state(store: ApprovalStore) -> None:
    store.append(request_op(make_request("ap-aaaaaaaa", fingerprint="1" * 64)))
    store.append(request_op(make_request("ap-bbbbbbbb", fingerprint="2" * 64)))
    store.append(approve("ap-bbbbbbbb", T0))
    assert store.find("1" * 64, PENDING) is store.requests["ap-aaaaaaaa"]
    assert store.find("1" * 64, APPROVED) is None
    assert store.find("2" * 64, APPROVED) is store.requests["ap-bbbbbbbb"]
    assert store.find("2" * 64, PENDING) is None
    assert store.find("3" * 64, PENDING) is None


# --- reopening -------------------------------------------------------------------------------


def test_reopen_replays_every_decision(store: ApprovalStore) -> None:
    store.append(request_op(make_request("ap-aaaaaaaa", fingerprint="1" * 64)))
    store.append(request_op(make_request("ap-bbbbbbbb", fingerprint="2" * 64)))
    store.append(request_op(make_request("ap-cccccccc", fingerprint="3" * 64)))
    store.append(request_op(make_request("ap-dddddddd", fingerprint="4" * 64)))
    store.append(approve("ap-aaaaaaaa", T0 + 1, final=False))
    store.append(approve("ap-bbbbbbbb", T0 + 2))
    store.append(
        {"op": "deny", "id": "ap-cccccccc", "at": T0 + 3, "approver": CAROL, "reason": "r"}
    )
    store.append(approve("ap-dddddddd", T0 + 4))
    store.append({"op": "use", "id": "ap-dddddddd", "at": T0 + 5, "session": "s-9"})
    before = snapshot(store)
    again = reopened(store, T0 + 10)
    try:
        assert snapshot(again) == before
        assert again.key == store.key
    finally:
        again.close()


def test_compaction_keeps_one_request_line_per_request(store: ApprovalStore) -> None:
    store.append(request_op(make_request("ap-aaaaaaaa")))
    store.append(approve("ap-aaaaaaaa", T0 + 1, final=False))
    store.append(approve("ap-aaaaaaaa", T0 + 2, CAROL))
    store.append(request_op(make_request("ap-bbbbbbbb")))
    store.append({"op": "deny", "id": "ap-bbbbbbbb", "at": T0 + 3, "approver": BOB})
    before = snapshot(store)
    again = reopened(store, T0 + 10)
    try:
        ops = journal_ops(again)
        assert [op["op"] for op in ops] == ["request", "request"]
        assert {op["request"]["id"]: op["request"] for op in ops} == before
        assert not (again.directory / "journal.tmp").exists()
        # And the compacted journal takes appends that survive the next reopen.
        again.append({"op": "use", "id": "ap-aaaaaaaa", "at": T0 + 11, "session": "s-3"})
        third = reopened(again, T0 + 12)
        try:
            assert third.requests["ap-aaaaaaaa"].state == USED
            assert third.requests["ap-bbbbbbbb"].state == DENIED
        finally:
            third.close()
    finally:
        again.close()


def test_compaction_drops_requests_finished_a_week_ago(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    store = opened(directory)
    old = T0 - KEEP_FINISHED_SECONDS - 10
    recent = T0 - KEEP_FINISHED_SECONDS + 10
    store.append(request_op(make_request("ap-aaaaaaaa", asked_at=old)))
    store.append({"op": "deny", "id": "ap-aaaaaaaa", "at": old, "approver": BOB})
    store.append(request_op(make_request("ap-bbbbbbbb", asked_at=old)))
    store.append({"op": "deny", "id": "ap-bbbbbbbb", "at": recent, "approver": BOB})
    store.append(request_op(make_request("ap-cccccccc", asked_at=old)))
    store.append({"op": "expire", "id": "ap-cccccccc", "at": old, "reason": "late"})
    store.append(request_op(make_request("ap-dddddddd", asked_at=old)))  # retry, still pending
    store.append(request_op(make_request("ap-eeeeeeee", asked_at=old - 30 * DAY)))
    store.append(approve("ap-eeeeeeee", old))
    store.append(request_op(make_request("ap-ffffffff", asked_at=old)))
    store.append(approve("ap-ffffffff", old))
    store.append({"op": "use", "id": "ap-ffffffff", "at": recent, "session": "s"})
    # Replayed lines about a request compacted away are ignored later on.
    store.append({"op": "use", "id": "ap-aaaaaaaa", "at": T0, "session": "s"})
    again = reopened(store, T0)
    try:
        # Unfinished requests are kept however old; finished ones for a week after the
        # decision (a used one: after its approval).
        assert sorted(again.requests) == ["ap-bbbbbbbb", "ap-dddddddd", "ap-eeeeeeee"]
        assert {op["request"]["id"] for op in journal_ops(again)} == set(again.requests)
    finally:
        again.close()


def test_pending_and_approved_holds_are_cancelled_at_reopen(store: ApprovalStore) -> None:
    store.append(request_op(make_request("ap-aaaaaaaa", Mode.HOLD)))
    store.append(request_op(make_request("ap-bbbbbbbb", Mode.HOLD)))
    store.append(approve("ap-bbbbbbbb", T0 + 5))
    store.append(request_op(make_request("ap-cccccccc", Mode.HOLD)))
    store.append({"op": "deny", "id": "ap-cccccccc", "at": T0 + 6, "approver": BOB})
    store.append(request_op(make_request("ap-dddddddd", Mode.RETRY)))
    store.close()
    again = ApprovalStore(store.directory)
    orphans = again.open(T0 + 100)
    try:
        assert [r.id for r in orphans] == ["ap-aaaaaaaa", "ap-bbbbbbbb"]
        assert all(r is again.requests[r.id] for r in orphans)
        pending, approved = orphans
        assert pending.state == CANCELLED
        assert pending.reason == "the gateway stopped while the statement was held"
        assert pending.decided_at == T0 + 100
        assert approved.state == CANCELLED
        assert approved.reason == "the gateway stopped before the approved statement ran"
        assert approved.decided_at == T0 + 5
        assert again.requests["ap-cccccccc"].state == DENIED
        assert again.requests["ap-dddddddd"].state == PENDING
        # The cancellations are in the compacted journal: the next open finds none.
        third = reopened(again, T0 + 200)
        try:
            assert third.requests["ap-aaaaaaaa"].state == CANCELLED
            assert third.requests["ap-aaaaaaaa"].decided_at == T0 + 100
        finally:
            third.close()
        fourth = ApprovalStore(store.directory)
        assert fourth.open(T0 + 300) == []
        fourth.close()
    finally:
        again.close()


def test_retry_approvals_survive_reopen_until_they_expire(store: ApprovalStore) -> None:
    store.append(request_op(make_request("ap-aaaaaaaa", fingerprint="1" * 64)))
    store.append(approve("ap-aaaaaaaa", T0 + 5))
    store.append(request_op(make_request("ap-bbbbbbbb", fingerprint="2" * 64)))
    store.close()
    again = ApprovalStore(store.directory)
    assert again.open(T0 + 60) == []
    try:
        approved = again.find("1" * 64, APPROVED)
        assert approved is not None
        assert approved.expires_at == T0 + 5 + 3600
        assert again.find("2" * 64, PENDING) is again.requests["ap-bbbbbbbb"]
        again.append({"op": "expire", "id": "ap-aaaaaaaa", "at": T0 + 3605, "reason": "unused"})
        third = reopened(again, T0 + 4000)
        try:
            assert third.find("1" * 64, APPROVED) is None
            assert third.requests["ap-aaaaaaaa"].state == EXPIRED
        finally:
            third.close()
    finally:
        again.close()


# --- a damaged journal -----------------------------------------------------------------------


def test_a_write_cut_by_a_crash_is_dropped(tmp_path: Path) -> None:
    # The last line lacks its newline: the crash came before the fsync returned, so the
    # gateway never acted on it. The store opens without it and the journal is whole again.
    directory = tmp_path / "approvals"
    store = opened(directory)
    store.append(request_op(make_request()))
    store.close()
    cut = line({"op": "deny", "id": "ap-23456789", "at": T0 + 1, "approver": BOB})[:-1]
    for n in (1, len(cut) // 2, len(cut)):
        with (directory / "journal.jsonl").open("ab") as f:
            f.write(cut[:n])
        again = opened(directory, T0 + 2)
        try:
            assert again.requests["ap-23456789"].state == PENDING
            assert again.journal.read_bytes().endswith(b"\n")
            assert [op["op"] for op in journal_ops(again)] == ["request"]
            again.append(approve("ap-23456789", T0 + 3, final=False))
        finally:
            again.close()
        assert opened(directory, T0 + 4).requests["ap-23456789"].approvals[0]["at"] == T0 + 3


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"{not json\n", "2: not JSON"),
        (b"\xff\xfe\n", "2: not JSON"),
        (b"\n", "2: not JSON"),
        (b"[1, 2]\n", "2: not an operation"),
        (b'"request"\n', "2: not an operation"),
        (b"null\n", "2: not an operation"),
    ],
)
def test_a_damaged_complete_line_refuses_to_open(tmp_path: Path, bad: bytes, message: str) -> None:
    # Unlike a cut last line, a complete line was fsync'ed and maybe acted on: the store
    # refuses to guess, so the gateway refuses to start.
    directory = tmp_path / "approvals"
    directory.mkdir()
    journal = directory / "journal.jsonl"
    good = line(request_op(make_request()))
    journal.write_bytes(good + bad + good)
    with pytest.raises(StoreError, match=re.escape(message)):
        ApprovalStore(directory).open(T0)
    assert journal.read_bytes() == good + bad + good  # left as found


def test_a_line_too_long_refuses_to_open(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    directory.mkdir()
    op = request_op(make_request(sql="x" * MAX_LINE_BYTES))
    (directory / "journal.jsonl").write_bytes(line(op))
    with pytest.raises(StoreError, match="1: line too long"):
        ApprovalStore(directory).open(T0)


@pytest.mark.parametrize(
    "bad",
    [
        {"op": "request"},
        {"op": "request", "request": {"id": "ap-x"}},
        {"op": "request", "request": {**make_request().to_json(), "mode": "later"}},
        {"op": "approve", "id": "ap-23456789", "approver": {}},  # no "at"
        {"op": "deny", "id": "ap-23456789", "at": "noon", "approver": {}},
    ],
)
def test_an_object_that_is_not_an_operation_refuses_to_open_with_store_error(
    tmp_path: Path, bad: dict[str, Any]
) -> None:
    directory = tmp_path / "approvals"
    directory.mkdir()
    (directory / "journal.jsonl").write_bytes(line(request_op(make_request())) + line(bad))
    with pytest.raises(StoreError):
        ApprovalStore(directory).open(T0)


# --- requests --------------------------------------------------------------------------------


def test_view_hides_only_the_fingerprint() -> None:
    request = make_request()
    view = request.view()
    assert "fingerprint" not in view
    assert "f" * 64 not in json.dumps(view)
    assert view == {k: v for k, v in request.to_json().items() if k != "fingerprint"}
    assert request.fingerprint == "f" * 64
    assert request.to_json()["fingerprint"] == "f" * 64


def test_requester_identity() -> None:
    assert make_request().requester_identity == "token:corp:alice"


def test_from_json_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError):
        ApprovalRequest.from_json({**make_request().to_json(), "extra": 1})


finite = st.floats(min_value=0, max_value=4e9, allow_nan=False)
texts = st.text(max_size=20)
requests = st.builds(
    make_request,
    id=st.from_regex(r"ap-[2-9a-z]{8}", fullmatch=True),
    mode=st.sampled_from(Mode),
    asked_at=finite,
    fingerprint=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    policy=st.builds(
        ApprovalPolicy,
        mode=st.sampled_from(Mode),
        timeout=finite,
        valid_for=finite,
        approvers=st.lists(texts, max_size=3).map(tuple),
        approvals=st.integers(1, 5),
        require=st.sampled_from(Require),
    ),
    database=st.none() | texts,
    sql=st.none() | texts,
    params=st.none()
    | st.lists(st.dictionaries(texts, st.none() | st.integers() | texts, max_size=3), max_size=3),
    estimate=st.none() | st.integers(0, 10**12),
    state=st.sampled_from(sorted({PENDING, APPROVED, *FINAL_STATES})),
    reason=st.none() | texts,
    worker=st.none() | st.integers(1, 256),
)


@given(requests)
def test_requests_round_trip_through_json_text(request: ApprovalRequest) -> None:
    data = json.loads(json.dumps(request.to_json()))
    assert ApprovalRequest.from_json(data) == request


@settings(max_examples=25, deadline=None)
@given(st.lists(requests, min_size=1, max_size=4, unique_by=lambda r: r.id))
def test_any_requests_survive_a_reopen(
    tmp_path_factory: pytest.TempPathFactory, batch: list[ApprovalRequest]
) -> None:
    directory = tmp_path_factory.mktemp("approvals")
    store = opened(directory, T0)
    for request in batch:
        store.append(request_op(request))
    orphans = {r.id for r in batch if r.mode is Mode.HOLD and r.state in (PENDING, APPROVED)}
    store.close()
    again = ApprovalStore(directory)
    returned = again.open(T0)
    try:
        assert {r.id for r in returned} == orphans
        for request in batch:
            if request.id in orphans:
                if request.state == PENDING:
                    request.decided_at = T0  # cancelled now
                request.state = CANCELLED
            finished = request.decided_at or request.used_at or request.asked_at
            if request.state in FINAL_STATES and finished <= T0 - KEEP_FINISHED_SECONDS:
                assert request.id not in again.requests
            else:
                kept = again.requests[request.id]
                expected = request.to_json()
                if request.id in orphans:
                    assert kept.reason and kept.reason.startswith("the gateway stopped")
                    expected["reason"] = kept.reason
                assert kept.to_json() == expected
    finally:
        again.close()


# --- shared by several workers ----------------------------------------------------------------


def shared(directory: Path) -> ApprovalStore:
    store = ApprovalStore(directory, shared=True)
    assert store.open(T0) == []  # the supervisor's open cancelled the last run's holds
    return store


def locked_append(store: ApprovalStore, op: dict[str, Any]) -> None:
    store.lock()
    try:
        store.append(op)
    finally:
        store.unlock()


def test_a_journal_from_before_workers_still_opens(tmp_path: Path) -> None:
    old = make_request().to_json()
    assert "worker" not in old  # a single gateway's lines are as older versions wrote them
    assert make_request(worker=2).to_json()["worker"] == 2
    directory = tmp_path / "approvals"
    directory.mkdir()
    (directory / "journal.jsonl").write_bytes(line({"op": "request", "request": old}))
    store = opened(directory)
    assert store.requests["ap-23456789"].worker is None
    store.close()


def test_workers_see_each_others_changes(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    opened(directory).close()  # the supervisor's open
    one, two = shared(directory), shared(directory)
    try:
        assert one.key == two.key and len(one.key) == 32
        locked_append(one, request_op(make_request(worker=1)))
        assert two.refresh() is True and two.requests["ap-23456789"].state == PENDING
        assert two.requests["ap-23456789"].worker == 1
        assert two.refresh() is False  # nothing new: one stat
        held = two.requests["ap-23456789"]
        locked_append(two, approve("ap-23456789", T0 + 1))
        assert one.refresh() is True and one.requests["ap-23456789"].state == APPROVED
        assert held.state == APPROVED  # the same object, changed in place
        assert one.offset == two.offset == one.journal.stat().st_size
        # A store opened later reads the same.
        three = shared(directory)
        assert snapshot(three) == snapshot(one) == snapshot(two)
        three.close()
    finally:
        one.close()
        two.close()


def test_a_line_still_being_written_is_read_once_whole(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    opened(directory).close()
    reader = shared(directory)
    data = line(request_op(make_request()))
    with (directory / "journal.jsonl").open("ab") as f:
        f.write(data[:40])
        f.flush()
        assert reader.refresh() is False and reader.requests == {}
        assert reader.offset == 0
        f.write(data[40:])
    assert reader.refresh() is True and list(reader.requests) == ["ap-23456789"]
    assert reader.offset == len(data)
    reader.close()


def race_to_use(
    stores: list[ApprovalStore], request_id: str
) -> tuple[list[int], list[BaseException]]:
    """Each store, in its own thread and all at once: use ``request_id`` if it is approved.
    Which stores wrote a use, and what failed."""
    start = threading.Barrier(len(stores))
    used: list[int] = []
    failed: list[BaseException] = []

    def race(k: int, store: ApprovalStore) -> None:
        try:
            start.wait()
            store.lock()
            try:
                if store.requests[request_id].state == APPROVED:
                    store.append({"op": "use", "id": request_id, "at": T0 + 2, "session": f"{k}"})
                    used.append(k)
            finally:
                store.unlock()
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=race, args=(k, s)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return used, failed


def test_an_approval_is_used_once_across_workers(tmp_path: Path) -> None:
    """Workers racing to use one approval: under the lock each decides on the latest
    journal, so exactly one use is written however the threads interleave."""
    directory = tmp_path / "approvals"
    opened(directory).close()
    for round_ in range(20):
        request_id = f"ap-{round_:08d}".replace("0", "a").replace("1", "b")
        stores = [shared(directory) for _ in range(4)]
        locked_append(stores[0], request_op(make_request(request_id)))
        locked_append(stores[0], approve(request_id, T0 + 1))
        for store in stores:  # every worker has seen it approved
            store.refresh()
            assert store.requests[request_id].state == APPROVED
        used, failed = race_to_use(stores, request_id)
        assert failed == [] and len(used) == 1, (failed, used)
        uses = [op for op in journal_ops(stores[0]) if op["op"] == "use" and op["id"] == request_id]
        assert len(uses) == 1
        for store in stores:
            store.refresh()
            assert store.requests[request_id].state == USED
            store.close()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["approve", "deny", "expire", "use"])),
        max_size=12,
    )
)
def test_any_interleaving_of_workers_reads_as_one_journal(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, str]]
) -> None:
    directory = tmp_path_factory.mktemp("approvals")
    opened(directory).close()
    stores = [shared(directory) for _ in range(3)]
    try:
        for n, (k, op) in enumerate(steps):
            store = stores[k]
            store.lock()
            try:
                request_id = f"ap-{'abcdefghjkmn'[n]}2345678"
                store.append(request_op(make_request(request_id, worker=k + 1)))
                extra: dict[str, Any] = {"id": request_id, "at": T0 + n}
                if op in ("approve", "deny"):
                    extra["approver"] = BOB
                store.append({"op": op, **extra, "final": True, "reason": "r"})
            finally:
                store.unlock()
        for store in stores:
            store.refresh()
        whole = ApprovalStore(directory)
        for _, op in whole._read():
            whole._apply(op)
        replayed = snapshot(whole)
        for store in stores:
            assert snapshot(store) == replayed
    finally:
        for store in stores:
            store.close()


def test_new_ids_are_short_and_unambiguous() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for i in ids:
        assert re.fullmatch(r"ap-[2-9a-hjkmnp-z]{8}", i), i


def test_a_line_that_does_not_apply_stops_a_worker_at_it_every_time(tmp_path: Path) -> None:
    """A damaged line in the shared journal (not written by hoopy: appends validate first)
    is not skipped: a skipped ``use`` would leave an approval usable twice."""
    directory = tmp_path / "approvals"
    opened(directory).close()
    reader = shared(directory)
    with (directory / "journal.jsonl").open("ab") as f:
        f.write(line(request_op(make_request())))
        f.write(line({"op": "use", "id": "ap-23456789", "at": "not a time"}))
        f.write(line({"op": "use", "id": "ap-23456789", "at": T0, "session": "s"}))
    for _ in range(2):
        with pytest.raises(StoreError, match="not a valid operation"):
            reader.refresh()
        assert reader.requests["ap-23456789"].state == PENDING
    reader.close()
