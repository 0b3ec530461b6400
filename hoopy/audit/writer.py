"""Appending chained audit records to JSON-lines files, safely across crashes and rotation.

Files live in one directory (0700), each ``audit-<UTC yyyymmddTHHMMSS>-<sequence>.jsonl``
(0600), so name order is write order. Every file starts with a ``file_start`` record naming
the file before it, and the hash chain runs on across files, so a deleted or renamed file is
detected by ``hoopy audit verify``. Rotation happens by size and when the UTC day changes.

Crash safety: a line is written with one ``write`` on an ``O_APPEND`` descriptor, so a crash
leaves at most a partial last line. On open the writer terminates such a line (it stays, as
evidence) and starts a new file whose ``file_start`` declares it (``previous_remnant``: its
length and SHA-256), continuing the chain from the last complete record. So a line that is
not a record can only ever be a file's last line, and ``verify`` rejects one anywhere else.

Against deletion (docs/security.md): after each fsync the gateway records the trail's end in
the head state (``head.py``) outside the directory; ``open`` checks that the trail still
reaches it and writes a ``gap`` into the new file's ``file_start`` when it does not. The
gateway also checks that the file it writes is still linked at its path (``file_is_current``)
and, when it was deleted or moved, starts a new file whose ``file_start`` records the loss
(``replace_lost_file``). Each sidecar of the session index is bound to the chain by an
``index`` record (``bind_index``, ``index.py``).

This class does blocking file I/O and is not thread-safe: the gateway owns one, calls
``append`` from its event loop (a small write into the page cache) and ``sync`` from a worker
thread (fsync), never both at once for the same descriptor without its own ordering.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from hoopy.audit.head import (
    HeadError,
    HeadFile,
    HeadMissing,
    TrailPosition,
    load_head,
    position_reached,
)
from hoopy.audit.index import INDEX_RECORD, IndexKeeper, sidecar_digest
from hoopy.audit.lines import AUDIT_FILE_RE, last_line, parse_line, remnant_declaration
from hoopy.audit.records import GENESIS, AuditChain

log = logging.getLogger("hoopy.audit")

FILE_PREFIX = "audit-"
FILE_SUFFIX = ".jsonl"
# Big enough that a busy gateway rotates a few times a day, small enough to copy and grep.
DEFAULT_ROTATE_BYTES = 256 * 1024 * 1024
# How much of a file's end is read at a time when looking for its last complete record.
TAIL_BLOCK = 64 * 1024
# The gap kind for a file deleted or moved away while it was being written.
FILE_LOST = "file_lost"


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

    One per record, so the date part is formatted once per second (strftime cost 2 us), and
    the microseconds by ``str`` of an int (a format spec such as ``06d`` costs several times
    that when the caches are cold, as they are between statements).
    """
    global _second_cache
    second = int(now)
    if _second_cache[0] != second:
        _second_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    # 1xxxxxx: its last six digits are the microseconds, zero-padded.
    micros = str(int((now - second) * 1_000_000) + 1_000_000)
    return _second_cache[1] + "." + micros[1:] + "Z"


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
        head: HeadFile | None = None,
        file_fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        # Added to every file_start (a gateway worker's number and how many there are).
        self.file_fields = dict(file_fields or {})
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
        # Records held back unchained (see defer): chained before anything after them.
        self._deferred: list[tuple[Callable[..., tuple[bytes, str]], tuple[Any, ...], str, float]]
        self._deferred = []
        # The end of what reached the file: its size and the last line's hash (the head
        # state names it once fsync'ed). Pending lines are always the chain's tail, so after
        # they are written the chain's last hash is the file's.
        self._written_size = 0
        self._written_hash = GENESIS
        self._file_first_prev = GENESIS  # the chain's hash when the current file began
        self._bound_size = -1  # file size after the last index record (see bind_index)
        self.index = index  # told about every record and file (hoopy/audit/index.py)
        self.head = head  # the head state (hoopy/audit/head.py), written by sync and close
        self.generation = 0  # bumped whenever a new file is opened

    @property
    def path(self) -> Path | None:
        return self._path

    def fileno(self) -> int:
        if self._fd < 0:
            raise AuditUnavailable("the audit log is not open")
        return self._fd

    def written_position(self) -> TrailPosition | None:
        """The last record written to the file (for the head state, once fsync'ed)."""
        if self._path is None or self._fd < 0:
            return None
        return TrailPosition(self._path.name, self._written_size, self._written_hash)

    # --- opening and recovery ------------------------------------------------------------

    def open(self) -> None:
        """Create the directory if needed, recover the chain, and open the newest file.

        A new file is started when the newest one ends in a crash remnant (declared in the
        new ``file_start``) or when the head state shows the trail was cut (a ``gap``).
        """
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
            gap = self._check_head(bool(files))
            newest = files[-1] if files else None
            if newest is None:
                self._rotate(previous=None, gap=gap)
            elif _unfinished_first_line(newest):
                # Nothing but hoopy's own unfinished file_start (the first write in a file is
                # that record alone), or nothing: write it again.
                self._open_file(newest, empty=True)
                self._write_file_start(files[-2] if len(files) > 1 else None, gap=gap)
            else:
                _terminate_partial_line(newest)
                if (
                    _trailing_remnant(newest) is not None
                    or _last_hash(newest) is None
                    or gap is not None
                ):
                    self._rotate(previous=newest, gap=gap)  # a remnant stays its last line
                else:
                    self._open_file(newest)
                    self._file_first_prev = _first_prev(newest, last_hash)
                    self._written_size, self._written_hash = self._size, last_hash
            self._checkpoint()
        except OSError as exc:
            raise AuditUnavailable(
                f"cannot open the audit directory {self.directory}: {exc.strerror or exc}",
                reason=f"cannot open the audit directory: {exc.strerror or exc}",
            ) from None
        self._broken = None

    def _check_head(self, has_files: bool) -> dict[str, Any] | None:
        """The gap to record when the trail does not reach the head state, else None."""
        if self.head is None:
            return None
        gap: dict[str, Any] | None = None
        try:
            state = load_head(self.head.path, self._key)
        except HeadMissing as exc:
            if has_files:
                detail = f"{exc} (the first start that keeps one, or it was deleted)"
                gap = {"kind": "head_unusable", "detail": detail}
        except HeadError as exc:
            gap = {"kind": "head_unusable", "detail": str(exc)}
        else:
            if not position_reached(self.directory, state.position):
                position = {**state.position.to_json(), "ts": state.ts}
                gap = {"kind": "trail_truncated", "head": position}
        self.head.open()  # after reading it: opening creates it
        return gap

    def _open_file(self, path: Path, *, create: bool = False, empty: bool = False) -> None:
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if create:
            # A new file is new: a file planted under the name would keep its mode and content.
            flags |= os.O_CREAT | os.O_EXCL
        fd = os.open(path, flags, 0o600)
        try:
            if empty:
                os.ftruncate(fd, 0)
            size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        if self._fd >= 0:
            # Rotation: what was written to the old file reaches the disk before it is left
            # (rare, so done inline; group commit then only has the new file to sync).
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
        self._fd, self._path, self._size = fd, path, size
        self._written_size = size
        self._bound_size = -1
        self.generation += 1
        if self.index is not None:
            self.index.open_file(path)
        # The file belongs to the UTC day in its name; the next day starts a new file.
        day = datetime.strptime(path.name[len(FILE_PREFIX) : len(FILE_PREFIX) + 8], "%Y%m%d")
        self._day_ends = day.replace(tzinfo=UTC).timestamp() + 86400.0

    def _rotate(
        self, previous: Path | None, *, gap: dict[str, Any] | None = None, now: float | None = None
    ) -> None:
        """``now``: the time of the record that calls for the new file (default: the clock)."""
        if now is None:
            now = self._clock()
        sequence = _sequence(previous.name) + 1 if previous is not None else 0
        name = audit_file_name(now, sequence)
        if previous is not None and name < previous.name:
            # The clock went back: keep name order equal to write order.
            name = audit_file_name(_stamp_time(previous.name), sequence)
        self._open_file(self.directory / name, create=True)
        self._write_file_start(previous, gap=gap, now=now)

    def _write_file_start(
        self, previous: Path | None, *, gap: dict[str, Any] | None, now: float | None = None
    ) -> None:
        record: dict[str, Any] = {
            "kind": "file_start",
            "ts": timestamp(self._clock() if now is None else now),
            "previous_file": previous.name if previous is not None else None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **self.file_fields,
        }
        lost = gap is not None and gap.get("kind") == FILE_LOST
        if previous is not None and not lost:
            remnant = _trailing_remnant(previous)
            if remnant is not None:
                record["previous_remnant"] = remnant_declaration(remnant)
        if gap is not None:
            record["gap"] = gap
        self._file_first_prev = self._chain.last_hash
        self._write_record(record)

    def _write_record(self, record: dict[str, Any]) -> None:
        """Chain, index and write one record now (file_start and index records)."""
        line = self._chain.line(record)
        if self.index is not None:
            self.index.note(self._size, len(line), record)
        self._write(line)
        self._written_size, self._written_hash = self._size, self._chain.last_hash

    # --- writing -------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any], *, write_now: bool = True) -> None:
        """Add one record to the chain (``ts`` added if absent). Raises ``AuditUnavailable``.

        With ``write_now`` (statement records) the record, and any held back before it, reach
        the file in one ``write`` before this returns. Without it (outcome records) the line
        is held back until the next such write or ``flush``: one syscall then carries many
        records, and lines still reach the file in chain order.
        """
        now = self._ready()
        try:
            ts = record.get("ts")
            if not isinstance(ts, str):
                ts = timestamp(now)
            line = self._chain.line(record, ts)
        except (TypeError, ValueError, RecursionError) as exc:
            raise AuditUnavailable(f"audit record is not serialisable: {exc}") from None
        if self.index is not None:
            self.index.note(self._size + self._pending_bytes, len(line), record, ts)
        self._queue(line, write_now)

    def append_encoded(
        self,
        encode: Callable[..., tuple[bytes, str]],
        fields: tuple[Any, ...],
        session: str,
        *,
        statement: bool,
        write_now: bool = True,
    ) -> None:
        """``append`` for a record that ``encode(*fields, ts, prev, key)`` turns into its
        chained line (``_canon.statement_line``, ``_canon.outcome_line``: the two records of
        nearly every statement, encoded without a dict). ``session``: the record's;
        ``statement``: it is a statement record that ran (the index counts those)."""
        now = self._ready()
        ts = timestamp(now)
        try:
            line, self._chain.last_hash = encode(*fields, ts, self._chain.last_hash, self._key)
        except (TypeError, ValueError, RecursionError) as exc:
            raise AuditUnavailable(f"audit record is not serialisable: {exc}") from None
        if self.index is not None:
            self.index.tally(self._size + self._pending_bytes, len(line), session, ts, statement)
        self._queue(line, write_now)

    def defer(
        self, encode: Callable[..., tuple[bytes, str]], fields: tuple[Any, ...], session: str
    ) -> None:
        """``append_encoded(..., write_now=False)`` of an outcome record, timed now but
        chained later: just before the next record is chained or the held-back lines are
        written, so lines reach the file in the order of the calls, as with ``append``.

        Why: chaining a record (its JSON, SHA-256 and timestamp) costs several times more
        with the caches cold, as they are when a response has just been relayed, than right
        before the next statement's record, which runs the same code. Raises
        ``AuditUnavailable`` as ``append`` would."""
        if self._broken is not None:
            raise AuditUnavailable(self._broken, reason=self._broken_reason)
        if self._fd < 0:
            raise AuditUnavailable("the audit log is not open")
        self._deferred.append((encode, fields, session, self._clock()))

    def _chain_deferred(self, *, rotate: bool = True) -> None:
        """Chain the held-back records, each as ``append`` would have at its own time: after
        the rotation that time, or the file's size, called for (``rotate``). Raises OSError
        (rotation)."""
        deferred = self._deferred
        self._deferred = []
        chain, key, index = self._chain, self._key, self.index
        for encode, fields, session, now in deferred:
            if rotate and self._needs_rotation(now):
                self._write_chained()
                self._leave_file(now)
                self._rotate(previous=self._path, now=now)
                index = self.index
            ts = timestamp(now)
            try:
                line, chain.last_hash = encode(*fields, ts, chain.last_hash, key)
            except Exception as exc:  # a bug: lose the outcome, not the log or the session
                # The type only: a message could quote a value.
                log.error("session %s: an outcome was lost (%s)", session, type(exc).__name__)
                continue
            if index is not None:
                index.tally(self._size + self._pending_bytes, len(line), session, ts, False)
            self._pending.append(line)
            self._pending_bytes += len(line)

    def _ready(self) -> float:
        """Before a record is chained: the time, after any rotation it calls for."""
        if self._broken is not None:
            raise AuditUnavailable(self._broken, reason=self._broken_reason)
        if self._fd < 0:
            raise AuditUnavailable("the audit log is not open")
        try:
            if self._deferred:
                self._chain_deferred()
            now = self._clock()
            if self._needs_rotation(now):
                self._write_chained()
                self._leave_file(now)
                self._rotate(previous=self._path, now=now)
        except OSError as exc:
            self._fail(exc)
        return now

    def _queue(self, line: bytes, write_now: bool) -> None:
        self._pending.append(line)
        self._pending_bytes += len(line)
        if write_now:
            self.flush()

    def flush(self) -> None:
        """Write the records held back. Raises ``AuditUnavailable``."""
        if self._pending or self._deferred:
            try:
                self._write_pending()
            except OSError as exc:
                self._fail(exc)

    def _write_pending(self) -> None:
        """Write the held-back records, chaining the deferred ones first. Raises OSError."""
        if self._deferred:
            self._chain_deferred()
        self._write_chained()

    def _write_chained(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()  # written or lost: on failure the log is reopened from the file
        self._pending_bytes = 0
        self._write(data)
        self._written_size, self._written_hash = self._size, self._chain.last_hash

    def _fail(self, exc: OSError) -> NoReturn:
        # The chain is now ahead of the file: refuse until reopened (which recovers from
        # the file itself).
        self._pending.clear()
        self._pending_bytes = 0
        self._deferred = []
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

    # --- the session index ---------------------------------------------------------------

    def bind_index(self) -> None:
        """Bind the current file's index to the chain and save it as the sidecar: append an
        ``index`` record carrying the SHA-256 of the sidecar's bytes at the offset the
        sidecar covers, then save the sidecar (index.py). Nothing when nothing changed.

        Raises ``AuditUnavailable`` (the record could not be written) or OSError (the
        sidecar could not be saved: lookups get slower, nothing else).
        """
        if self._broken is not None or self._fd < 0:
            return
        self.flush()
        try:
            data = self._bind_index_now()
        except OSError as exc:
            self._fail(exc)
        if data is not None and self.index is not None:
            self.index.save(data)

    def _bind_index_now(self, now: float | None = None) -> bytes | None:
        """Write the index record (after the pending lines); the sidecar bytes it binds.
        Raises OSError."""
        keeper = self.index
        if keeper is None or keeper.current is None or self._size == self._bound_size:
            return None
        current = keeper.current
        if current.size != self._size:
            return None  # the index misses lines of the file: never bind that
        data = current.dump()
        self._write_record(
            {
                "kind": INDEX_RECORD,
                "ts": timestamp(self._clock() if now is None else now),
                "covers": current.size,
                "sha256": sidecar_digest(data),
            }
        )
        self._bound_size = self._size
        return data

    def _leave_file(self, now: float | None = None) -> None:
        """Before rotation: bind and save the index of the file being left. Raises OSError
        for the index record; a sidecar that cannot be saved only slows lookups."""
        data = self._bind_index_now(now)
        if data is not None and self.index is not None:
            with contextlib.suppress(OSError):
                self.index.save(data)

    # --- the file being written ----------------------------------------------------------

    def file_is_current(self) -> bool:
        """Whether the file being written is still linked at its path (an fstat and a stat;
        the gateway asks after each fsync batch and every background tick)."""
        if self._fd < 0 or self._path is None:
            return True
        return file_is_linked(self._fd, self._path)

    def replace_lost_file(self) -> None:
        """The file being written was deleted or moved: start a new one whose ``file_start``
        records the gap (the lost file, where the chain stood when it began, how many bytes
        of records it held). What was written to it is gone with it. Raises
        ``AuditUnavailable``."""
        lost = self._path
        if lost is None or self._fd < 0:
            return
        try:
            # Chained (the deferred ones now, here): they are part of what was lost.
            self._chain_deferred(rotate=False)
            self._write_chained()
            gap = {
                "kind": FILE_LOST,
                "file": lost.name,
                "from_hash": self._file_first_prev,
                "lost_bytes": self._size,
            }
            if self.index is not None:
                self.index.forget()
            self._rotate(previous=lost, gap=gap)
        except OSError as exc:
            self._fail(exc)

    # --- durability ----------------------------------------------------------------------

    def sync(self) -> None:
        """fsync the current file, then record it in the head state (strict durability; run
        it in a worker thread). Raises ``AuditUnavailable``."""
        if self._fd >= 0:
            position = self.written_position()
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._broken = f"cannot sync the audit log {self._path}: {exc.strerror or exc}"
                self._broken_reason = f"cannot sync the audit log: {exc.strerror or exc}"
                raise AuditUnavailable(self._broken, reason=self._broken_reason) from None
            self.write_head(position)

    def write_head(self, position: TrailPosition | None) -> None:
        """Record ``position`` (fsync'ed already) in the head state; a failure only loses
        truncation detection for a while, so it is the caller's to log (OSError)."""
        if self.head is not None and position is not None:
            self.head.write(position)

    def _checkpoint(self) -> None:
        if self.head is not None and self._fd >= 0:
            position = self.written_position()
            os.fsync(self._fd)
            self.write_head(position)

    def close(self, *, checkpoint: bool = True) -> None:
        """Flush, bind the index, and (``checkpoint``) fsync and update the head state.
        After a write failure the gateway closes without the checkpoint: the disk that
        failed must not hold up the event loop."""
        if self._fd >= 0:
            # A failure was reported to whoever wrote the records; the file keeps what it has.
            with contextlib.suppress(AuditUnavailable, OSError):
                self.flush()
                self.bind_index()
            if checkpoint and self._broken is None:
                with contextlib.suppress(OSError):
                    self._checkpoint()
            os.close(self._fd)
            self._fd = -1
        if self.head is not None:
            self.head.close()


def file_is_linked(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path``: not deleted (link count), not moved or
    replaced (same inode). An error other than "not found" answers yes: writing will tell."""
    try:
        mine = os.fstat(fd)
        if mine.st_nlink == 0:
            return False
        there = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def _terminate_partial_line(path: Path) -> None:
    """End a crash's partial last line with a newline, on disk (fsync: the next file's
    file_start declares the line, and must not outlive it). A complete record cut just
    before its newline becomes a record again; anything else is a remnant."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        if size and not _ends_with_newline(path, size):
            os.write(fd, b"\n")
            os.fsync(fd)
    finally:
        os.close(fd)


# A file_start line is a few hundred bytes; a file larger than this is not "one unfinished
# first line".
FIRST_LINE_LIMIT = 64 * 1024


def _unfinished_first_line(path: Path) -> bool:
    """Whether the file is empty or holds one line that is not a record (at most its first
    write, cut short: what a crash in the middle of starting a file leaves)."""
    size = path.stat().st_size
    if size == 0:
        return True
    if size > FIRST_LINE_LIMIT:
        return False
    data = path.read_bytes()
    body = data[:-1] if data.endswith(b"\n") else data
    return b"\n" not in body and parse_line(body) is None


def _trailing_remnant(path: Path) -> bytes | None:
    """The file's last line when it is not a record (a crash remnant), else None."""
    line = last_line(path)
    if line is None or parse_line(line) is not None:
        return None
    return line


def _first_prev(path: Path, default: str) -> str:
    """The chain's hash before the file's first record (its file_start's ``prev``)."""
    with path.open("rb") as f:
        record = parse_line(f.readline().rstrip(b"\n"))
    prev = record.get("prev") if record is not None else None
    return prev if isinstance(prev, str) else default


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
