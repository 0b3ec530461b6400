"""The session index: which sessions each audit file holds, and where, without reading it all.

``hoopy sessions`` and ``hoopy replay`` must answer in well under a second over a 1 GB audit
directory, which rules out parsing every line (about 3 us a line, 5M lines). So each audit
file gets a sidecar ``<audit file>.idx`` (JSON lines, 0600): a header line naming the file and
how many of its bytes the sidecar covers, then one line per session with records in the file:
the byte offsets of its first and last record there, its counts (records, statements,
errors, denied statements), and its session_start / session_end summary when those records
are in the file.

The index is a cache, never evidence: ``hoopy audit verify`` checks the records themselves,
and replay reads the records the index points at (and checks they belong to the session).
A sidecar that is missing, unreadable or behind its file costs time, not correctness: the
reader scans what the sidecar does not cover. The gateway keeps the sidecars current (see
``IndexKeeper``); ``hoopy audit reindex`` rebuilds them all.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hoopy.audit.reader import audit_files, parse_line

INDEX_SUFFIX = ".idx"
INDEX_VERSION = 1
# Reading a record range, this much is read at a time.
READ_BLOCK = 1024 * 1024


def index_path(audit_file: Path) -> Path:
    return audit_file.with_name(audit_file.name + INDEX_SUFFIX)


def session_needle(session: str) -> bytes:
    """The bytes every record of ``session`` contains (canonical JSON: sorted keys, no
    spaces; session ids are ``[0-9a-f-]``, so never escaped)."""
    return b'"session":' + json.dumps(session).encode()


@dataclass(slots=True)
class SessionSpan:
    """One session's records in one audit file."""

    session: str
    first: int  # byte offset of the first record's line
    last: int  # byte offset of the last record's line
    records: int = 0
    statements: int = 0
    errors: int = 0
    denied: int = 0
    first_ts: str = ""
    last_ts: str = ""
    start: dict[str, Any] | None = None  # from session_start, when it is in this file
    end: dict[str, Any] | None = None  # from session_end, when it is in this file

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionSpan:
        known = {f.name for f in fields(cls)}
        span = cls(**{k: v for k, v in data.items() if k in known})
        if not isinstance(span.session, str) or not isinstance(span.first, int):
            raise ValueError("malformed session entry")
        return span


def start_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    principal = record.get("principal") or {}
    client = record.get("client") or {}
    return {
        "ts": record.get("ts"),
        "principal": principal.get("name"),
        "method": principal.get("method"),
        "roles": principal.get("roles", []),
        "issuer": principal.get("issuer"),
        "client": client.get("address"),
        "tls": client.get("tls"),
        "target": record.get("target"),
        "database": record.get("database"),
        "program": (record.get("connect_attrs") or {}).get("program_name"),
    }


def end_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ts": record.get("ts"),
        "reason": record.get("reason"),
        "statements": record.get("statements"),
        "errors": record.get("errors"),
        "duration_s": record.get("duration_s"),
    }


