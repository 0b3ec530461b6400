"""The approval requests and what became of them, kept in the gateway's state directory.

The store is a journal: ``<state_dir>/approvals/journal.jsonl``, one JSON object per line,
each an operation (``request``, ``approve``, ``deny``, ``expire``, ``use``, ``cancel``) on a
request. Opening it replays the journal, so a restart loses no decision; every append is
fsync'ed before the gateway acts on it. The gateway calls these methods from a worker
thread (``trio.to_thread``); the store itself knows nothing of trio.

``fingerprint.key`` (32 random bytes, mode 0600) keys the fingerprints that bind a retry to
the approved statement (``policy.fingerprint``). The directory is 0700: the journal holds
redacted statements, and the approvals themselves are what a retry is let through by.

Several workers of one gateway (``[gateway] workers``) share the journal (``shared=True``):
the supervisor opens it first (compaction, cancelling the last run's holds), then each
worker opens it without compacting. A change is made under ``lock()`` (``flock`` on
``journal.lock``), after ``refresh()`` has applied what the other workers appended, so a
request is decided, expired or used once across all of them; ``refresh()`` is also how a
worker learns of a decision made through another. A hold belongs to the worker that holds
its client (``worker``): a restarted worker cancels its predecessor's.

A shared store for several gateway instances (docs/architecture.md, "Approvals across
instances") implements the same operations on a database table; ``use`` is the one that
must be an atomic compare-and-set (``UPDATE ... WHERE state = 'approved'``).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoopy.approvals.policy import ApprovalPolicy, Approver, Mode

PENDING = "pending"
APPROVED = "approved"  # retry: usable once until valid_until; hold: the statement runs now
DENIED = "denied"
EXPIRED = "expired"  # no decision in time, or an approval not used in time
USED = "used"  # the approved statement ran
CANCELLED = "cancelled"  # its held client went away, or the gateway stopped
FINAL_STATES = frozenset((DENIED, EXPIRED, USED, CANCELLED))

# Finished requests older than this are dropped when the journal is compacted at start-up.
KEEP_FINISHED_SECONDS = 7 * 86400
# A journal line longer than this is not ours (a statement is kept cut: MAX_SQL_CHARS).
MAX_LINE_BYTES = 4 * 1024 * 1024
# What a request keeps of its (redacted) statement for the approver.
MAX_SQL_CHARS = 64 * 1024


class StoreError(Exception):
    """The store cannot be read or written; the statement it concerns is refused."""


def new_id() -> str:
    """Short enough to type, random enough not to guess (40 bits, base32, e.g. ``ap-7kq2m9xw``)."""
    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i
    return "ap-" + "".join(secrets.choice(alphabet) for _ in range(8))


@dataclass
class ApprovalRequest:
    id: str
    mode: Mode
    policy: ApprovalPolicy
    requester: dict[str, Any]  # name, method, identity, issuer, groups, claims that matter
    target: str
    database: str | None
    session: str
    seq: int
    command: str
    sql: str | None  # as the audit records it (redacted)
    params: list[dict[str, Any]] | None
    rule: str
    message: str
    fingerprint: str
    asked_at: float
    expires_at: float  # pending until then; approved (retry): usable until then
    estimate: int | None = None
    state: str = PENDING
    approvals: list[dict[str, Any]] = field(default_factory=list)  # Approver.to_json + at
    decided_at: float | None = None
    decided_by: dict[str, Any] | None = None
    reason: str | None = None  # of a denial, an expiry or a cancellation
    used_at: float | None = None
    used_by_session: str | None = None
    worker: int | None = None  # the gateway worker holding its client ([gateway] workers)

    @property
    def requester_identity(self) -> str:
        return str(self.requester["identity"])

    def approvers(self) -> list[Approver]:
        return [
            Approver(a["identity"], a["name"], tuple(a["groups"]), a["via"]) for a in self.approvals
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mode": self.mode.value,
            "policy": self.policy.to_json(),
            "requester": self.requester,
            "target": self.target,
            "database": self.database,
            "session": self.session,
            "seq": self.seq,
            "command": self.command,
            "sql": self.sql,
            "params": self.params,
            "rule": self.rule,
            "message": self.message,
            "fingerprint": self.fingerprint,
            "asked_at": self.asked_at,
            "expires_at": self.expires_at,
            "estimate": self.estimate,
            "state": self.state,
            "approvals": self.approvals,
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "used_at": self.used_at,
            "used_by_session": self.used_by_session,
            # Only when set: a journal of a single gateway stays readable by older versions.
            **({"worker": self.worker} if self.worker is not None else {}),
        }

    def view(self) -> dict[str, Any]:
        """What the admin API shows (no fingerprint: it is only for matching)."""
        data = self.to_json()
        del data["fingerprint"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApprovalRequest:
        fields = dict(data)
        fields["mode"] = Mode(fields["mode"])
        fields["policy"] = ApprovalPolicy.from_json(fields["policy"])
        return cls(**fields)


class ApprovalStore:
    """The requests by id, rebuilt from the journal; each change appended and fsync'ed."""

    def __init__(self, directory: Path, *, shared: bool = False) -> None:
        """``shared``: a worker's view of the journal the workers write together (opened,
        and compacted, by the supervisor first)."""
        self.directory = directory
        self.journal = directory / "journal.jsonl"
        self.requests: dict[str, ApprovalRequest] = {}
        self.key = b""
        self.shared = shared
        self.offset = 0  # bytes of the journal applied: its complete lines up to here
        self._fd: int | None = None
        self._lock_fd: int | None = None
        # Reading the journal and appending to it, one at a time: appends run in a worker
        # thread while the event loop looks for the other workers' lines (refresh).
        self._io = threading.Lock()

    # --- opening ---------------------------------------------------------------------------

    def open(self, now: float | None = None) -> list[ApprovalRequest]:
        """Load the journal and compact it. Returns the hold requests that were pending when
        the gateway stopped: their clients are gone, so they are cancelled (the caller
        records that)."""
        now = time.time() if now is None else now
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.directory, 0o700)
            self.key = self._key()
            if self.shared:
                # The supervisor compacted it; the other workers may be appending already.
                self._fd = os.open(
                    self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                self._lock_fd = os.open(
                    self.directory / "journal.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                self.refresh()
                return []
            self._replay(0)
        except OSError as exc:
            raise StoreError(f"cannot open the approval store {self.directory}: {exc}") from None
        orphans = [r for r in self.requests.values() if r.state == PENDING and r.mode is Mode.HOLD]
        for request in orphans:
            request.state = CANCELLED
            request.reason = "the gateway stopped while the statement was held"
            request.decided_at = now
        approved_holds = [
            r for r in self.requests.values() if r.state == APPROVED and r.mode is Mode.HOLD
        ]
        for request in approved_holds:  # approved, but the gateway stopped before it ran
            request.state = CANCELLED
            request.reason = "the gateway stopped before the approved statement ran"
        try:
            self._compact(now)
        except OSError as exc:
            raise StoreError(f"cannot compact the approval store {self.journal}: {exc}") from None
        return orphans + approved_holds

    def _key(self) -> bytes:
        path = self.directory / "fingerprint.key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
            if len(key) != 32:
                raise OSError(f"{path} is not a 32-byte key") from None
            return key
        key = secrets.token_bytes(32)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key

    def _read(self, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """The operations of the journal's complete lines from byte ``start`` on (numbered
        from there); ``offset`` follows each line read."""
        try:
            f = self.journal.open("rb")
        except FileNotFoundError:
            return
        with f:
            f.seek(start)
            self.offset = start
            for number, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    return  # a write cut by a crash (or still being written by a worker)
                if len(line) > MAX_LINE_BYTES:
                    raise OSError(f"{self.journal}:{number}: line too long")
                try:
                    op = json.loads(line)
                except ValueError:
                    raise OSError(f"{self.journal}:{number}: not JSON") from None
                if not isinstance(op, dict):
                    raise OSError(f"{self.journal}:{number}: not an operation")
                yield number, op
                # Past the line only once it was applied: a line that does not apply stops
                # every later read at it (fail closed), rather than being skipped.
                self.offset += len(line)

    def refresh(self, *, wait: bool = True) -> bool:
        """Apply what other workers appended since the last look (a ``stat`` when nothing
        was). Whether anything was. ``wait=False``: nothing, at once, while an append of this
        process is under way (the event loop must not wait for its fsync). Raises
        StoreError."""
        if not self.shared:
            return False
        if not self._io.acquire(blocking=wait):
            return False
        try:
            return self._refresh()
        finally:
            self._io.release()

    def _refresh(self) -> bool:
        try:
            if os.stat(self.journal).st_size <= self.offset:
                return False
            return self._replay(self.offset) > 0
        except OSError as exc:
            raise StoreError(f"cannot read the approval store: {exc}") from None

    def _replay(self, start: int) -> int:
        """Apply the journal's operations from byte ``start`` on; how many. OSError names
        the first line that does not apply."""
        applied = 0
        for number, op in self._read(start):
            try:
                _validate(op)
                self._apply(op)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                where = f"{number}" if start == 0 else f"{number} after byte {start}"
                raise OSError(f"{self.journal}:{where}: not a valid operation ({exc!r})") from None
            applied += 1
        return applied

    def lock(self) -> bool:
        """Take the workers' lock (blocking: call it from a thread), then ``refresh``: a
        change is decided on the journal's latest state. Whether the refresh found
        anything. Raises StoreError."""
        if self._lock_fd is None:
            return False
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise StoreError(f"cannot lock the approval store: {exc}") from None
        try:
            return self.refresh()
        except BaseException:
            self.unlock()
            raise

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _compact(self, now: float) -> None:
        """Rewrite the journal as one ``request`` line per request still worth keeping."""
        keep = {
            i: r
            for i, r in self.requests.items()
            if r.state not in FINAL_STATES
            or (r.decided_at or r.used_at or r.asked_at) > now - KEEP_FINISHED_SECONDS
        }
        self.requests = keep
        tmp = self.journal.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            data = b"".join(_line({"op": "request", "request": r.to_json()}) for r in keep.values())
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.journal)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.offset = len(data)
        self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None

    # --- changes -----------------------------------------------------------------------------

    def append(self, op: dict[str, Any]) -> None:
        """Write one operation durably, then apply it. Raises StoreError."""
        if self._fd is None:
            raise StoreError("the approval store is not open")
        try:
            _validate(op)  # what is written must read back
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"not a valid approval operation: {exc!r}") from None
        line = _line(op)
        with self._io:
            self._write(self._fd, line)
            self._apply(op)
            # Shared: appended under lock() after refresh(), so nothing else is in between.
            self.offset += len(line)

    def _write(self, fd: int, line: bytes) -> None:
        """``line`` on disk, or nothing of it: a change that failed must not take effect
        later (read back at the next open, or by another worker). Raises StoreError."""
        try:
            before = os.fstat(fd).st_size
        except OSError as exc:
            raise StoreError(f"cannot write the approval store: {exc.strerror}") from None
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(0, f"short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, before)
                os.fsync(fd)
            except OSError as undo:
                raise StoreError(
                    f"cannot write the approval store ({exc.strerror}), nor take the "
                    f"write back ({undo.strerror}): the store needs a look"
                ) from None
            raise StoreError(f"cannot write the approval store: {exc.strerror}") from None

    def _apply(self, op: dict[str, Any]) -> None:
        kind = op.get("op")
        if kind == "request":
            new = ApprovalRequest.from_json(op["request"])
            self.requests[new.id] = new
            return
        found = self.requests.get(str(op.get("id")))
        if found is None:
            return  # compacted away
        request = found
        at = float(op["at"])
        if kind == "approve":
            request.approvals.append({**op["approver"], "at": at})
            if op.get("final"):
                request.state = APPROVED
                request.decided_at = at
                request.decided_by = op["approver"]
                if request.mode is Mode.RETRY:
                    request.expires_at = at + request.policy.valid_for
        elif kind == "deny":
            request.state = DENIED
            request.decided_at = at
            request.decided_by = op["approver"]
            request.reason = op.get("reason")
        elif kind in ("expire", "cancel"):
            request.state = EXPIRED if kind == "expire" else CANCELLED
            request.decided_at = request.decided_at or at
            request.reason = op.get("reason")
        elif kind == "use":
            request.state = USED
            request.used_at = at
            request.used_by_session = op.get("session")

    # --- queries -----------------------------------------------------------------------------

    def find(self, fingerprint: str, state: str) -> ApprovalRequest | None:
        for request in self.requests.values():
            if request.fingerprint == fingerprint and request.state == state:
                return request
        return None


_OPS = frozenset({"request", "approve", "deny", "expire", "cancel", "use"})


def _validate(op: dict[str, Any]) -> None:
    """Raise (KeyError, TypeError, ValueError) unless ``_apply`` can apply ``op``."""
    kind = op.get("op")
    if kind not in _OPS:
        raise ValueError(f"unknown operation {kind!r}")
    if kind == "request":
        ApprovalRequest.from_json(op["request"])
        return
    if not isinstance(op.get("id"), str):
        raise TypeError("an operation names a request id")
    float(op["at"])
    if kind in ("approve", "deny") and not isinstance(op["approver"], dict):
        raise TypeError("the approver must be an object")


def _line(op: dict[str, Any]) -> bytes:
    return json.dumps(op, separators=(",", ":"), sort_keys=True).encode() + b"\n"
