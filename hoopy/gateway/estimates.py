"""Row estimates for the guardrails' ``rows_above`` rules: ``EXPLAIN`` on a connection of
hoopy's own to the target, never the client's (whose session state, such as warnings and
``ROW_COUNT()``, must stay as the client left it) and never by running the statement.

Only a text that is safe to put after ``EXPLAIN`` is estimated (``explainable``): one
statement under every reading, starting with SELECT, INSERT, REPLACE, UPDATE or DELETE, with
no comment (``/*!ANALYZE*/`` would turn EXPLAIN into EXPLAIN ANALYZE, which runs it), no
``;`` and no function call (the optimizer may evaluate a function while planning). Anything
else, and any failure (a passthrough target, where hoopy has no account; an EXPLAIN error;
``ESTIMATE_TIMEOUT``), gives no estimate, which rules treat as unknown (a ``deny`` rule on
rows then matches: docs/guardrails.md).

Resource handling: one connection per target, opened on first use, used by one estimate at a
time (a lock), closed when it fails or times out and when the gateway stops (``aclose``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re

import trio

from hoopy.config.model import LoginMode, Target
from hoopy.gateway.replay import ReplayConnection
from hoopy.gateway.stream import ConnectionClosed
from hoopy.gateway.upstream import UpstreamError
from hoopy.policy.analysis import Analysis
from hoopy.policy.rules import ROW_ESTIMATE_KINDS
from hoopy.wire.packets import ProtocolError
from hoopy.wire.resultset import decode_text_result

log = logging.getLogger("hoopy.guardrails")

# An estimate slower than this is given up (the statement is judged without one).
ESTIMATE_TIMEOUT = 2.0
_FIRST_WORD = re.compile(rb"[ \t\r\n]*(select|insert|replace|update|delete)[ \t\r\n]", re.I)


def explainable(text: bytes, analysis: Analysis) -> bool:
    """Whether ``EXPLAIN <text>`` only explains (see the module docstring)."""
    if len(analysis.statements) != 1 or len(analysis.primary) != 1:
        return False
    facts = analysis.statements[0]
    if facts.kind not in ROW_ESTIMATE_KINDS or not facts.parsed or facts.functions:
        return False
    if facts.into_file or facts.dynamic or facts.dynamic_unknown:
        return False
    if any(marker in text for marker in (b"/*", b"#", b"--", b";", b"\\", b"\x00")):
        return False
    return _FIRST_WORD.match(text) is not None


class RowEstimator:
    def __init__(self, target: Target) -> None:
        self.target = target
        self._connection: ReplayConnection | None = None
        self._database: str | None = None
        self._lock = trio.Lock()

    async def estimate(self, text: bytes, database: str | None) -> int | None:
        """EXPLAIN's estimate of the rows ``text`` examines, or None."""
        if self.target.login is LoginMode.PASSTHROUGH or not self.target.user:
            return None  # no account of hoopy's on this target
        with trio.move_on_after(ESTIMATE_TIMEOUT):
            async with self._lock:
                try:
                    return await self._estimate(text, database)
                except (UpstreamError, ProtocolError, ConnectionClosed, OSError) as exc:
                    log.info("row estimate on target '%s' failed: %s", self.target.name, exc)
                    await self.aclose()
                    return None
        log.info("row estimate on target '%s' timed out", self.target.name)
        await self.aclose()  # its state is unknown now
        return None

    async def _estimate(self, text: bytes, database: str | None) -> int | None:
        if self._connection is None:
            self._connection = await ReplayConnection.open(
                self.target,
                database=database,
                recorded_capabilities=0,  # no multi-statements, no DEPRECATE_EOF
                session="-",
                program=b"hoopy-estimate",
            )
            self._database = database or self.target.database
        connection = self._connection
        if database != self._database:
            if database is None:
                return None  # a connection cannot leave its database; unknown
            summary, _ = await connection.request_raw(b"\x02" + database.encode())
            if summary.error is not None:
                return None
            self._database = database
        summary, raw = await connection.request_raw(b"\x03EXPLAIN " + bytes(text))
        if summary.error is not None:
            return None
        return rows_estimate(raw)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await connection.aclose()


def rows_estimate(raw: bytes) -> int | None:
    """The largest ``rows`` of an EXPLAIN result (times ``filtered`` when MySQL gives it)."""
    result = decode_text_result(raw)
    rows = result.column("rows")
    filtered = result.column("filtered") or [None] * len(rows)
    best: int | None = None
    for value, percent in zip(rows, filtered, strict=False):
        if value is None:
            continue
        try:
            estimate = float(value)
            if percent is not None:
                estimate *= float(percent) / 100
        except ValueError:
            continue
        n = math.ceil(estimate)
        best = n if best is None else max(best, n)
    return best
