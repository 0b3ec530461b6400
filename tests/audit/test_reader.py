"""The audit reader: streaming lines, and ``verify`` naming the first broken record.

The audit files are written here with ``records.AuditChain`` and a tiny helper that mimics the
writer's naming and ``file_start`` records, so these tests do not depend on ``writer.py``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoopy.audit.reader import (
    NOT_JSON,
    AuditLine,
    VerifyReport,
    audit_files,
    iter_lines,
    iter_records,
    parse_line,
    verify,
)
from hoopy.audit.records import GENESIS, AuditChain, chain_hash, encode_record

KEY = b"k" * 32


def file_name(sequence: int) -> str:
    return f"audit-20250101T{sequence:02d}0000-{sequence:06d}.jsonl"  # hourly rotation


def query(i: int) -> dict[str, Any]:
    return {
        "kind": "query",
        "session": f"s{i % 3}",
        "sql": f'SELECT {i} -- é ✓ "q"',
        "tables": ["t", {"db": "x", "n": i}],
        "rows": i * 7,
    }


def build_log(sizes: list[int], key: bytes | None = None) -> list[list[bytes]]:
    """Lines per file: each file is a ``file_start`` then ``sizes[i]`` query records."""
    chain = AuditChain(GENESIS, key)
    files: list[list[bytes]] = []
    n = 0
    for index, size in enumerate(sizes):
        previous = file_name(index - 1) if index else None
        lines = [chain.line({"kind": "file_start", "previous_file": previous, "pid": 1})]
        for _ in range(size):
            lines.append(chain.line(query(n)))
            n += 1
        files.append(lines)
    return files


def write_log(directory: Path, files: list[list[bytes]]) -> list[Path]:
    paths = []
    for index, lines in enumerate(files):
        path = directory / file_name(index)
        path.write_bytes(b"".join(lines))
        path.chmod(0o600)
        paths.append(path)
    return paths


def rechain(lines: list[bytes], start: int, last_hash: str, key: bytes | None) -> None:
    """Rewrite ``lines[start:]`` with freshly computed chain fields (what a forger does)."""
    chain = AuditChain(last_hash, key)
    for i in range(start, len(lines)):
        record = json.loads(lines[i])
        for k in ("v", "prev", "hash", "sig"):
            record.pop(k, None)
        lines[i] = chain.line(record)


def hash_of(line: bytes) -> str:
    return str(json.loads(line)["hash"])


def where(report: VerifyReport) -> tuple[str, int]:
    assert report.first_problem is not None, report
    return report.first_problem.file.name, report.first_problem.line_no


# --- files and lines ---------------------------------------------------------------------


def test_audit_files_sorted_ignoring_others(tmp_path: Path) -> None:
    paths = write_log(tmp_path, build_log([1, 1, 1]))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / (paths[0].name + ".gz")).write_bytes(b"x")
    (tmp_path / "audit-latest.jsonl").write_bytes(b"x")
    (tmp_path / "audit-20990101T000000-000009.jsonl").mkdir()
    assert audit_files(tmp_path) == paths
    assert audit_files(tmp_path / "audit-20990101T000000-000009.jsonl") == []


def test_iter_lines_and_records(tmp_path: Path) -> None:
    files = build_log([2, 1])
    files[0].insert(2, b"not json\n")
    paths = write_log(tmp_path, files)
    with paths[1].open("ab") as f:
        f.write(b'{"kind":"query","ses')
    lines = list(iter_lines(tmp_path))
    assert [(ln.file, ln.line_no, ln.complete) for ln in lines] == [
        (paths[0], 1, True),
        (paths[0], 2, True),
        (paths[0], 3, True),
        (paths[0], 4, True),
        (paths[1], 1, True),
        (paths[1], 2, True),
        (paths[1], 3, False),
    ]
    assert lines[2].record is None and lines[2].raw == b"not json"
    assert lines[6].record is None and lines[6].raw == b'{"kind":"query","ses'
    assert lines[1].record == json.loads(files[0][1])
    assert lines[1].raw == files[0][1][:-1]
    kinds = [r["kind"] for r in iter_records(tmp_path)]
    assert kinds == ["file_start", "query", "query", "file_start", "query"]


@pytest.mark.parametrize(
    "raw",
    [b"", b"[1,2]", b"42", b'"s"', b'{"a":NaN}', b'{"a":Infinity}', b"\xff{}", b"{" * 100_000],
)
def test_parse_line_rejects_non_objects(raw: bytes) -> None:
    assert parse_line(raw) is None


def test_iter_records_skips_complete_record_without_newline(tmp_path: Path) -> None:
    files = build_log([1])
    files[0][-1] = files[0][-1][:-1]  # the last record, cut just before its newline
    write_log(tmp_path, files)
    assert [r["kind"] for r in iter_records(tmp_path)] == ["file_start"]


# --- clean chains and keys ---------------------------------------------------------------


def test_clean_chain_over_three_files(tmp_path: Path) -> None:
    files = build_log([3, 4, 2])
    write_log(tmp_path, files)
    report = verify(tmp_path)
    assert report == VerifyReport(
        records=12,
        files=3,
        first_problem=None,
        partial_tail=None,
        signed=False,
        last_hash=hash_of(files[-1][-1]),
        skipped=[],
    )
    assert report.ok


def test_empty_directory(tmp_path: Path) -> None:
    report = verify(tmp_path)
    assert report.ok and report.records == 0 and report.files == 0
    assert report.last_hash == GENESIS


def test_signed_chain_right_key_and_wrong_key(tmp_path: Path) -> None:
    write_log(tmp_path, build_log([2, 2], key=KEY))
    good = verify(tmp_path, key=KEY)
    assert good.ok and good.signed and good.records == 6
    unkeyed = verify(tmp_path)  # signatures are not checked without the key
    assert unkeyed.ok and not unkeyed.signed
    bad = verify(tmp_path, key=b"wrong")
    assert where(bad) == (file_name(0), 1)
    assert bad.first_problem is not None and "signature" in bad.first_problem.reason


def test_unsigned_chain_fails_with_a_key(tmp_path: Path) -> None:
    write_log(tmp_path, build_log([1]))
    report = verify(tmp_path, key=KEY)
    assert where(report) == (file_name(0), 1)


@pytest.mark.parametrize("forger_key", [None, b"guess"])
def test_rewritten_from_the_middle_needs_the_key_to_detect(
    tmp_path: Path, forger_key: bytes | None
) -> None:
    files = build_log([3, 3, 3], key=KEY)
    lines = files[1]
    record = json.loads(lines[2])
    record["rows"] = 0  # the edit the forger wants to hide
    lines[2] = encode_record(record) + b"\n"
    rechain(lines, 2, hash_of(lines[1]), forger_key)
    rechain(files[2], 0, hash_of(lines[-1]), forger_key)
    write_log(tmp_path, files)
    assert verify(tmp_path).ok  # the chain alone cannot tell
    report = verify(tmp_path, key=KEY)
    assert where(report) == (file_name(1), 3)
    assert report.first_problem is not None and "signature" in report.first_problem.reason
    assert report.records == 4 + 2


# --- tampering -----------------------------------------------------------------------------


def edit_field(files: list[list[bytes]]) -> tuple[int, int]:
    record = json.loads(files[1][2])
    record["sql"] = "SELECT 'harmless'"
    files[1][2] = encode_record(record) + b"\n"
    return 1, 3


def edit_chain_field(files: list[list[bytes]]) -> tuple[int, int]:
    record = json.loads(files[1][2])
    record["hash"] = chain_hash(record["prev"], {**record, "sql": "x"})
    files[1][2] = encode_record(record) + b"\n"
    return 1, 3


def delete_line(files: list[list[bytes]]) -> tuple[int, int]:
    del files[1][2]
    return 1, 3  # the record after the gap no longer chains


def insert_copied_line(files: list[list[bytes]]) -> tuple[int, int]:
    files[1].insert(2, files[0][2])
    return 1, 3


def insert_forged_line(files: list[list[bytes]]) -> tuple[int, int]:
    # Correctly chained onto the record before it: the break is at the record after it.
    forged = AuditChain(hash_of(files[1][1])).line(query(99))
    files[1].insert(2, forged)
    return 1, 4


def swap_lines(files: list[list[bytes]]) -> tuple[int, int]:
    files[1][2], files[1][3] = files[1][3], files[1][2]
    return 1, 3


def swap_across_files(files: list[list[bytes]]) -> tuple[int, int]:
    files[0][-1], files[1][1] = files[1][1], files[0][-1]
    return 0, len(files[0])


def reencode_line(files: list[list[bytes]]) -> tuple[int, int]:
    files[1][2] = json.dumps(json.loads(files[1][2]), sort_keys=True).encode() + b"\n"
    return 1, 3


def remove_tail_files_middle(files: list[list[bytes]]) -> tuple[int, int]:
    del files[2][1:3]
    return 2, 2


def merge_last_into_previous(files: list[list[bytes]]) -> tuple[int, int]:
    # Joining two files keeps the chain intact, but a file_start is now mid-file.
    line_no = len(files[1]) + 1
    files[1].extend(files.pop())
    return 1, line_no


def first_record_not_file_start(files: list[list[bytes]]) -> tuple[int, int]:
    del files[0][0]
    rechain(files[0], 0, GENESIS, None)
    for later in files[1:]:
        rechain(later, 0, hash_of(files[files.index(later) - 1][-1]), None)
    return 0, 1


@pytest.mark.parametrize(
    "tamper",
    [
        edit_field,
        edit_chain_field,
        delete_line,
        insert_copied_line,
        insert_forged_line,
        swap_lines,
        swap_across_files,
        reencode_line,
        remove_tail_files_middle,
        merge_last_into_previous,
        first_record_not_file_start,
    ],
)
def test_tampering_is_found_at_the_first_changed_line(tmp_path: Path, tamper: Any) -> None:
    files = build_log([3, 4, 4])
    file_index, line_no = tamper(files)
    write_log(tmp_path, files)
    assert where(verify(tmp_path)) == (file_name(file_index), line_no)


def test_deleted_middle_file(tmp_path: Path) -> None:
    paths = write_log(tmp_path, build_log([2, 2, 2]))
    paths[1].unlink()
    report = verify(tmp_path)
    assert where(report) == (paths[2].name, 1)
    assert report.first_problem is not None
    assert report.first_problem.reason == (
        f"file_start names previous file {paths[1].name} but the file before is {paths[0].name}"
    )
    assert report.records == 3


@pytest.mark.parametrize("victim", [0, 1])
def test_renamed_file(tmp_path: Path, victim: int) -> None:
    paths = write_log(tmp_path, build_log([2, 2, 2]))
    renamed = paths[victim].with_name(paths[victim].name.replace("0000-", "3000-"))
    assert renamed.name < paths[victim + 1].name  # still in place: only the name tells
    paths[victim].rename(renamed)
    report = verify(tmp_path)
    assert where(report) == (paths[victim + 1].name, 1)
    assert report.first_problem is not None
    assert f"names previous file {paths[victim].name} " in report.first_problem.reason


def test_renamed_out_of_the_pattern_is_a_deleted_file(tmp_path: Path) -> None:
    paths = write_log(tmp_path, build_log([2, 2, 2]))
    paths[1].rename(paths[1].with_suffix(".bak"))
    assert where(verify(tmp_path)) == (paths[2].name, 1)


def test_deleted_first_file(tmp_path: Path) -> None:
    paths = write_log(tmp_path, build_log([2, 2]))
    paths[0].unlink()
    report = verify(tmp_path)
    assert where(report) == (paths[1].name, 1)
    assert report.first_problem is not None
    assert report.first_problem.reason.endswith("but the file before is none")


def test_truncating_the_tail_at_a_line_boundary_is_not_detectable(tmp_path: Path) -> None:
    files = build_log([2, 3])
    full_hash = hash_of(files[-1][-1])
    files[-1] = files[-1][:-2]
    write_log(tmp_path, files)
    report = verify(tmp_path)
    assert report.ok and report.records == 5  # the documented blind spot...
    assert report.last_hash != full_hash  # ...that an external anchor of last_hash closes


# --- crashes -------------------------------------------------------------------------------


def test_partial_tail_is_reported_not_a_problem(tmp_path: Path) -> None:
    paths = write_log(tmp_path, build_log([2, 2]))
    with paths[1].open("ab") as f:
        f.write(b'{"kind":"query","sql":"SEL')
    report = verify(tmp_path, None)
    assert report.ok and report.records == 6 and report.skipped == []
    assert report.partial_tail == AuditLine(paths[1], 4, None, b'{"kind":"query","sql":"SEL', False)


def test_partial_tail_that_is_a_whole_record_is_not_counted(tmp_path: Path) -> None:
    files = build_log([2])
    files[0][-1] = files[0][-1][:-1]
    write_log(tmp_path, files)
    report = verify(tmp_path)
    assert report.ok and report.records == 2
    assert report.partial_tail is not None and report.partial_tail.record is not None
    assert report.last_hash == hash_of(files[0][1])


def test_partial_line_in_an_older_file_is_a_problem(tmp_path: Path) -> None:
    files = build_log([2, 2])
    files[0].append(b'{"kind":"que')
    write_log(tmp_path, files)
    assert where(verify(tmp_path)) == (file_name(0), 4)


def crash_then_restart(key: bytes | None = None) -> tuple[list[list[bytes]], AuditChain]:
    """A log as the writer leaves it after a crash and a restart: the first file ends with
    the terminated remnant, the second file's file_start declares it."""
    chain = AuditChain(GENESIS, key)
    lines = [chain.line({"kind": "file_start", "previous_file": None}), chain.line(query(0))]
    remnant = chain.line(query(1))[:17]  # a crash's partial line, terminated on restart
    lines.append(remnant + b"\n")
    chain.last_hash = hash_of(lines[1])  # the writer recovers from the last complete record
    declared = {"bytes": len(remnant), "sha256": hashlib.sha256(remnant).hexdigest()}
    second = [
        chain.line(
            {"kind": "file_start", "previous_file": file_name(0), "previous_remnant": declared}
        ),
        chain.line(query(2)),
    ]
    return [lines, second], chain


