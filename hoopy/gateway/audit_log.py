"""The gateway's audit log: one AuditWriter shared by all sessions, with group commit.

Durability (``[audit] durability``):
- ``os`` (default): a statement's record is written to the file (in the OS page cache, so it
  survives a hoopy crash) before the statement is forwarded; a background task fsyncs every
  ``fsync_interval`` seconds when there is something new.
- ``strict``: the record is also fsync'ed before the statement is forwarded. Sessions waiting
  at the same time share one fsync (group commit), run in a worker thread on a duplicate of
  the file descriptor, so the event loop never blocks on the disk.

After each fsync batch the worker thread checks that the file is still linked at its path
and then records the batch's end in the head state (hoopy/audit/head.py): one ``pwrite``
per batch, never per record, and off the event loop. A file deleted or moved while it is
written is replaced by a new one whose ``file_start`` records the gap; in ``strict`` mode
the statements whose records went to the lost file are refused (their records are gone).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from hoopy.audit.head import HeadFile, TrailPosition, default_head_path
from hoopy.audit.index import IndexKeeper
from hoopy.audit.lines import worker_head, worker_trail
from hoopy.audit.writer import AuditUnavailable, AuditWriter, file_is_linked
from hoopy.config.model import AuditSettings

log = logging.getLogger("hoopy.audit")

# How often the current file's session index is bound and saved (hoopy/audit/index.py): what
# is not saved yet is scanned by the reader, so this bounds lookup work, not correctness.
INDEX_SAVE_INTERVAL = 5.0
# How long shutdown waits for the fsync thread to finish its last job.
FSYNC_THREAD_JOIN_TIMEOUT = 5.0
# The head state is updated after an fsync batch at most this often (the background tick
# writes one held back): in strict mode a batch can be a single statement, and the update
# (about 10 us of Python in the fsync thread) is then kept far below what can be measured.
# The cost: the head can lag the trail by this much more.
HEAD_MIN_INTERVAL = 0.02
LOST_FILE = "the audit file was deleted or moved while hoopy was writing it"


class AuditLog:
    def __init__(
        self, settings: AuditSettings, key: bytes | None, worker: tuple[int, int] | None = None
    ) -> None:
        """``worker``: (K, N) for worker K of N (``[gateway] workers``): its chain is the
        directory's ``worker-K`` subdirectory, with its own head state."""
        head = settings.head_file or default_head_path(settings.directory)
        fields: dict[str, int] = {}
        if worker is not None:
            number, count = worker
            head = worker_head(head, number)
            directory = worker_trail(settings.directory, number)
            settings = replace(settings, directory=directory, head_file=head)
            fields = {"worker": number, "workers": count}
        self.settings = settings
        self.writer = AuditWriter(
            settings.directory,
            rotate_bytes=settings.rotate_bytes,
            rotate_daily=settings.rotate_daily,
            key=key,
            index=IndexKeeper(),
            head=HeadFile(head, key),
            file_fields=fields,
        )
        self.strict = settings.durability == "strict"
        self._written = 0  # records appended
        self._synced = 0  # records known to be on disk
        self._lost_through = 0  # records that went to a file deleted before it was synced
        self._syncing = False
        self._synced_event = trio.Event()
        self._last_reopen = -math.inf
        self._fsync_worker: FsyncWorker | None = None
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Take the directory (one gateway per audit directory) and open the log."""
        if self._lock_fd is None:
            self._lock_fd = lock_directory(self.settings.directory)
        self.writer.open()

    def write_later(self, record: Mapping[str, Any]) -> None:
        """Chain a record now, write it with the next statement (or within fsync_interval)."""
        self.writer.append(record, write_now=False)
        self._written += 1

    def write(self, record: Mapping[str, Any]) -> None:
        """Append a record now (page cache). Raises ``AuditUnavailable``: fail closed.

        After a failure (disk full, I/O error) the writer is reopened at most once every
        ``reopen_interval`` seconds (1 by default),
        so the gateway recovers on its own once the disk does.
        """
        try:
            self.writer.append(record)
        except AuditUnavailable:
            if not self._reopened():
                raise
            self.writer.append(record)
        self._written += 1

    def write_encoded(
        self, encode: Callable[..., tuple[bytes, str]], fields: tuple[Any, ...], session: str
    ) -> None:
        """``write`` for a statement record given as ``encode`` and its fields
        (``AuditWriter.append_encoded``)."""
        writer = self.writer
        try:
            writer.append_encoded(encode, fields, session, statement=True)
        except AuditUnavailable:
            if not self._reopened():
                raise
            writer.append_encoded(encode, fields, session, statement=True)
        self._written += 1

    def defer(
        self, encode: Callable[..., tuple[bytes, str]], fields: tuple[Any, ...], session: str
    ) -> None:
        """``write_later`` for an outcome record given as ``encode`` and its fields: chained
        with the next record (``AuditWriter.defer``). Raises ``AuditUnavailable``."""
        self.writer.defer(encode, fields, session)
        self._written += 1

    def _reopened(self) -> bool:
        """After a failed write: reopen the writer, at most once per ``reopen_interval``
        (False when it is too soon). Raises ``AuditUnavailable`` when it cannot."""
        now = time.monotonic()
        if now - self._last_reopen < self.settings.reopen_interval:
            return False
        self._last_reopen = now
        self.writer.close(checkpoint=False)
        self.writer.open()
        return True

    async def write_durable(self, record: Mapping[str, Any]) -> None:
        """Append, and in strict mode wait until it is on disk (group commit)."""
        self.write(record)
        if self.strict:
            await self._sync_through(self._written)

    async def write_durable_encoded(
        self, encode: Callable[..., tuple[bytes, str]], fields: tuple[Any, ...], session: str
    ) -> None:
        """``write_durable`` for a statement record given as ``encode`` and its fields."""
        self.write_encoded(encode, fields, session)
        if self.strict:
            await self._sync_through(self._written)

    async def _sync_through(self, target: int) -> None:
        self.writer.flush()
        while self._synced < target:
            if target <= self._lost_through:
                raise AuditUnavailable(LOST_FILE + "; a new file was started")
            if self._syncing:
                await self._synced_event.wait()
                continue
            self._syncing = True
            upto = self._written
            generation = self.writer.generation
            position = self.writer.written_position()
            path = self.writer.path
            try:
                fd = os.dup(self.writer.fileno())
                try:
                    linked = await self._fsync(fd, path, position)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise AuditUnavailable(
                    f"cannot sync the audit log: {exc.strerror or exc}"
                ) from None
            finally:
                self._syncing = False
                self._synced_event.set()
                self._synced_event = trio.Event()
            if not linked:
                # What this batch wrote went to a file that is gone: refuse its statements
                # (the background tick may have replaced the file already).
                self._lost_through = max(self._lost_through, upto)
                self._synced = max(self._synced, upto)
                if self.writer.generation == generation:
                    self.replace_lost_file()
                raise AuditUnavailable(LOST_FILE + "; a new file was started")
            if self.writer.generation == generation:
                self._synced = max(self._synced, upto)
            # else: a rotation happened meanwhile (it fsyncs the file it closes); loop to
            # sync the new file too.

    def replace_lost_file(self) -> None:
        lost = self.writer.path
        self.writer.replace_lost_file()
        log.error(
            "%s: %s; started %s and recorded the gap in the chain",
            LOST_FILE,
            lost,
            self.writer.path,
        )

    async def _fsync(self, fd: int, path: Path | None, position: TrailPosition | None) -> bool:
        """fsync ``fd`` in the worker thread, which then records ``position`` in the head
        state; the event loop waits without blocking. Whether the file is still linked."""
        if self._fsync_worker is None:
            self._fsync_worker = FsyncWorker(trio.lowlevel.current_trio_token())
        done = trio.Event()
        outcome: list[tuple[OSError | None, bool]] = []

        def finished(error: OSError | None, linked: bool) -> None:  # runs in the event loop
            outcome.append((error, linked))
            done.set()

        def after() -> None:  # runs in the fsync thread, once the batch is on disk
            self.writer.write_head(position)

        self._fsync_worker.submit(FsyncJob(fd, path, finished, after))
        # Shielded: the caller closes fd afterwards, which must not happen mid-fsync.
        with trio.CancelScope(shield=True):
            await done.wait()
        error, linked = outcome[0]
        if error is not None:
            raise error
        return linked

    async def run_background_tasks(self) -> None:
        """Every ``fsync_interval`` seconds, write the outcome records held back since the
        last statement and (``os`` mode) fsync; every few seconds, save the session index."""
        sync_every = self.settings.fsync_interval
        ticking = math.isfinite(sync_every)
        period = min(sync_every, INDEX_SAVE_INTERVAL) if ticking else INDEX_SAVE_INTERVAL
        next_sync = next_index = trio.current_time()
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            if ticking and now >= next_sync:
                next_sync = now + sync_every
                await self._background_sync()
            self.check_file()
            if self._fsync_worker is not None:
                self._fsync_worker.submit(FLUSH_HEAD)  # a head update held back, if any
            if now >= next_index:
                next_index = now + INDEX_SAVE_INTERVAL
                self.save_index()

    async def _background_sync(self) -> None:
        try:
            self.writer.flush()  # outcome records held back since the last statement
        except AuditUnavailable as exc:
            log.error("%s", exc)
        # Strict mode syncs before each statement; what is left are outcomes, which are
        # reports of the past (durable with the next statement's sync).
        if not self.strict and self._synced < self._written:
            try:
                await self._sync_through(self._written)
            except AuditUnavailable as exc:
                log.error("%s", exc)

    def check_file(self) -> None:
        """Every background tick: start a new file if the current one was deleted or moved
        (an idle gateway has no fsync batch to notice it)."""
        if not self.writer.file_is_current():
            try:
                self.replace_lost_file()
            except AuditUnavailable as exc:
                log.error("%s", exc)

    def save_index(self) -> None:
        """Bind the current file's session index to the chain and save it."""
        try:
            self.writer.bind_index()
        except AuditUnavailable:
            pass  # reported to the statements that hit it
        except OSError as exc:
            log.warning("cannot save the audit session index: %s", exc.strerror or exc)

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self._sync_through(self._written)
            except AuditUnavailable as exc:
                log.error("%s", exc)
        if self._fsync_worker is not None:
            self._fsync_worker.stop()  # its last head update first: the writer's comes last
        self.writer.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


