"""Appending chained audit records to JSON-lines files, safely across crashes and rotation.

Files live in one directory (0700), each ``audit-<UTC yyyymmddTHHMMSS>-<sequence>.jsonl``
(0600), so name order is write order. Every file starts with a ``file_start`` record naming
the file before it, and the hash chain runs on across files, so a deleted or renamed file is
detected by ``hoopy audit verify``. Rotation happens by size and when the UTC day changes.

Crash safety: a line is written with one ``write`` on an ``O_APPEND`` descriptor, so a crash
leaves at most a partial last line. On open the writer terminates such a line (it stays, as a
recognisable remnant the reader skips) and continues the chain from the last complete record.

This class does blocking file I/O and is not thread-safe: the gateway owns one, calls
``append`` from its event loop (a small write into the page cache) and ``sync`` from a worker
thread (fsync), never both at once for the same descriptor without its own ordering.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from hoopy.audit.index import IndexKeeper
from hoopy.audit.reader import AUDIT_FILE_RE
from hoopy.audit.records import GENESIS, AuditChain

FILE_PREFIX = "audit-"
FILE_SUFFIX = ".jsonl"
# Big enough that a busy gateway rotates a few times a day, small enough to copy and grep.
DEFAULT_ROTATE_BYTES = 256 * 1024 * 1024
# How much of a file's end is read at a time when looking for its last complete record.
TAIL_BLOCK = 64 * 1024


class AuditUnavailable(Exception):
    """The audit record could not be written (disk full, permissions, I/O error).

    The gateway must not run the statement (fail closed); the message says why, without any
    record content. ``reason`` is the same without file paths, for the client: agents learn
    why their statement did not run, not the server's directory layout.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message


_second_cache: tuple[int, str] = (-1, "")


def timestamp(now: float) -> str:
    """RFC 3339 UTC with microseconds: sortable as text, unambiguous across hosts.

    One per record, so the date part is formatted once per second (strftime cost 2 us).
    """
    global _second_cache
    second = int(now)
    if _second_cache[0] != second:
        _second_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_cache[1]}.{int((now - second) * 1_000_000):06d}Z"


def audit_file_name(now: float, sequence: int) -> str:
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{FILE_PREFIX}{stamp}-{sequence:06d}{FILE_SUFFIX}"


def _stamp_time(name: str) -> float:
    stamp = name[len(FILE_PREFIX) : len(FILE_PREFIX) + 15]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp()


def _sequence(name: str) -> int:
    try:
        return int(name[len(FILE_PREFIX) :].split("-")[1].split(".")[0])
    except (IndexError, ValueError):
        return -1


def _is_audit_file(path: Path) -> bool:
    return AUDIT_FILE_RE.fullmatch(path.name) is not None and path.is_file()


