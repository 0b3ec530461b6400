"""Audit files and their lines: naming, listing, parsing one line, and reading the line that
ends or starts at a byte offset. Shared by the writer, the reader, the index and the head
state; plain blocking file I/O."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

# ``audit-<UTC yyyymmddTHHMMSS>-<sequence>.jsonl``; the sequence is zero-padded to 6 digits
# and may grow past them.
AUDIT_FILE_RE = re.compile(r"audit-\d{8}T\d{6}-\d{6,}\.jsonl")
# How much of a file is read at a time when walking backwards to a line's start.
BACK_BLOCK = 64 * 1024


# With ``[gateway] workers = N`` worker K writes its own chain in ``<directory>/worker-K``.
WORKER_DIR_RE = re.compile(r"worker-([1-9][0-9]*)")


def worker_trail(directory: Path, worker: int) -> Path:
    return directory / f"worker-{worker}"


def worker_head(head: Path, worker: int) -> Path:
    """Worker K's head state beside ``head`` (``audit.head`` -> ``audit.worker-K.head``)."""
    return head.with_name(f"{head.stem}.worker-{worker}{head.suffix}")


def worker_of(trail: Path) -> int | None:
    """K for a ``worker-K`` trail, None for the directory's own."""
    match = WORKER_DIR_RE.fullmatch(trail.name)
    return int(match.group(1)) if match else None


def audit_trails(directory: Path) -> list[Path]:
    """The chains an audit directory holds: its own files (one gateway process), then one
    ``worker-K`` subdirectory per worker, in worker order. Every reader treats them as one
    trail: a session lives in exactly one of them."""
    try:
        workers = sorted(
            (p for p in directory.iterdir() if WORKER_DIR_RE.fullmatch(p.name) and p.is_dir()),
            key=lambda p: int(p.name.split("-")[1]),
        )
    except OSError:
        return [directory]
    if workers and not audit_files(directory):
        return workers
    return [directory, *workers]


def audit_files(directory: Path) -> list[Path]:
    """The audit files in ``directory`` in write order (by name); other entries are ignored."""
    return sorted(
        (p for p in directory.iterdir() if AUDIT_FILE_RE.fullmatch(p.name) and p.is_file()),
        key=lambda p: p.name,
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on one line (without its newline), or None."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # includes UnicodeDecodeError and JSONDecodeError
        return None
    return value if isinstance(value, dict) else None


def line_ending_at(path: Path, end: int) -> bytes | None:
    """The complete line (without its newline) whose newline is the byte before ``end``, or
    None when there is none (the file is shorter, or byte ``end - 1`` is not a newline)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if end <= 0 or end > size:
                return None
            f.seek(end - 1)
            if f.read(1) != b"\n":
                return None
            pos, blocks = end - 1, []  # blocks of the line read so far, last first
            while pos > 0:
                step = min(BACK_BLOCK, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                newline = block.rfind(b"\n")
                if newline >= 0:
                    blocks.append(block[newline + 1 :])
                    break
                blocks.append(block)
            return b"".join(reversed(blocks))
    except OSError:
        return None


def line_starting_at(path: Path, offset: int, limit: int) -> bytes | None:
    """The complete line (without its newline) starting at byte ``offset``, if it is at most
    ``limit`` bytes long; None otherwise."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            line = f.readline(limit + 1)
    except OSError:
        return None
    if not line.endswith(b"\n"):
        return None
    return line[:-1]


def last_line(path: Path) -> bytes | None:
    """The file's last complete line (without its newline), or None when the file is empty
    or does not end with a newline."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    return line_ending_at(path, size)


def remnant_declaration(raw: bytes) -> dict[str, Any]:
    """How a ``file_start`` declares the crash remnant ending the file before it."""
    return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