LOCK_FILE = ".lock"


def lock_directory(directory: Path) -> int:
    """Lock ``directory`` for this process; returns the lock's descriptor (keep it open).

    Two gateways appending to one directory would fork the hash chain (each continues from
    the last record it saw), so the second refuses to start. Each instance behind a load
    balancer gets its own directory. The lock is flock(2): the kernel drops it when the
    process dies, so a crash never leaves the directory locked.
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise AuditUnavailable(
            f"cannot open the audit directory {directory}: {exc.strerror or exc}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise AuditUnavailable(
            f"the audit directory {directory} is in use by another hoopy process (pid "
            f"{holder}); give each gateway its own [audit] directory"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@dataclass(frozen=True, slots=True)
class FsyncJob:
    """fsync ``fd``; check it is still the file at ``path``; report ``finished(error,
    linked)`` to the event loop; then, if all went well, run ``after`` in the thread."""

    fd: int
    path: Path | None
    finished: Callable[[OSError | None, bool], None]
    after: Callable[[], None] | None = None


FLUSH_HEAD = "flush head"  # a job: write the head update held back, if any


class FsyncWorker:
    """One long-lived thread that runs fsyncs for the event loop.

    ``trio.to_thread.run_sync`` costs about 100 us of event-loop CPU per call here (measured;
    an fsync on this disk costs about 60), which made strict durability CPU-bound. This
    thread takes requests from a queue and reports back with ``TrioToken.run_sync_soon``.
    It also updates the head state after a batch, at most every ``HEAD_MIN_INTERVAL``; an
    update held back is written by the next batch or the next ``FLUSH_HEAD`` job.
    """

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._jobs: queue.SimpleQueue[FsyncJob | str | None] = queue.SimpleQueue()
        self._head_failed = False
        self._head_due = -math.inf
        self._held: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name="hoopy-audit-fsync", daemon=True)
        self._thread.start()

    def submit(self, job: FsyncJob | str) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        """Finish the queued jobs and end the thread (waits a bounded time)."""
        self._jobs.put(None)
        self._thread.join(FSYNC_THREAD_JOIN_TIMEOUT)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if isinstance(job, str):  # FLUSH_HEAD
                if self._held is not None:
                    self._update_head(self._held)
                continue
            error: OSError | None = None
            linked = True
            try:
                os.fsync(job.fd)
                if job.path is not None:
                    linked = file_is_linked(job.fd, job.path)
            except OSError as exc:
                error = exc
            if error is None and linked and job.after is not None:
                # Before the report, while the event loop waits: after it, this thread's
                # Python work would compete for the GIL with the next statement's.
                if time.monotonic() >= self._head_due:
                    self._update_head(job.after)
                else:
                    self._held = job.after
            try:
                self._token.run_sync_soon(job.finished, error, linked)
            except trio.RunFinishedError:
                return

    def _update_head(self, after: Callable[[], None]) -> None:
        self._held = None
        self._head_due = time.monotonic() + HEAD_MIN_INTERVAL
        try:
            after()
        except OSError as exc:
            if not self._head_failed:  # once, not once per batch
                log.error("cannot update the audit head state: %s", exc.strerror or exc)
            self._head_failed = True
        else:
            self._head_failed = False