@pytest.mark.parametrize("key", [None, KEY])
def test_a_declared_remnant_at_the_end_of_a_file_is_skipped(
    tmp_path: Path, key: bytes | None
) -> None:
    files, _ = crash_then_restart(key)
    paths = write_log(tmp_path, files)
    report = verify(tmp_path, key)
    assert report.ok and report.records == 4
    assert [(ln.file, ln.line_no) for ln in report.skipped] == [(paths[0], 3)]
    assert [r["rows"] for r in iter_records(tmp_path) if r["kind"] == "query"] == [0, 14]


def test_a_non_record_line_in_the_middle_of_a_file_is_a_problem(tmp_path: Path) -> None:
    # The chain resumes after it, as after a crash remnant: but only a file's last line can
    # be one (the writer starts a new file after a crash).
    files = build_log([3, 3])
    files[0].insert(2, b'{"kind":"query","sql":"SEL\n')
    write_log(tmp_path, files)
    report = verify(tmp_path)
    assert where(report) == (file_name(0), 3)
    assert report.first_problem is not None and NOT_JSON in report.first_problem.reason
    assert report.records == 2


def test_a_non_record_line_in_the_middle_of_the_newest_file_is_a_problem(
    tmp_path: Path,
) -> None:
    files = build_log([2, 3])
    files[1].insert(1, b"\x00\x00\x00\n")
    write_log(tmp_path, files)
    assert where(verify(tmp_path)) == (file_name(1), 2)


