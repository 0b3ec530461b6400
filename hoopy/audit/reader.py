"""Reading and verifying an audit directory (what ``hoopy audit verify`` and exports use).

Plain blocking file I/O, no trio: it streams every file line by line in binary, so a 1 GB
file is never held in memory (only its longest line is).

What ``verify`` proves, and what it cannot
------------------------------------------
It walks every line of every audit file in name order, checking each record with
``records.check_record`` and chaining ``prev`` across files from ``GENESIS``, plus the file
layout: each file's first record is a ``file_start`` naming the file before it (``None`` for
the first), and no ``file_start`` appears anywhere else. It stops at the first broken line and
names it (file, 1-based line, reason). So editing any field, deleting, inserting or reordering
lines, removing lines from the middle of any file, and deleting, renaming or merging files
are all caught at the first line they change.

It cannot see lines removed from the *end*: truncating the newest file at a line boundary (or
deleting the newest files whole) leaves a shorter chain that is perfectly valid. Only an
external anchor catches that, e.g. shipping ``VerifyReport.last_hash`` (or the records
themselves) somewhere the gateway host cannot rewrite, and checking that the anchored hash is
still in the chain. Likewise, without the HMAC key, someone who rewrites the chain from some
point on (recomputing every hash after it) is not detected; with the key, they are.

Crash remnants
--------------
The writer issues each line with one ``write``, so a crash leaves at most a partial last line
in the newest file. ``verify`` reports that as ``partial_tail``, not as a problem. On restart
the writer terminates it with a newline and continues the chain from the last complete
record, so later the remnant is a complete line that is not a JSON record. Such a line is
skipped (listed in ``VerifyReport.skipped``) when the next record continues the chain from
the record before the remnant; otherwise it is the problem ("line is not a JSON record").
Non-JSON lines at the very end of the log are skipped too (nothing after them to check, the
same blind spot as tail truncation).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoopy.audit.records import GENESIS, check_record, encode_record

# ``audit-<UTC yyyymmddTHHMMSS>-<sequence>.jsonl``; the sequence is zero-padded to 6 digits
# and may grow past them.
AUDIT_FILE_RE = re.compile(r"audit-\d{8}T\d{6}-\d{6,}\.jsonl")

NOT_JSON = "line is not a JSON record"


def audit_files(directory: Path) -> list[Path]:
    """The audit files in ``directory`` in write order (by name); other entries are ignored."""
    return sorted(
        (p for p in directory.iterdir() if AUDIT_FILE_RE.fullmatch(p.name) and p.is_file()),
        key=lambda p: p.name,
    )


@dataclass(frozen=True)
class AuditLine:
    """One line of an audit file.

    ``raw`` is the line's bytes without its newline; ``complete`` says whether it had one
    (only the last line of a file can lack it). ``record`` is the parsed JSON object, or None
    when the line is not strict UTF-8 JSON (no NaN/Infinity) or not an object.
    """

    file: Path
    line_no: int
    record: dict[str, Any] | None
    raw: bytes
    complete: bool


@dataclass(frozen=True)
class Problem:
    """The first line that breaks the chain, and why."""

    file: Path
    line_no: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file.name}:{self.line_no}: {self.reason}"


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of ``verify``.

    ``records``: records that verified (up to the first problem, if any); ``files``: audit
    files in the directory; ``signed``: a key was given, so every counted record's HMAC was
    checked; ``last_hash``: the hash of the last verified record (``GENESIS`` if none), the
    value to anchor elsewhere to catch tail truncation; ``skipped``: crash remnants passed over.
    """

    records: int
    files: int
    first_problem: Problem | None
    partial_tail: AuditLine | None
    signed: bool
    last_hash: str = GENESIS
    skipped: list[AuditLine] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_problem is None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on one line (without its newline), or None."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # includes UnicodeDecodeError and JSONDecodeError
        return None
    return value if isinstance(value, dict) else None


