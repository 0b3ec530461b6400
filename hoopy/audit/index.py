"""The session index: which sessions each audit file holds, and where, without reading it all.

``hoopy sessions`` and ``hoopy replay`` must answer in well under a second over a 1 GB audit
directory, which rules out parsing every line (about 3 us a line, 5M lines). So each audit
file gets a sidecar ``<audit file>.idx`` (JSON lines, 0600): a header line naming the file and
how many of its bytes the sidecar covers, then one line per session with records in the file:
the byte offsets of its first and last record there, its counts (records, statements,
errors, denied statements), and its session_start / session_end summary when those records
are in the file.

The index is a cache, and it is bound to the chain so that it cannot tell a story the
records do not: whenever the gateway saves a sidecar covering the first ``size`` bytes of its
file, it first appends an ``index`` record at exactly that offset, carrying the SHA-256 of the
sidecar's bytes (``{"kind": "index", "covers": size, "sha256": ...}``). Readers trust a
sidecar only when the line at its ``size`` is that record with that digest (one short read);
otherwise they ignore it, scan the file itself, and say so. ``hoopy audit verify`` checks
every sidecar the same way and recomputes, at each ``index`` record, the index of the records
before it, so an edited sidecar, or one copied from elsewhere, is reported. An attacker who
also edits the ``index`` record breaks the hash chain there (see ``records.py``).

A sidecar that is missing or behind its file costs time, not correctness: the reader scans
what the sidecar does not cover. The gateway keeps the sidecars current (``IndexKeeper``, and
``AuditWriter.bind_index``); ``hoopy audit reindex`` rebuilds them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hoopy.audit.lines import audit_files, audit_trails, line_starting_at, parse_line

INDEX_SUFFIX = ".idx"
INDEX_VERSION = 1
INDEX_RECORD = "index"  # the kind of the chain record that binds a sidecar
# An index record's line is about 200 bytes; reading this much is enough to find it.
INDEX_RECORD_LIMIT = 4096
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


def sidecar_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def binds(record: Mapping[str, Any] | None, size: int, data: bytes) -> bool:
    """Whether ``record`` (the line at offset ``size``) is the index record binding ``data``."""
    return (
        record is not None
        and record.get("kind") == INDEX_RECORD
        and record.get("covers") == size
        and record.get("sha256") == sidecar_digest(data)
    )


@dataclass
class FileIndex:
    """The sessions of one audit file, covering its first ``size`` bytes.

    ``bound``: the latest sidecar content (``dump``) that an index record in the file binds,
    as loaded or met while scanning; it is what may be saved. ``distrusted``: a sidecar was
    there but the chain does not bind it (edited, stale, or from an older hoopy), so it was
    ignored.
    """

    name: str
    size: int = 0
    sessions: dict[str, SessionSpan] = field(default_factory=dict)
    bound: bytes | None = field(default=None, compare=False)
    distrusted: bool = field(default=False, compare=False)

    def tally(self, offset: int, length: int, session: str, ts: str, statement: bool) -> None:
        """``add`` for a session's statement record that ran (``statement``) or its
        outcome without an error, from their facts (``AuditWriter.append_encoded``)."""
        end = offset + length
        if end > self.size:
            self.size = end
        span = self.sessions.get(session)
        if span is None:
            span = self.sessions[session] = SessionSpan(session, offset, offset, first_ts=ts)
        span.last = offset
        span.last_ts = ts
        span.records += 1
        if statement:
            span.statements += 1

    def add(
        self, offset: int, length: int, record: Mapping[str, Any], ts: str | None = None
    ) -> None:
        """Account for the record whose line starts at ``offset`` and is ``length`` bytes
        (``ts``: its time, when the record itself does not carry it)."""
        end = offset + length
        if end > self.size:
            self.size = end
        session = record.get("session")
        if not isinstance(session, str):
            return  # file_start
        span = self.sessions.get(session)
        if ts is None:
            found = record.get("ts")
            ts = found if isinstance(found, str) else ""
        if span is None:
            span = self.sessions[session] = SessionSpan(session, offset, offset, first_ts=ts)
        span.last = offset
        span.last_ts = ts
        span.records += 1
        kind = record.get("kind")
        if kind == "statement":
            span.statements += 1
            if record.get("verdict") in ("deny", "review"):  # refused: it did not run
                span.denied += 1
        elif kind == "outcome":
            if record.get("error") is not None:
                span.errors += 1
        elif kind == "session_start":
            span.start = start_summary(record if "ts" in record else {**record, "ts": ts})
        elif kind == "session_end":
            span.end = end_summary(record if "ts" in record else {**record, "ts": ts})

    def scan(self, path: Path) -> None:
        """Extend the index over the file's bytes past ``size`` (skipping non-records), and
        note in ``bound`` the index as of each index record that binds it."""
        with path.open("rb") as f:
            f.seek(self.size)
            offset = self.size
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a partial last line (being written, or a crash remnant)
                record = parse_line(line[:-1])
                if record is not None:
                    if record.get("kind") == INDEX_RECORD:
                        data = self.dump()
                        if binds(record, offset, data):
                            self.bound = data
                    self.add(offset, len(line), record)
                offset += len(line)
                self.size = offset

    def dump(self) -> bytes:
        header = {"index": INDEX_VERSION, "file": self.name, "size": self.size}
        lines = [header, *(span.to_json() for span in self.sessions.values())]
        return b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in lines)

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> FileIndex | None:
        """A sidecar's content for the audit file ``name``, or None when unusable."""
        try:
            lines = data.splitlines()
            header = json.loads(lines[0])
            if header.get("index") != INDEX_VERSION or header.get("file") != name:
                return None
            index = cls(name, int(header["size"]))
            for raw in lines[1:]:
                span = SessionSpan.from_json(json.loads(raw))
                index.sessions[span.session] = span
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return None
        return index

    @classmethod
    def load(cls, audit_file: Path) -> FileIndex | None:
        """The saved sidecar of ``audit_file`` if the chain binds it (see the module
        docstring), else None; ``distrusted`` tells the two None cases apart."""
        return load_bound(audit_file)[0]