def test_an_undeclared_remnant_at_the_end_of_an_older_file_is_a_problem(tmp_path: Path) -> None:
    files = build_log([2, 2])
    files[0].append(b'{"kind":"qu\n')  # appended later: the next file_start does not know it
    write_log(tmp_path, files)
    report = verify(tmp_path)
    assert where(report) == (file_name(0), 4)
    assert report.first_problem is not None and "declare" in report.first_problem.reason


def test_a_declared_remnant_must_be_the_one_there(tmp_path: Path) -> None:
    files, _ = crash_then_restart()
    files[0][2] = b'{"kind":"other"\n'  # same place, other bytes
    write_log(tmp_path, files)
    assert where(verify(tmp_path)) == (file_name(0), 3)
    files, _ = crash_then_restart()
    files[0].pop()  # the remnant removed: the declaration no longer matches anything
    write_log(tmp_path, files)
    assert where(verify(tmp_path)) == (file_name(1), 1)


def test_a_remnant_at_the_very_end_is_skipped(tmp_path: Path) -> None:
    files, _ = crash_then_restart()
    files[1].append(b'{"kind":"qu\n')  # crashed again, not restarted yet
    write_log(tmp_path, files)
    report = verify(tmp_path)
    assert report.ok and report.records == 4
    assert [(ln.file.name, ln.line_no) for ln in report.skipped] == [
        (file_name(0), 3),
        (file_name(1), 3),
    ]