@dataclass
class FileIndex:
    """The sessions of one audit file, covering its first ``size`` bytes."""

    name: str
    size: int = 0
    sessions: dict[str, SessionSpan] = field(default_factory=dict)

    def add(self, offset: int, length: int, record: Mapping[str, Any]) -> None:
        """Account for the record whose line starts at ``offset`` and is ``length`` bytes."""
        self.size = max(self.size, offset + length)
        session = record.get("session")
        if not isinstance(session, str):
            return  # file_start
        span = self.sessions.get(session)
        ts = record.get("ts")
        ts = ts if isinstance(ts, str) else ""
        if span is None:
            span = self.sessions[session] = SessionSpan(session, offset, offset, first_ts=ts)
        span.last = offset
        span.last_ts = ts
        span.records += 1
        kind = record.get("kind")
        if kind == "statement":
            span.statements += 1
            if record.get("verdict") == "deny":
                span.denied += 1
        elif kind == "outcome":
            if record.get("error") is not None:
                span.errors += 1
        elif kind == "session_start":
            span.start = start_summary(record)
        elif kind == "session_end":
            span.end = end_summary(record)

    def scan(self, path: Path) -> None:
        """Extend the index over the file's bytes past ``size`` (skipping non-records)."""
        with path.open("rb") as f:
            f.seek(self.size)
            offset = self.size
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a partial last line (being written, or a crash remnant)
                record = parse_line(line[:-1])
                if record is not None:
                    self.add(offset, len(line), record)
                offset += len(line)
                self.size = offset

    def dump(self) -> bytes:
        header = {"index": INDEX_VERSION, "file": self.name, "size": self.size}
        lines = [header, *(span.to_json() for span in self.sessions.values())]
        return b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in lines)

    def save(self, path: Path) -> None:
        """Write the sidecar atomically (a reader sees the old one or the new one)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.dump())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    @classmethod
    def load(cls, audit_file: Path) -> FileIndex | None:
        """The saved sidecar of ``audit_file``, or None when missing or unusable."""
        try:
            data = index_path(audit_file).read_bytes()
        except OSError:
            return None
        try:
            lines = data.splitlines()
            header = json.loads(lines[0])
            if header.get("index") != INDEX_VERSION or header.get("file") != audit_file.name:
                return None
            index = cls(audit_file.name, int(header["size"]))
            for raw in lines[1:]:
                span = SessionSpan.from_json(json.loads(raw))
                index.sessions[span.session] = span
        except (ValueError, TypeError, KeyError, IndexError):
            return None
        return index


def file_index(audit_file: Path, *, save: bool = False) -> FileIndex:
    """The index of one audit file: its sidecar, extended over what the sidecar misses.

    With ``save``, a sidecar that had to be built or extended is saved when the directory is
    writable (readers pass it for files the gateway has left, so the next lookup is fast;
    the file being written is the gateway's to index)."""
    index = FileIndex.load(audit_file)
    try:
        size = audit_file.stat().st_size
    except OSError:
        size = 0
    if index is None or index.size > size:
        index = FileIndex(audit_file.name)  # missing, or the file was replaced: rebuild
    if index.size < size:
        index.scan(audit_file)
        if save:
            with contextlib.suppress(OSError):  # read-only access: just slower next time
                index.save(index_path(audit_file))
    return index


@dataclass
class SessionSummary:
    """One session across all the files it spans."""

    session: str
    spans: list[tuple[Path, SessionSpan]] = field(default_factory=list)

    @property
    def start(self) -> dict[str, Any]:
        for _, span in self.spans:
            if span.start is not None:
                return span.start
        return {}

    @property
    def end(self) -> dict[str, Any] | None:
        for _, span in reversed(self.spans):
            if span.end is not None:
                return span.end
        return None

    @property
    def started(self) -> str:
        return str(self.start.get("ts") or self.spans[0][1].first_ts)

    @property
    def last_activity(self) -> str:
        return self.spans[-1][1].last_ts

    def total(self, name: str) -> int:
        return sum(int(getattr(span, name)) for _, span in self.spans)

    def to_json(self) -> dict[str, Any]:
        end = self.end
        return {
            "session": self.session,
            "started": self.started,
            "last_activity": self.last_activity,
            **{k: v for k, v in self.start.items() if k != "ts"},
            "ended": end["ts"] if end else None,
            "end_reason": end["reason"] if end else None,
            "statements": self.total("statements"),
            "errors": self.total("errors"),
            "denied": self.total("denied"),
            "records": self.total("records"),
            "files": [path.name for path, _ in self.spans],
        }


class SessionNotFound(LookupError):
    pass


@dataclass
class AuditIndex:
    """Every session in an audit directory (from the sidecars plus a scan of what they miss)."""

    directory: Path
    files: list[FileIndex]
    sessions: dict[str, SessionSummary]

    @classmethod
    def load(cls, directory: Path) -> AuditIndex:
        files: list[FileIndex] = []
        sessions: dict[str, SessionSummary] = {}
        paths = audit_files(directory)
        for number, path in enumerate(paths, start=1):
            index = file_index(path, save=number < len(paths))
            files.append(index)
            for span in index.sessions.values():
                summary = sessions.get(span.session)
                if summary is None:
                    summary = sessions[span.session] = SessionSummary(span.session)
                summary.spans.append((path, span))
        return cls(directory, files, sessions)

    def newest_first(self) -> list[SessionSummary]:
        return sorted(self.sessions.values(), key=lambda s: (s.started, s.session), reverse=True)

    def find(self, prefix: str) -> SessionSummary:
        """The session whose id is ``prefix`` or uniquely starts with it."""
        exact = self.sessions.get(prefix)
        if exact is not None:
            return exact
        matches = [s for s in self.sessions if s.startswith(prefix)] if prefix else []
        if not matches:
            raise SessionNotFound(f"no session {prefix!r} in {self.directory}")
        if len(matches) > 1:
            shown = ", ".join(sorted(matches)[:5]) + (", ..." if len(matches) > 5 else "")
            raise SessionNotFound(
                f"{prefix!r} matches {len(matches)} sessions ({shown}); give more of the id"
            )
        return self.sessions[matches[0]]


def session_records(summary: SessionSummary) -> Iterator[dict[str, Any]]:
    """The session's records in order, read only from the byte ranges the index names."""
    needle = session_needle(summary.session)
    for path, span in summary.spans:
        yield from _records_in_range(path, span.first, span.last, summary.session, needle)


def _records_in_range(
    path: Path, first: int, last: int, session: str, needle: bytes
) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        f.seek(first)
        offset = first
        for line in f:
            if needle in line and line.endswith(b"\n"):
                record = parse_line(line[:-1])
                if record is not None and record.get("session") == session:
                    yield record
            offset += len(line)
            if offset > last:
                return


def records_after(path: Path, offset: int, session: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Complete records of ``session`` in ``path`` from ``offset`` on, with the offset after
    each line (for following a live session)."""
    needle = session_needle(session)
    with path.open("rb") as f:
        f.seek(offset)
        for line in f:
            if not line.endswith(b"\n"):
                return
            offset += len(line)
            if needle in line:
                record = parse_line(line[:-1])
                if record is not None and record.get("session") == session:
                    yield offset, record


def rebuild(directory: Path) -> Iterable[tuple[Path, FileIndex]]:
    """Rebuild every sidecar from its audit file (``hoopy audit reindex``)."""
    for path in audit_files(directory):
        index = FileIndex(path.name)
        index.scan(path)
        index.save(index_path(path))
        yield path, index


class IndexKeeper:
    """The gateway's side: indexes records as the writer appends them.

    ``note`` costs a dict lookup and a few counters per record. The current file's sidecar
    is saved by ``save_current`` (the gateway calls it every few seconds, and when a file is
    left on rotation); after a crash, ``open_file`` loads the sidecar and scans the rest.
    """

    def __init__(self) -> None:
        self.current: FileIndex | None = None
        self.path: Path | None = None
        self._saved_size = -1

    def open_file(self, path: Path) -> None:
        if self.path is not None and self.path != path:
            self.save_current()
        self.path = path
        self.current = file_index(path)
        self._saved_size = -1

    def note(self, offset: int, length: int, record: Mapping[str, Any]) -> None:
        if self.current is not None:
            self.current.add(offset, length, record)

    def save_current(self) -> None:
        """Save the current file's sidecar if it changed. Errors are the caller's to log:
        a missing sidecar only makes lookups slower."""
        if self.current is None or self.path is None or self.current.size == self._saved_size:
            return
        self.current.save(index_path(self.path))
        self._saved_size = self.current.size
