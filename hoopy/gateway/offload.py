"""Per-statement CPU work that grows with the statement, kept from stalling the event loop.

Redaction and the SQL checks lex the whole statement. They are linear and cheap per byte,
and every call they make into C is bounded (hoopy.sql.lexer), but a 64 MiB statement still
takes a while: from ``OFF_LOOP_BYTES`` on, the work runs in a worker thread
(``trio.to_thread``) while the event loop goes on serving every other session. The session
that sent the statement waits for it, so nothing else touches that session's state meanwhile.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")

# Below this the thread hand-off (~0.1 ms) costs more than the work it moves: a 64 KiB
# statement is redacted and checked in about a millisecond (docs/performance.md).
OFF_LOOP_BYTES = 64 * 1024

# CPython hands the interpreter lock from a busy thread to a waiting one after this long
# (the default is 5 ms). While a worker thread scans, the event loop waits up to about this
# long each time it needs the lock back, several times for every query it relays: 5 ms each
# time made a bystander's SELECT 1 take 25 ms. A shorter interval costs a little throughput
# only while threads compete for the lock (bench/bystander.py).
SWITCH_INTERVAL = 0.0005


async def run(size: int, work: Callable[[], T]) -> T:
    """``work()``, in a worker thread when the statement is ``size`` >= OFF_LOOP_BYTES."""
    if size < OFF_LOOP_BYTES:
        return work()
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    return await trio.to_thread.run_sync(work)