def test_two_non_record_lines_at_the_very_end_are_a_problem(tmp_path: Path) -> None:
    files, _ = crash_then_restart()
    files[1].append(b'{"kind":"qu\n')
    files[1].append(b'{"kind":"q')
    write_log(tmp_path, files)
    assert where(verify(tmp_path)) == (file_name(1), 3)


def test_lost_newline_merging_the_last_two_lines_is_the_tail_blind_spot(tmp_path: Path) -> None:
    files = build_log([2, 2])
    files[1][1] = files[1][1][:-1] + b"x"  # one non-JSON line at the end: like a remnant
    write_log(tmp_path, files)
    report = verify(tmp_path)
    assert report.ok and report.records == 4  # the last two records are no longer counted
    assert report.last_hash == hash_of(files[1][0])
    assert [ln.line_no for ln in report.skipped] == [2]


def test_garbage_line_where_the_chain_does_not_resume_is_the_problem(tmp_path: Path) -> None:
    files = build_log([3, 3])
    files[0][2] = b'{"kind":"query","sql":"SELECT 1"\n'  # a record replaced by a non-record
    write_log(tmp_path, files)
    report = verify(tmp_path)
    assert where(report) == (file_name(0), 3)
    assert report.first_problem is not None and NOT_JSON in report.first_problem.reason
    assert report.records == 2