def _file_lines(path: Path) -> Iterator[AuditLine]:
    with path.open("rb") as f:
        for line_no, chunk in enumerate(f, start=1):
            complete = chunk.endswith(b"\n")
            raw = chunk[:-1] if complete else chunk
            yield AuditLine(path, line_no, parse_line(raw), raw, complete)


def iter_lines(directory: Path) -> Iterator[AuditLine]:
    """Every line of every audit file, in order, streamed."""
    for path in audit_files(directory):
        yield from _file_lines(path)


def iter_records(directory: Path) -> Iterator[dict[str, Any]]:
    """The parsed records, in order, without checking the chain (``verify`` does that).

    Skips lines that are not JSON objects (crash remnants, or damage ``verify`` reports) and
    lines without a newline (a crash's partial last line in the newest file).
    """
    for line in iter_lines(directory):
        if line.complete and line.record is not None:
            yield line.record


def _describe(name: str | None) -> str:
    return "none" if name is None else name


def _layout_problem(
    record: Mapping[str, Any], first_in_file: bool, previous_name: str | None
) -> str | None:
    kind = record.get("kind")
    if not first_in_file:
        if kind == "file_start":
            return "file_start record in the middle of a file (were files merged?)"
        return None
    if kind != "file_start":
        return f"the file's first record is a {kind!r} record, not file_start"
    named = record.get("previous_file")
    if named != previous_name:
        return (
            f"file_start names previous file {_describe(named)!s} "
            f"but the file before is {_describe(previous_name)}"
        )
    return None


def _record_problem(
    line: AuditLine, record: dict[str, Any], expected_prev: str, key: bytes | None
) -> str | None:
    try:
        canonical = encode_record(record)
    except ValueError:  # e.g. a lone surrogate: the writer can never have produced it
        return "record cannot be encoded as canonical JSON"
    try:
        chain = check_record(record, expected_prev, key)
    except (TypeError, ValueError) as exc:  # e.g. a non-ASCII sig for compare_digest
        return f"record cannot be checked: {exc}"
    if chain is not None:
        return chain.reason
    if canonical != line.raw:
        return "line is not in canonical JSON form (it was re-encoded or edited)"
    return None


def verify(directory: Path, key: bytes | None = None) -> VerifyReport:
    """Check the whole chain in ``directory``; see the module docstring for what it proves."""
    files = audit_files(directory)
    last_hash = GENESIS
    records = 0
    pending: list[AuditLine] = []  # non-JSON lines since the last good record
    skipped: list[AuditLine] = []
    partial_tail: AuditLine | None = None

    def report(problem: Problem | None) -> VerifyReport:
        return VerifyReport(
            records=records,
            files=len(files),
            first_problem=problem,
            partial_tail=partial_tail,
            signed=key is not None,
            last_hash=last_hash,
            skipped=skipped,
        )

    for index, path in enumerate(files):
        previous_name = files[index - 1].name if index else None
        first_in_file = True
        for line in _file_lines(path):
            if not line.complete:
                if index == len(files) - 1:
                    partial_tail = line  # a crash's partial write; always the last line
                    break
                return report(
                    Problem(
                        path,
                        line.line_no,
                        "the file's last line has no newline, but only the newest file "
                        "may end in a crash's partial line",
                    )
                )
            record = line.record
            if record is None:
                pending.append(line)
                continue
            reason = _layout_problem(record, first_in_file, previous_name)
            first_in_file = False
            if reason is None:
                reason = _record_problem(line, record, last_hash, key)
            if reason is not None:
                if pending and record.get("prev") != last_hash:
                    # The chain does not resume after the non-JSON line(s): not a remnant.
                    remnant = pending[0]
                    return report(Problem(remnant.file, remnant.line_no, NOT_JSON))
                skipped.extend(pending)
                return report(Problem(path, line.line_no, reason))
            skipped.extend(pending)
            pending.clear()
            last_hash = str(record["hash"])
            records += 1
    skipped.extend(pending)
    return report(None)