class AuditWriter:
    def __init__(
        self,
        directory: Path,
        *,
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        rotate_daily: bool = True,
        key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        index: IndexKeeper | None = None,
    ) -> None:
        self.directory = directory
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self._key = key
        self._clock = clock
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._day_ends = 0.0
        self._chain = AuditChain(GENESIS, key)
        self._broken: str | None = None
        self._broken_reason: str | None = None
        self._pending: list[bytes] = []  # chained lines not yet written (see append)
        self._pending_bytes = 0
        self.index = index  # told about every record and file (hoopy/audit/index.py)
        self.generation = 0  # bumped whenever a new file is opened

    @property
    def path(self) -> Path | None:
        return self._path

    def fileno(self) -> int:
        if self._fd < 0:
            raise AuditUnavailable("the audit log is not open")
        return self._fd

    # --- opening and recovery ------------------------------------------------------------

    def open(self) -> None:
        """Create the directory if needed, recover the chain, and open the newest file."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            files = sorted(p for p in self.directory.iterdir() if _is_audit_file(p))
            last_hash = GENESIS
            for path in reversed(files):
                found = _last_hash(path)
                if found is not None:
                    last_hash = found
                    break
            self._chain = AuditChain(last_hash, self._key)
            if files:
                self._open_file(files[-1])
                if _last_hash(files[-1]) is None:
                    # Crashed before the new file's file_start was complete: write it now.
                    self._write_file_start(files[-2] if len(files) > 1 else None)
            else:
                self._rotate(previous=None)
        except OSError as exc:
            raise AuditUnavailable(
                f"cannot open the audit directory {self.directory}: {exc.strerror or exc}",
                reason=f"cannot open the audit directory: {exc.strerror or exc}",
            ) from None
        self._broken = None

    def _open_file(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and not _ends_with_newline(path, size):
                os.write(fd, b"\n")  # terminate a crash's partial line; the reader skips it
                size += 1
        except OSError:
            os.close(fd)
            raise
        if self._fd >= 0:
            # Rotation: what was written to the old file reaches the disk before it is left
            # (rare, so done inline; group commit then only has the new file to sync).
            os.fsync(self._fd)
            os.close(self._fd)
        self._fd, self._path, self._size = fd, path, size
        self.generation += 1
        if self.index is not None:
            self.index.open_file(path)
        # The file belongs to the UTC day in its name; the next day starts a new file.
        day = datetime.strptime(path.name[len(FILE_PREFIX) : len(FILE_PREFIX) + 8], "%Y%m%d")
        self._day_ends = day.replace(tzinfo=UTC).timestamp() + 86400.0

    def _rotate(self, previous: Path | None) -> None:
        now = self._clock()
        sequence = _sequence(previous.name) + 1 if previous is not None else 0
        name = audit_file_name(now, sequence)
        if previous is not None and name < previous.name:
            # The clock went back: keep name order equal to write order.
            name = audit_file_name(_stamp_time(previous.name), sequence)
        self._open_file(self.directory / name)
        self._write_file_start(previous)

    def _write_file_start(self, previous: Path | None) -> None:
        self._write(
            self._chain.line(
                {
                    "kind": "file_start",
                    "ts": timestamp(self._clock()),
                    "previous_file": previous.name if previous is not None else None,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                }
            )
        )

    # --- writing -------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any], *, write_now: bool = True) -> None:
        """Add one record to the chain (``ts`` added if absent). Raises ``AuditUnavailable``.

        With ``write_now`` (statement records) the record, and any held back before it, reach
        the file in one ``write`` before this returns. Without it (outcome records) the line
        is held back until the next such write or ``flush``: one syscall then carries many
        records, and lines still reach the file in chain order.
        """
        if self._broken is not None:
            raise AuditUnavailable(self._broken, reason=self._broken_reason)
        if self._fd < 0:
            raise AuditUnavailable("the audit log is not open")
        now = self._clock()
        try:
            if self._needs_rotation(now):
                self._write_pending()
                self._rotate(previous=self._path)
            fields = dict(record)
            fields.setdefault("ts", timestamp(now))
            line = self._chain.line(fields)
        except (TypeError, ValueError, RecursionError) as exc:
            raise AuditUnavailable(f"audit record is not serialisable: {exc}") from None
        except OSError as exc:
            self._fail(exc)
        if self.index is not None:
            self.index.note(self._size + self._pending_bytes, len(line), fields)
        self._pending.append(line)
        self._pending_bytes += len(line)
        if write_now:
            self.flush()

    def flush(self) -> None:
        """Write the records held back. Raises ``AuditUnavailable``."""
        if self._pending:
            try:
                self._write_pending()
            except OSError as exc:
                self._fail(exc)

    def _write_pending(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()  # written or lost: on failure the log is reopened from the file
        self._pending_bytes = 0
        self._write(data)

    def _fail(self, exc: OSError) -> NoReturn:
        # The chain is now ahead of the file: refuse until reopened (which recovers from
        # the file itself).
        self._pending.clear()
        self._pending_bytes = 0
        self._broken = f"cannot write the audit log {self._path}: {exc.strerror or exc}"
        self._broken_reason = f"cannot write the audit log: {exc.strerror or exc}"
        raise AuditUnavailable(self._broken, reason=self._broken_reason) from None

    def _needs_rotation(self, now: float) -> bool:
        # Per record, so plain float comparisons (a strftime here cost 2 us per record).
        return self._size >= self.rotate_bytes or (self.rotate_daily and now >= self._day_ends)

    def _write(self, line: bytes) -> None:
        written = os.write(self._fd, line)
        if written != len(line):
            # A short write on a regular file means the disk is full: never continue a line.
            raise OSError(28, "short write (disk full?)")
        self._size += written

    def sync(self) -> None:
        """fsync the current file (strict durability; run it in a worker thread)."""
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._broken = f"cannot sync the audit log {self._path}: {exc.strerror or exc}"
                self._broken_reason = f"cannot sync the audit log: {exc.strerror or exc}"
                raise AuditUnavailable(self._broken, reason=self._broken_reason) from None

    def close(self) -> None:
        if self._fd >= 0:
            # A failure was reported to whoever wrote the records; the file keeps what it has.
            with contextlib.suppress(AuditUnavailable):
                self.flush()
            os.close(self._fd)
            self._fd = -1
        if self.index is not None:
            with contextlib.suppress(OSError):  # only makes later lookups slower
                self.index.save_current()


def _ends_with_newline(path: Path, size: int) -> bool:
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"


def _last_hash(path: Path) -> str | None:
    """The hash of the last parseable record in ``path``, reading from the end.

    A record cut off just before its newline is complete, and counts: the writer terminates
    it and chains on from it (a fork would fail verification).
    """
    with path.open("rb") as f:
        pos = f.seek(0, os.SEEK_END)
        carry = b""  # bytes already read that start no earlier than a line boundary
        after_last_newline = True  # until the last newline is found, bytes form the tail
        while pos > 0:
            step = min(TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            parts = (f.read(step) + carry).split(b"\n")
            if after_last_newline:
                if len(parts) == 1:
                    carry = parts[0]
                    if pos == 0:
                        return _hash_of(carry)
                    continue
                found = _hash_of(parts[-1])
                if found is not None:
                    return found
                parts = parts[:-1]  # a crash remnant after the last newline
                after_last_newline = False
            # parts[0] may continue further back unless the file's start was reached.
            complete = parts if pos == 0 else parts[1:]
            for line in reversed(complete):
                found = _hash_of(line)
                if found is not None:
                    return found
            carry = b"" if pos == 0 else parts[0]
    return None


def _hash_of(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if isinstance(record, dict) and isinstance(record.get("hash"), str):
        return str(record["hash"])
    return None