def test_odd_but_parseable_lines_do_not_crash(tmp_path: Path) -> None:
    files = build_log([2], key=KEY)
    record = json.loads(files[0][1])
    record["sig"] = "é" * 64  # compare_digest refuses non-ASCII strings
    files[0][1] = encode_record(record) + b"\n"
    write_log(tmp_path, files)
    assert where(verify(tmp_path, KEY)) == (file_name(0), 2)
    files[0][1] = b'{"v":1,"s":"\\ud800"}\n'  # a lone surrogate: not encodable
    write_log(tmp_path, files)
    assert where(verify(tmp_path)) == (file_name(0), 2)


# --- random corruption ---------------------------------------------------------------------

SIZES = [2, 3, 2]


@st.composite
def corruptions(draw: st.DrawFn) -> tuple[int, int, int, int]:
    file_index = draw(st.integers(0, len(SIZES) - 1))
    line_index = draw(st.integers(0, SIZES[file_index]))
    position = draw(st.just(-1) | st.integers(0, 10_000))  # -1: the newline
    byte = draw(st.integers(0, 255))
    return file_index, line_index, position, byte


LOGS: Mapping[bool, list[list[bytes]]] = {
    signed: build_log(SIZES, key=KEY if signed else None) for signed in (False, True)
}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(corruption=corruptions(), signed=st.booleans())
def test_random_byte_corruption_is_detected_or_a_skipped_tail_remnant(
    tmp_path_factory: pytest.TempPathFactory,
    corruption: tuple[int, int, int, int],
    signed: bool,
) -> None:
    file_index, line_index, position, byte = corruption
    files = [list(lines) for lines in LOGS[signed]]
    original = files[file_index][line_index]
    position %= len(original)
    if original[position] == byte:
        byte ^= 0x01
    damaged = bytearray(original)
    damaged[position] = byte
    files[file_index][line_index] = bytes(damaged)
    directory = tmp_path_factory.mktemp("corrupt")
    write_log(directory, files)
    key = KEY if signed else None

    report = verify(directory, key)  # never raises

    if report.first_problem is not None:
        assert where(report) == (file_name(file_index), line_index + 1)
        return
    # A silent pass is only the tail blind spot: the damage is in the newest file and turns
    # its end into remnants or a partial tail (e.g. a lost newline merges the last two lines).
    # Every record counted is an original one from before the damaged line.
    assert file_index == len(SIZES) - 1, (corruption, bytes(damaged))
    flat = [line for lines in LOGS[signed] for line in lines]
    damaged_at = sum(len(lines) for lines in LOGS[signed][:file_index]) + line_index
    assert report.records == damaged_at
    assert report.last_hash == hash_of(flat[damaged_at - 1])
    tail = [report.partial_tail] if report.partial_tail else []
    assert [*report.skipped, *tail]
    for ln in [*report.skipped, *tail]:
        assert ln.file.name == file_name(file_index) and ln.line_no >= line_index + 1
    shutil.rmtree(directory)
