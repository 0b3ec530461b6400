"""The head state: where the audit trail ended the last time the gateway knew it on disk.

A hash chain cannot show records removed from its end: a shorter chain is still a valid
chain. So the gateway keeps, outside the audit directory (``[audit] head_file``, by default
``<audit directory>.head``), one small file naming the last record it has fsync'ed: the
audit file, the byte offset where that record's line ends, and its hash, plus an HMAC of all
that when the audit has a key. ``hoopy audit verify`` checks that the trail still reaches
that record; the gateway checks it when it opens the log, and records a gap in the chain
when it does not (``writer.py``).

What it proves (docs/security.md, "The audit trail"):
- The head only ever names records already fsync'ed (it is written after the fsync of
  their batch), so a power loss can leave it behind the trail, never ahead of it.
- It lags the trail: the gateway updates it after an fsync batch, at most every
  ``HEAD_MIN_INTERVAL`` (20 ms; a held-back update is written by the next batch or the
  background tick), so in ``strict`` mode by a batch plus 20 ms, in ``os`` mode by up to
  ``fsync_interval``. Records written after the last head update can be removed unseen.
- Without a key, whoever can write both the audit directory and the head file can rewrite
  the head to match a truncated trail. With a key they cannot forge a new head, but they can
  put back an older copy of the head file (with the trail cut to it): only a copy kept
  where they cannot write (``verify --head COPY``) catches that.

The file is one JSON line padded with spaces to ``HEAD_BYTES`` and rewritten in place with one
``pwrite`` (one sector: a torn write is as unlikely as it gets, and shows as an unreadable
head rather than a wrong one). It is not fsync'ed on its own: an extra fsync per batch would
double the cost of ``strict`` durability; losing the newest head update in a power loss
only makes the head lag.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hoopy.audit.lines import AUDIT_FILE_RE, line_ending_at, parse_line
from hoopy.audit.records import canonical_json

HEAD_VERSION = 1
# One disk sector: the head is rewritten in place, and a sector write is not torn in practice.
HEAD_BYTES = 512
# Signed heads are domain-separated from record signatures (HMAC of a hex hash).
_SIG_CONTEXT = b"hoopy audit head\n"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class TrailPosition:
    """A record in the trail: its file, the byte offset where its line ends, its hash."""

    file: str
    end: int
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "end": self.end, "hash": self.hash}

    def __str__(self) -> str:
        return f"{self.file} up to byte {self.end} (record {self.hash[:16]}...)"


@dataclass(frozen=True, slots=True)
class HeadState:
    position: TrailPosition
    ts: float  # when the gateway wrote it (epoch seconds)
    signed: bool


class HeadError(Exception):
    """The head state cannot be used; the message says why (for verify and the gap record)."""


class HeadMissing(HeadError):
    pass


def _signature(key: bytes, body: bytes) -> str:
    return hmac.digest(key, _SIG_CONTEXT + body, "sha256").hex()


def encode_head(position: TrailPosition, key: bytes | None, now: float) -> bytes:
    """The head file's content. Formatted directly, in canonical JSON (keys sorted; the file
    name matches ``AUDIT_FILE_RE`` and the hash is hex, so nothing needs escaping): this runs
    once per fsync batch, and ``canonical_json`` of a dict cost 7 us of it."""
    body = (
        f'{{"end":{int(position.end)},"file":"{position.file}","hash":"{position.hash}",'
        f'"head":{HEAD_VERSION},"ts":{float(round(now, 6))!r}}}'
    ).encode("ascii")
    line = body if key is None else body[:-1] + b',"sig":"' + _signature(key, body).encode() + b'"}'
    return line + b" " * max(0, HEAD_BYTES - len(line) - 1) + b"\n"


def decode_head(data: bytes, key: bytes | None) -> HeadState:
    """Parse and check a head file's content. Raises ``HeadError``."""
    record = parse_line(data.rstrip(b" \n")) if data.endswith(b"\n") else None
    if record is None or record.get("head") != HEAD_VERSION:
        raise HeadError("the head state is unreadable (damaged, or not written by hoopy)")
    sig = record.pop("sig", None)
    name, end, digest = record.get("file"), record.get("end"), record.get("hash")
    ts = record.get("ts")
    if (
        not isinstance(name, str)
        or AUDIT_FILE_RE.fullmatch(name) is None
        or not isinstance(end, int)
        or not isinstance(digest, str)
        or len(digest) != 64
        or not _HEX.issuperset(digest)
        or not isinstance(ts, (int, float))
    ):
        raise HeadError("the head state is unreadable (a field is missing or malformed)")
    if key is not None:
        if not isinstance(sig, str):
            raise HeadError("the head state is not signed, but the audit has a key")
        expected = _signature(key, canonical_json(record)).encode()
        if not hmac.compare_digest(sig.encode("utf-8", "replace"), expected):
            raise HeadError("the head state's signature does not match (wrong key, or forged)")
    return HeadState(TrailPosition(name, end, digest), float(ts), signed=sig is not None)


def load_head(path: Path, key: bytes | None) -> HeadState:
    """The head state in ``path``. Raises ``HeadMissing`` or ``HeadError``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise HeadError(f"cannot read the head state {path}: {exc.strerror or exc}") from None
    if not data:  # also what the gateway leaves if it dies between creating and writing it
        raise HeadMissing(f"there is no head state at {path}")
    return decode_head(data, key)


def position_reached(directory: Path, position: TrailPosition) -> bool:
    """Whether the trail in ``directory`` still holds the record ``position`` names (its line
    ends at that offset of that file and carries that hash). Reads one line."""
    line = line_ending_at(directory / position.file, position.end)
    record = parse_line(line) if line is not None else None
    return record is not None and record.get("hash") == position.hash


def describe_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class HeadFile:
    """The gateway's side: the head file, kept open and rewritten in place.

    ``write`` costs one ``pwrite`` of ``HEAD_BYTES``. The fsync thread writes while the
    gateway runs, the event loop at open and close: a lock keeps a close from freeing the
    descriptor under a write (a reused descriptor number would be written to).
    """

    def __init__(self, path: Path, key: bytes | None) -> None:
        self.path = path
        self._key = key
        self._fd = -1
        self._length_checked = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open (or create, 0600) the head file. Raises OSError."""
        if self._fd >= 0:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a file left by someone else keeps its mode otherwise
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._length_checked = False

    def write(self, position: TrailPosition) -> None:
        """Record ``position`` (already fsync'ed) as the trail's head. Raises OSError."""
        data = encode_head(position, self._key, time.time())
        with self._lock:
            if self._fd < 0:
                return
            os.pwrite(self._fd, data, 0)
            if not self._length_checked:
                os.ftruncate(self._fd, len(data))  # what was there before may be longer
                self._length_checked = True

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def default_head_path(directory: Path) -> Path:
    """``<audit directory>.head``: next to the directory, not in it (a tool that wipes or
    copies the directory does not take the head with it)."""
    return directory.with_name(directory.name + ".head")