def write_sidecar(path: Path, data: bytes) -> None:
    """Write a sidecar atomically (a reader sees the old one or the new one). The temporary
    file is new (``O_EXCL``, random name), so it never inherits a leftover file's mode."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def load_bound(audit_file: Path) -> tuple[FileIndex | None, bool]:
    """(the sidecar of ``audit_file`` if the chain binds it, whether a sidecar was there but
    is not bound). A bound sidecar is one whose ``size`` is the offset of an index record
    that carries the SHA-256 of the sidecar's bytes."""
    try:
        data = index_path(audit_file).read_bytes()
    except OSError:
        return None, False
    index = FileIndex.from_bytes(audit_file.name, data)
    if index is None:
        return None, True
    line = line_starting_at(audit_file, index.size, INDEX_RECORD_LIMIT)
    if not binds(parse_line(line) if line is not None else None, index.size, data):
        return None, True
    index.bound = data
    return index, False


def file_index(audit_file: Path, *, save: bool = False) -> FileIndex:
    """The index of one audit file: its bound sidecar, extended over what it misses.

    With ``save``, when the scan met a later binding than the sidecar on disk, that bound
    content is saved if the directory is writable (readers pass it for files the gateway
    has left, so the next lookup is fast; the file being written is the gateway's to index).
    """
    index, distrusted = load_bound(audit_file)
    loaded = index.bound if index is not None else None
    try:
        size = audit_file.stat().st_size
    except OSError:
        size = 0
    if index is None or index.size > size:
        index = FileIndex(audit_file.name)  # missing or not bound: scan the records
    if index.size < size:
        index.scan(audit_file)
        if save and index.bound is not None and index.bound != loaded:
            with contextlib.suppress(OSError):  # read-only access: just slower next time
                write_sidecar(index_path(audit_file), index.bound)
    index.distrusted = distrusted
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
    """Every session in an audit directory (from the sidecars plus a scan of what they miss).

    ``distrusted``: audit files whose sidecar the chain does not bind; they were scanned
    instead, so the answers are the records', and the CLI says to verify and reindex.
    """

    directory: Path
    files: list[FileIndex]
    sessions: dict[str, SessionSummary]
    distrusted: list[Path] = field(default_factory=list)
    # Each chain's files (lines.audit_trails: one per gateway worker), in write order.
    trails: dict[Path, list[FileIndex]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> AuditIndex:
        files: list[FileIndex] = []
        trails: dict[Path, list[FileIndex]] = {}
        sessions: dict[str, SessionSummary] = {}
        distrusted: list[Path] = []
        for trail in audit_trails(directory):
            paths = audit_files(trail) if trail.is_dir() else []
            mine = trails[trail] = []
            for number, path in enumerate(paths, start=1):
                index = file_index(path, save=number < len(paths))
                files.append(index)
                mine.append(index)
                if index.distrusted:
                    distrusted.append(path)
                for span in index.sessions.values():
                    summary = sessions.get(span.session)
                    if summary is None:
                        summary = sessions[span.session] = SessionSummary(span.session)
                    summary.spans.append((path, span))
        return cls(directory, files, sessions, distrusted, trails)

    def trail_of(self, summary: SessionSummary) -> Path:
        """The chain a session was recorded in (a session never moves between workers)."""
        return summary.spans[0][0].parent if summary.spans else self.directory

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
    """Rebuild every sidecar from its audit file (``hoopy audit reindex``): each gets the
    index as of the file's last index record that binds it. A file without one (written by
    an older hoopy, or whose index records do not match its records) loses its sidecar:
    readers scan it."""
    for path in (p for trail in audit_trails(directory) for p in audit_files(trail)):
        index = FileIndex(path.name)
        index.scan(path)
        if index.bound is not None:
            write_sidecar(index_path(path), index.bound)
        else:
            index_path(path).unlink(missing_ok=True)
        yield path, index


class IndexKeeper:
    """The gateway's side: indexes records as the writer appends them.

    ``note`` costs a dict lookup and a few counters per record. The writer binds and saves
    the current file's sidecar (``AuditWriter.bind_index``: every few seconds, when a file is
    left on rotation, at close); after a crash, ``open_file`` loads the bound sidecar and
    scans the rest, so a sidecar edited meanwhile is never extended and re-bound.
    """

    def __init__(self) -> None:
        self.current: FileIndex | None = None
        self.path: Path | None = None

    def open_file(self, path: Path) -> None:
        self.path = path
        self.current = file_index(path)

    def forget(self) -> None:
        """Stop indexing the current file (it was deleted or moved away)."""
        self.current = None
        self.path = None

    def note(
        self, offset: int, length: int, record: Mapping[str, Any], ts: str | None = None
    ) -> None:
        """``ts``: the record's time when the writer added it (the record has none)."""
        if self.current is not None:
            self.current.add(offset, length, record, ts)

    def tally(self, offset: int, length: int, session: str, ts: str, statement: bool) -> None:
        if self.current is not None:
            self.current.tally(offset, length, session, ts, statement)

    def save(self, data: bytes) -> None:
        """Save ``data`` (a bound dump of the current file's index) as its sidecar. Errors
        are the caller's to log: a missing sidecar only makes lookups slower."""
        if self.path is not None:
            write_sidecar(index_path(self.path), data)
