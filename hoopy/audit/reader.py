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
lines, inserting a line that is not a record, removing lines from the middle of any file, and
deleting, renaming or merging files are all caught at the first line they change.

Alongside the chain it checks:
- the session index: every ``.idx`` sidecar must be bound by an ``index`` record (see
  ``index.py``), and each ``index`` record must match the index recomputed from the records
  before it, so a sidecar that tells another story than the records is reported;
- with ``head`` (the gateway's head state, ``head.py``): that the trail still reaches the
  last record the gateway recorded as fsync'ed. Without it, lines removed from the *end*
  (truncating the newest file at a line boundary, deleting the newest files whole) leave a
  shorter chain that is perfectly valid; with it, only records newer than the last head
  update can go unseen, and only a head kept where the attacker cannot write (or a key the
  attacker does not have, against a forged rather than an old head) makes that hold.
Without the HMAC key, someone who rewrites the chain from some point on (recomputing every
hash after it, and the head) is not detected; with the key, they are.

Crash remnants and gaps
-----------------------
The writer issues each batch of lines with one ``write``, so a crash leaves at most a partial
last line in the newest file. ``verify`` reports that as ``partial_tail``, not as a problem.
On restart the writer ends it with a newline and starts a new file whose ``file_start``
declares it (``previous_remnant``: its length and SHA-256). So a line that is not a record is
accepted only as a file's *last* line: in the newest file (a crash not yet restarted from),
or declared by the next file's ``file_start``. Anywhere else it is the problem ("line is not
a JSON record").

A ``file_start`` may also declare a ``gap``: an event the gateway noticed and wrote into the
chain, which ``verify`` reports (``VerifyReport.gaps``) without failing: ``file_lost`` (the
file being written was deleted or moved away; the chain resumes after it, the gap names the
file and where the chain stood when it began, and ``verify`` checks both), ``trail_truncated``
(at start the trail did not reach the head state: records were removed while the gateway
was stopped) and ``head_unusable`` (the head state was missing, unreadable or not signed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoopy.audit.head import (
    HeadError,
    HeadMissing,
    HeadState,
    TrailPosition,
    describe_time,
    load_head,
)
from hoopy.audit.index import INDEX_RECORD, FileIndex, index_path, sidecar_digest

# Re-exported (X as X): callers read audit files through this module too.
from hoopy.audit.lines import AUDIT_FILE_RE as AUDIT_FILE_RE
from hoopy.audit.lines import audit_files as audit_files
from hoopy.audit.lines import (
    audit_trails,
    line_starting_at,
    remnant_declaration,
    worker_head,
    worker_of,
)
from hoopy.audit.lines import parse_line as parse_line
from hoopy.audit.records import GENESIS, check_record, encode_record

NOT_JSON = "line is not a JSON record"
MID_FILE = (
    "line is not a JSON record (only a file's last line can be a crash remnant, and this one "
    "has lines after it)"
)
UNDECLARED_REMNANT = (
    "line is not a JSON record, and the next file's file_start does not declare it as a "
    "crash remnant"
)
LYING_INDEX = (
    "the session index does not match the audit trail (edited, or copied from elsewhere); "
    "run `hoopy audit reindex`"
)
FILE_LOST = "file_lost"


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
class Gap:
    """An event the gateway wrote into the chain: what it lost or found (see above)."""

    file: Path  # the file whose file_start declares it
    kind: str
    detail: dict[str, Any]

    def __str__(self) -> str:
        d = self.detail
        if self.kind == FILE_LOST:
            return (
                f"{self.file.name}: the file before it, {d.get('file')}, was deleted or moved "
                f"while hoopy was writing it ({d.get('lost_bytes')} bytes of records lost)"
            )
        if self.kind == "trail_truncated":
            head = d.get("head") or {}
            return (
                f"{self.file.name}: when hoopy started, the trail ended before the last record "
                f"it had written ({head.get('file')} up to byte {head.get('end')}): records "
                "were removed while it was stopped"
            )
        return f"{self.file.name}: {self.kind}: {d.get('detail', '')}"


@dataclass(frozen=True)
class HeadCheck:
    """What the head state said, and whether the trail reaches it."""

    path: Path
    state: HeadState | None
    problem: str | None


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of ``verify``.

    ``records``: records that verified (up to the first problem, if any); ``files``: audit
    files in the directory; ``signed``: a key was given, so every counted record's HMAC was
    checked; ``last_hash``: the hash of the last verified record (``GENESIS`` if none), the
    value to anchor elsewhere; ``skipped``: crash remnants passed over; ``gaps``: events
    the gateway recorded; ``index_problems``: sidecars the chain does not bind; ``head``:
    the head state check, when a head file was given.
    """

    records: int
    files: int
    first_problem: Problem | None
    partial_tail: AuditLine | None
    signed: bool
    last_hash: str = GENESIS
    skipped: list[AuditLine] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    index_problems: list[Problem] = field(default_factory=list)
    head: HeadCheck | None = None

    @property
    def ok(self) -> bool:
        return (
            self.first_problem is None
            and not self.index_problems
            and (self.head is None or self.head.problem is None)
        )


def _file_lines(path: Path) -> Iterator[AuditLine]:
    with path.open("rb") as f:
        for line_no, chunk in enumerate(f, start=1):
            complete = chunk.endswith(b"\n")
            raw = chunk[:-1] if complete else chunk
            yield AuditLine(path, line_no, parse_line(raw), raw, complete)


def iter_lines(directory: Path) -> Iterator[AuditLine]:
    """Every line of every audit file, chain by chain (each in order), streamed."""
    for path in (p for trail in audit_trails(directory) for p in audit_files(trail)):
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


@dataclass
class _FileStart:
    """What a file's first record says about the file before it."""

    problem: Problem | None = None
    expected_prev: str = GENESIS
    gap: Gap | None = None
    remnant_accepted: bool = False


def _check_file_start(
    line: AuditLine,
    record: Mapping[str, Any],
    previous_name: str | None,
    names: set[str],
    last_hash: str,
    trailing: AuditLine | None,
) -> _FileStart:
    path = line.file

    def problem(reason: str, at: AuditLine = line) -> _FileStart:
        return _FileStart(Problem(at.file, at.line_no, reason))

    kind = record.get("kind")
    if kind != "file_start":
        return problem(f"the file's first record is a {kind!r} record, not file_start")
    named = record.get("previous_file")
    gap = record.get("gap")
    if gap is not None and not (isinstance(gap, dict) and isinstance(gap.get("kind"), str)):
        return problem("file_start declares a malformed gap")
    found = Gap(path, gap["kind"], dict(gap)) if gap is not None else None
    if gap is not None and gap["kind"] == FILE_LOST:
        lost = gap.get("file")
        if (
            not isinstance(lost, str)
            or lost != named
            or AUDIT_FILE_RE.fullmatch(lost) is None
            or lost in names
            or (previous_name is not None and lost <= previous_name)
            or lost >= path.name
        ):
            return problem("file_start declares a lost file that does not fit where it stands")
        if gap.get("from_hash") != last_hash:
            return problem(
                "file_start declares a lost file, but the trail before it does not end where "
                "that file began (more is missing than the gap says)"
            )
        prev = record.get("prev")
        if not isinstance(prev, str):
            return problem("prev does not match the hash of the record before it")
        # The remnant ending the file before the lost one was declared in the lost file.
        return _FileStart(None, prev, found, remnant_accepted=trailing is not None)
    if named != previous_name:
        return problem(
            f"file_start names previous file {_describe(named)!s} "
            f"but the file before is {_describe(previous_name)}"
        )
    declared = record.get("previous_remnant")
    if trailing is not None:
        if declared != remnant_declaration(trailing.raw):
            return problem(UNDECLARED_REMNANT, trailing)
        return _FileStart(None, last_hash, found, remnant_accepted=True)
    if declared is not None:
        return problem(
            "file_start declares a crash remnant, but the file before ends with a record"
        )
    return _FileStart(None, last_hash, found)


def _read_sidecar(path: Path) -> bytes | None:
    try:
        return index_path(path).read_bytes()
    except OSError:
        return None


def verify(directory: Path, key: bytes | None = None, head: Path | None = None) -> VerifyReport:
    """Check the whole chain in ``directory``, its sidecars, and with ``head`` that the trail
    reaches the gateway's head state; see the module docstring for what it proves."""
    head_state: HeadState | None = None
    head_error: str | None = None
    if head is not None:
        try:
            head_state = load_head(head, key)
        except HeadMissing as exc:
            head_error = (
                f"{exc}: whether the newest records were removed cannot be told (give the "
                "head state with --head, or check without it with --no-head)"
            )
        except HeadError as exc:
            head_error = str(exc)
    target: TrailPosition | None = head_state.position if head_state is not None else None
    files = audit_files(directory)
    names = {p.name for p in files}
    last_hash = GENESIS
    records = 0
    skipped: list[AuditLine] = []
    gaps: list[Gap] = []
    index_problems: list[Problem] = []
    partial_tail: AuditLine | None = None
    head_reached = False
    trailing: AuditLine | None = None  # the previous file's last line, when not a record

    def report(problem: Problem | None) -> VerifyReport:
        head_check = None
        if head is not None:
            reason = head_error
            lost = {g.detail.get("file") for g in gaps if g.kind == FILE_LOST}
            if reason is None and problem is None and not head_reached:
                assert head_state is not None and target is not None
                if target.file not in lost:  # a documented loss, not a silent one
                    missing = "" if target.file in names else "; that file is missing"
                    reason = (
                        "the trail ends before the last record the gateway wrote: the head "
                        f"state (written {describe_time(head_state.ts)}) names {target}{missing}"
                    )
            head_check = HeadCheck(head, head_state, reason)
        return VerifyReport(
            records=records,
            files=len(files),
            first_problem=problem,
            partial_tail=partial_tail,
            signed=key is not None,
            last_hash=last_hash,
            skipped=skipped,
            gaps=gaps,
            index_problems=index_problems,
            head=head_check,
        )

    for number, path in enumerate(files):
        newest = number == len(files) - 1
        previous_name = files[number - 1].name if number else None
        # Read before the file: the gateway appends the index record that binds a sidecar
        # before it saves the sidecar, so the file read afterwards holds that record.
        sidecar = _read_sidecar(path)
        rebuilt = FileIndex(path.name)  # the index as the records tell it
        bindings: dict[int, str] = {}  # offset of each index record -> its digest
        first_in_file = True
        remnant: AuditLine | None = None
        offset = 0
        for line in _file_lines(path):
            start = offset
            offset += len(line.raw) + (1 if line.complete else 0)
            if remnant is not None:
                return report(Problem(remnant.file, remnant.line_no, MID_FILE))
            if not line.complete:
                if newest:
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
                remnant = line
                continue
            expected_prev = last_hash
            gap: Gap | None = None
            reason: str | None = None
            if first_in_file:
                checked = _check_file_start(line, record, previous_name, names, last_hash, trailing)
                if checked.problem is not None:
                    return report(checked.problem)
                if checked.remnant_accepted and trailing is not None:
                    skipped.append(trailing)
                expected_prev, gap = checked.expected_prev, checked.gap
                first_in_file = False
            elif record.get("kind") == "file_start":
                reason = "file_start record in the middle of a file (were files merged?)"
            if reason is None:
                reason = _record_problem(line, record, expected_prev, key)
            if reason is None and record.get("kind") == INDEX_RECORD:
                if record.get("covers") != start or record.get("sha256") != sidecar_digest(
                    rebuilt.dump()
                ):
                    reason = "index record does not match the records before it"
                else:
                    bindings[start] = str(record["sha256"])
            if reason is not None:
                return report(Problem(path, line.line_no, reason))
            if gap is not None:
                gaps.append(gap)
            rebuilt.add(start, offset - start, record)
            rebuilt.size = offset
            last_hash = str(record["hash"])
            records += 1
            if target is not None and path.name == target.file and offset == target.end:
                if last_hash == target.hash:
                    head_reached = True
                elif head_error is None:
                    head_error = (
                        "the record where the head state says the trail ended has another "
                        "hash: the trail was rewritten after it"
                    )
        if first_in_file and trailing is not None:
            if not newest:
                return report(Problem(trailing.file, trailing.line_no, UNDECLARED_REMNANT))
            skipped.append(trailing)  # a new file not started yet: the crash of a rotation
        if sidecar is not None:
            claimed = FileIndex.from_bytes(path.name, sidecar)
            if claimed is None or bindings.get(claimed.size) != sidecar_digest(sidecar):
                index_problems.append(Problem(index_path(path), 1, LYING_INDEX))
        if remnant is not None and newest:
            skipped.append(remnant)  # the newest file's crash remnant, not yet declared
        trailing = remnant
    return report(None)


@dataclass(frozen=True)
class TrailReport:
    """``verify`` of one chain of a directory (``lines.audit_trails``): ``trail`` is the
    directory itself or a worker's ``worker-K`` subdirectory."""

    trail: Path
    worker: int | None
    report: VerifyReport


def verify_trails(
    directory: Path, key: bytes | None = None, head: Path | None = None
) -> tuple[list[TrailReport], list[str]]:
    """``verify`` every chain in ``directory``: its own, with ``head``, and each worker's,
    with ``lines.worker_head(head, K)``. Also returns what is missing: a worker's chain that
    a ``file_start`` or a worker head state says exists but the directory does not hold
    (deleting a worker's whole chain would otherwise go unnoticed); the directory's own
    chain is checked whenever its head state exists, files or not."""
    trails = audit_trails(directory)
    if directory not in trails and head is not None and head.exists():
        trails = [directory, *trails]  # its files are gone: its head says they were there
    reports = []
    declared: set[int] = set(worker_heads(head)) if head is not None else set()
    present: set[int] = set()
    for trail in trails:
        worker = worker_of(trail) if trail != directory else None
        trail_head = head if worker is None or head is None else worker_head(head, worker)
        reports.append(TrailReport(trail, worker, verify(trail, key, trail_head)))
        files = audit_files(trail) if trail.is_dir() else []
        if worker is not None and files:
            present.add(worker)
        for path in files:
            first = line_starting_at(path, 0, 64 * 1024)
            record = parse_line(first) if first is not None else None
            count = record.get("workers") if record is not None else None
            if isinstance(count, int) and not isinstance(count, bool) and 0 < count <= 4096:
                declared.update(range(1, count + 1))
    missing = [
        f"worker-{k}: no records, but the gateway ran that worker (its head state or a "
        "file_start says so): its chain was removed"
        for k in sorted(declared - present)
    ]
    return reports, missing


def worker_heads(head: Path) -> list[int]:
    """The workers whose head states lie beside ``head`` (``audit.worker-K.head``)."""
    pattern = re.compile(re.escape(head.stem) + r"\.worker-([1-9][0-9]*)" + re.escape(head.suffix))
    try:
        names = [p.name for p in head.parent.iterdir()]
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := pattern.fullmatch(n)))
