"""The audit writer: chained lines on disk, recovery after a crash, rotation, fail-closed."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoopy.audit import _canon
from hoopy.audit.index import IndexKeeper
from hoopy.audit.reader import verify
from hoopy.audit.records import GENESIS, check_record
from hoopy.audit.writer import AuditUnavailable, AuditWriter, timestamp

DAY = 86400.0
T0 = 1_795_000_000.0  # 2026-11-18


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def records(directory: Path) -> list[dict[str, object]]:
    out = []
    for path in sorted(directory.glob("audit-*.jsonl")):
        for line in path.read_bytes().split(b"\n"):
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a terminated crash remnant
    return out


def assert_chain(directory: Path, key: bytes | None = None) -> None:
    prev = GENESIS
    for record in records(directory):
        assert check_record(record, prev, key) is None, record
        prev = str(record["hash"])


def test_records_chain_across_reopen_and_files_are_private(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit", clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "session": "s1", "seq": 1, "sql": "SELECT 1"})
    writer.close()
    writer = AuditWriter(tmp_path / "audit", clock=Clock())
    writer.open()
    writer.append({"kind": "outcome", "session": "s1", "seq": 1, "rows": 1})
    writer.close()
    got = records(tmp_path / "audit")
    assert [r["kind"] for r in got] == ["file_start", "statement", "outcome"]
    assert got[0]["previous_file"] is None
    assert_chain(tmp_path / "audit")
    (path,) = (tmp_path / "audit").glob("audit-*.jsonl")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700


def test_a_crash_remnant_stays_the_last_line_and_the_next_file_declares_it(
    tmp_path: Path,
) -> None:
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 1})
    writer.close()
    (path,) = tmp_path.glob("audit-*.jsonl")
    remnant = b'{"kind":"statement","seq":2,"sq'
    with path.open("ab") as f:
        f.write(remnant)  # killed mid-write
    writer = AuditWriter(tmp_path, clock=Clock(T0 + 1))
    writer.open()
    writer.append({"kind": "statement", "seq": 2})
    writer.close()
    first, second = sorted(tmp_path.glob("audit-*.jsonl"))
    assert first == path and path.read_bytes().endswith(b"\n" + remnant + b"\n")
    start = json.loads(second.read_bytes().split(b"\n")[0])
    assert start["previous_file"] == path.name
    assert start["previous_remnant"] == {
        "bytes": len(remnant),
        "sha256": hashlib.sha256(remnant).hexdigest(),
    }
    assert [r.get("seq") for r in records(tmp_path)] == [None, 1, None, 2]
    assert_chain(tmp_path)
    report = verify(tmp_path)
    assert report.ok and [(ln.file, ln.raw) for ln in report.skipped] == [(path, remnant)]


def test_rotation_by_size_and_by_day_names_the_previous_file(tmp_path: Path) -> None:
    clock = Clock()
    writer = AuditWriter(tmp_path, rotate_bytes=600, clock=clock, key=b"k")
    writer.open()
    for i in range(6):
        writer.append({"kind": "statement", "seq": i, "sql": "x" * 100})
    clock.now += DAY
    writer.append({"kind": "statement", "seq": 99})
    writer.close()
    files = sorted(p.name for p in tmp_path.glob("audit-*.jsonl"))
    assert len(files) >= 3
    starts = [r for r in records(tmp_path) if r["kind"] == "file_start"]
    assert [s["previous_file"] for s in starts] == [None, *files[:-1]]
    assert files[-1].startswith("audit-20261119")  # the new day got its own file
    assert_chain(tmp_path, key=b"k")


def test_write_failure_fails_closed_until_reopened(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 1})
    writer.close()
    (path,) = tmp_path.glob("audit-*.jsonl")
    saved = path.read_bytes()
    path.unlink()
    os.symlink("/dev/full", path)  # every write now fails with ENOSPC, as root too
    writer = AuditWriter(tmp_path, clock=Clock())
    with pytest.raises(AuditUnavailable):
        writer.open()  # terminating or reading the tail already fails? then it says so
        writer.append({"kind": "statement", "seq": 2})
    with pytest.raises(AuditUnavailable, match="audit log"):
        writer.append({"kind": "statement", "seq": 3})
    path.unlink()
    path.write_bytes(saved)
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 4})
    writer.close()
    assert [r.get("seq") for r in records(tmp_path)] == [None, 1, 4]
    assert_chain(tmp_path)


def test_unserialisable_records_are_refused(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    with pytest.raises(AuditUnavailable, match="not serialisable"):
        writer.append({"kind": "statement", "value": float("nan")})
    writer.append({"kind": "statement", "seq": 1})  # the chain was not advanced
    writer.close()
    assert_chain(tmp_path)


def test_recovery_finds_the_last_record_behind_records_larger_than_a_read_block(
    tmp_path: Path,
) -> None:
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 1, "sql": "x" * 300_000})
    writer.close()
    (path,) = tmp_path.glob("audit-*.jsonl")
    with path.open("ab") as f:
        f.write(b"y" * 200_000)  # a long partial line after it
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 2})
    writer.close()
    assert [r.get("seq") for r in records(tmp_path)] == [None, 1, None, 2]
    assert_chain(tmp_path)
    assert verify(tmp_path).ok


@pytest.mark.parametrize("block", [1, 7, 100, 4096])
@pytest.mark.parametrize("tail", [b"", b"{", b"partial" * 50, b"\n", b'garbage\n{"x":'])
def test_recovery_at_any_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, tail: bytes
) -> None:
    import hoopy.audit.writer as writer_module

    monkeypatch.setattr(writer_module, "TAIL_BLOCK", block)
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    for i in range(3):
        writer.append({"kind": "statement", "seq": i, "sql": "é" * (i * 37)})
    writer.close()
    (path,) = tmp_path.glob("audit-*.jsonl")
    with path.open("ab") as f:
        f.write(tail)
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 9})
    writer.close()
    # Any tail that is not a record is a remnant: it stays, and a new file starts.
    restarted = [None] if tail else []
    assert [r.get("seq") for r in records(tmp_path) if "kind" in r] == [
        None,
        0,
        1,
        2,
        *restarted,
        9,
    ]
    assert_chain(tmp_path)
    if b"\n" not in tail[:-1]:  # one remnant line; "garbage" then a remnant is two lines
        assert verify(tmp_path).ok


def verified(directory: Path, key: bytes | None = None) -> int:
    from hoopy.audit.reader import verify

    report = verify(directory, key)
    assert report.first_problem is None, str(report.first_problem)
    return report.records


def test_a_record_cut_just_before_its_newline_is_kept_and_chained_on(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 1})
    writer.close()
    (path,) = tmp_path.glob("audit-*.jsonl")
    path.write_bytes(path.read_bytes()[:-1])  # the crash hit between the record and "\n"
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 2})
    writer.close()
    assert verified(tmp_path) == 3


def test_a_crash_before_a_new_files_first_record_is_repaired(tmp_path: Path) -> None:
    from hoopy.audit.writer import audit_file_name

    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 1})
    writer.close()
    (tmp_path / audit_file_name(T0 + 5, 1)).write_bytes(b'{"kind":"file_sta')  # cut short
    writer = AuditWriter(tmp_path, clock=Clock(T0 + 6))
    writer.open()
    writer.append({"kind": "statement", "seq": 2})
    writer.close()
    assert verified(tmp_path) == 4


def test_file_names_keep_write_order_when_the_clock_goes_back(tmp_path: Path) -> None:
    clock = Clock()
    writer = AuditWriter(tmp_path, rotate_bytes=300, clock=clock)
    writer.open()
    for i in range(4):
        writer.append({"kind": "statement", "seq": i, "sql": "x" * 200})
        clock.now -= 3600  # NTP steps the clock back an hour, repeatedly
    writer.close()
    names = [p.name for p in sorted(tmp_path.glob("audit-*.jsonl"))]
    assert len(names) >= 3
    assert verified(tmp_path) == 4 + len(names)


def test_held_back_records_keep_chain_order_and_reach_the_file(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "seq": 1})
    writer.append({"kind": "outcome", "seq": 1}, write_now=False)
    (path,) = tmp_path.glob("audit-*.jsonl")
    assert b'"outcome"' not in path.read_bytes()  # held back
    writer.append({"kind": "statement", "seq": 2})  # carries it along, in order
    writer.append({"kind": "outcome", "seq": 2}, write_now=False)
    writer.close()  # flushes what is left
    assert [(r["kind"], r.get("seq")) for r in records(tmp_path)][1:] == [
        ("statement", 1),
        ("outcome", 1),
        ("statement", 2),
        ("outcome", 2),
    ]
    assert_chain(tmp_path)


def _outcome(writer: AuditWriter, session: str, seq: int, rows: int = 1) -> None:
    """An outcome as the gateway holds it back: unchained until the next record."""
    writer.defer(_canon.outcome_line, (json.dumps(session), seq, 1500, rows, 0, 0, 0, None), session)


def _outcome_record(session: str, seq: int, rows: int = 1) -> dict[str, object]:
    """What ``_outcome`` defers, as the dict ``events.outcome`` builds."""
    return {
        "kind": "outcome",
        "session": session,
        "seq": seq,
        "duration_ms": 1.5,
        "rows": rows,
        "affected_rows": 0,
        "last_insert_id": 0,
        "warnings": 0,
        "results": 1,
    }


def _audit_files(directory: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(directory.iterdir()) if p.is_file()]


@given(
    steps=st.lists(
        st.sampled_from(
            ["statement", "encoded", "outcome", "outcome", "flush", "index", "tick", "later"]
        ),
        max_size=25,
    ),
    rotate=st.sampled_from([400, 1200, 1 << 30]),
)
@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_deferred_outcomes_write_what_held_back_appends_write(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str], rotate: int
) -> None:
    """A writer that defers its outcomes (``defer``) and one that appends them held back
    (``append(write_now=False)``, what the gateway did before) leave the same files, byte for
    byte: the same records in the same files (rotation by size and by day included, at the
    outcome's own time), the same chain, the same index records and sidecars."""
    writers = []
    for name in ("appended", "deferred"):
        directory = tmp_path_factory.mktemp(name)
        clock = Clock()
        writer = AuditWriter(directory, rotate_bytes=rotate, clock=clock, index=IndexKeeper())
        writer.open()
        writers.append((directory, clock, writer))
    for seq, step in enumerate(steps):
        for directory, clock, writer in writers:
            clock.now += 0.25
            deferring = directory.name.startswith("deferred")
            if step == "statement":
                writer.append({"kind": "statement", "session": "s", "seq": seq})
            elif step == "encoded":
                fields = ('"COM_QUERY"', '"p"', '"s"', seq, "SELECT 1", '"allow"', "null")
                writer.append_encoded(
                    _canon.statement_line, (*fields, None, -1, 0, None), "s", statement=True
                )
            elif step == "outcome" and deferring:
                _outcome(writer, "s", seq)
            elif step == "outcome":
                writer.append(_outcome_record("s", seq), write_now=False)
            elif step == "later":  # a record the general path holds back (an error outcome)
                writer.append({"kind": "outcome", "session": "s", "seq": seq}, write_now=False)
            elif step == "flush":
                writer.flush()
            elif step == "index":
                writer.bind_index()
            else:
                clock.now += 86400  # a new day: the next record, whichever, rotates
    for directory, _, writer in writers:
        writer.close()
        assert_chain(directory)
    (appended, _, _), (deferred, _, _) = writers
    assert _audit_files(deferred) == _audit_files(appended)
    kinds = [r["kind"] for r in records(deferred)]
    assert kinds.count("outcome") == steps.count("outcome") + steps.count("later")


def test_a_deferred_outcome_is_written_with_the_next_statement_and_lost_with_a_failure(
    tmp_path: Path,
) -> None:
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()
    writer.append({"kind": "statement", "session": "s", "seq": 1})
    _outcome(writer, "s", 1)
    (path,) = tmp_path.glob("audit-*.jsonl")
    assert b'"outcome"' not in path.read_bytes()  # held back, as append(write_now=False)
    writer.append({"kind": "statement", "session": "s", "seq": 2})
    assert [r["kind"] for r in records(tmp_path)][-2:] == ["outcome", "statement"]
    _outcome(writer, "s", 2)
    os.close(writer._fd)  # the disk goes away under the writer
    writer._fd = os.open(os.devnull, os.O_RDONLY)
    with pytest.raises(AuditUnavailable):
        writer.append({"kind": "statement", "session": "s", "seq": 3})
    with pytest.raises(AuditUnavailable):  # broken until reopened, as for append
        _outcome(writer, "s", 3)
    writer.close(checkpoint=False)
    writer = AuditWriter(tmp_path, clock=Clock())
    writer.open()  # recovers from the file: the held-back outcome went with the failure
    writer.append({"kind": "statement", "session": "s", "seq": 4})
    writer.close()
    assert [(r["kind"], r.get("seq")) for r in records(tmp_path) if r["kind"] != "file_start"][
        -3:
    ] == [("outcome", 1), ("statement", 2), ("statement", 4)]
    assert_chain(tmp_path)


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_timestamps_are_rfc3339_utc_to_the_microsecond(now: float) -> None:
    from datetime import UTC, datetime


    text = timestamp(now)
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    assert abs(parsed - now) < 2e-6
    # Exactly the text of the format spec it replaced (microseconds cut, zero-padded).
    second = int(now)
    micros = int((now - second) * 1_000_000)
    assert text == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{micros:06d}Z"


# --- the file being written is deleted or moved -------------------------------------------


def lost_file_log(tmp_path: Path, how: str) -> tuple[Path, Path, AuditWriter]:
    """Two files of records; the newest, being written, is then deleted or moved away."""
    directory = tmp_path / "audit"
    writer = AuditWriter(directory, rotate_bytes=1200, clock=Clock(), key=b"k")
    writer.open()
    seq = 0
    while writer.generation < 3:  # records until a rotation has just happened, twice
        writer.append({"kind": "statement", "seq": seq, "sql": "x" * 100})
        seq += 1
    live = writer.path
    assert live is not None and len(list(directory.glob("audit-*.jsonl"))) > 1
    assert writer.file_is_current()
    if how == "deleted":
        live.unlink()
    else:
        live.rename(tmp_path / live.name)  # out of the directory
    writer.append({"kind": "statement", "seq": 90})  # goes to the lost file
    assert not writer.file_is_current()
    return directory, live, writer


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_a_lost_live_file_is_replaced_and_the_gap_recorded(tmp_path: Path, how: str) -> None:
    directory, lost, writer = lost_file_log(tmp_path, how)
    writer.replace_lost_file()
    assert writer.path is not None and writer.path != lost and writer.file_is_current()
    writer.append({"kind": "statement", "seq": 91})
    writer.close()
    newest = sorted(directory.glob("audit-*.jsonl"))[-1]
    assert newest == writer.path and newest.name > lost.name
    start, after = (json.loads(x) for x in newest.read_bytes().splitlines()[:2])
    assert start["previous_file"] == lost.name
    assert start["gap"]["kind"] == "file_lost" and start["gap"]["file"] == lost.name
    assert start["gap"]["lost_bytes"] > 0
    assert after["seq"] == 91
    report = verify(directory, b"k")
    assert report.ok, report.first_problem
    (gap,) = report.gaps
    assert gap.kind == "file_lost" and f"{lost.name}, was deleted or moved" in str(gap)
    assert [r.get("seq") for r in records(directory)][-1] == 91


def test_the_gap_says_exactly_what_was_lost(tmp_path: Path) -> None:
    directory, _, writer = lost_file_log(tmp_path, "deleted")
    writer.replace_lost_file()
    writer.close()
    files = sorted(directory.glob("audit-*.jsonl"))
    files[-2].unlink()  # one more file deleted, before the lost one: not what the gap says
    report = verify(directory, b"k")
    assert report.first_problem is not None
    assert report.first_problem.file == files[-1]
    assert "more is missing than the gap says" in report.first_problem.reason


def test_a_forged_gap_needs_the_key(tmp_path: Path) -> None:
    directory, _, writer = lost_file_log(tmp_path, "deleted")
    writer.replace_lost_file()
    writer.close()
    newest = sorted(directory.glob("audit-*.jsonl"))[-1]
    lines = newest.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["gap"]["lost_bytes"] = 1
    record.pop("hash")
    record.pop("sig")
    from hoopy.audit.records import chain_hash, encode_record, signature

    record["hash"] = chain_hash(record["prev"], record)
    record["sig"] = signature(b"not the key", record["hash"])
    lines[0] = encode_record(record) + b"\n"
    newest.write_bytes(b"".join(lines))
    report = verify(directory, b"k")
    assert report.first_problem is not None and report.first_problem.line_no == 1


def test_new_files_are_created_new(tmp_path: Path) -> None:
    from hoopy.audit.writer import audit_file_name

    directory = tmp_path / "audit"
    writer = AuditWriter(directory, rotate_bytes=1, clock=Clock())
    writer.open()
    planted = directory / audit_file_name(T0, 1)
    planted.write_bytes(b"")  # the name the next rotation will take, world-readable
    planted.chmod(0o644)
    with pytest.raises(AuditUnavailable):
        writer.append({"kind": "statement", "seq": 1})
    assert planted.read_bytes() == b""
