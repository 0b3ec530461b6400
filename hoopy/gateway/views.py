"""The target's views, for masking: what each view selects, read from ``information_schema``
on a connection of hoopy's own (never the client's), so a masked column read through a view
stays masked (its column definitions name the view, not the table behind it).

One ``ViewCatalog`` per target, shared by its masking sessions: the views hoopy's account can
see, with their definitions traced (policy/lineage.py), refreshed when older than
``VIEWS_TTL``. Passthrough targets have no account of hoopy's: there views are not followed
(docs/masking.md says what that leaves).

Resource handling: one connection per target, opened on first use, one query at a time (a
lock), closed when it fails and when the gateway stops (``aclose``).
"""

from __future__ import annotations

import contextlib
import logging

import trio

from hoopy.config.model import LoginMode, Target
from hoopy.gateway.replay import ReplayConnection
from hoopy.gateway.stream import ConnectionClosed
from hoopy.gateway.upstream import UpstreamError
from hoopy.policy.lineage import Output, Views, lineage
from hoopy.wire.packets import ProtocolError
from hoopy.wire.resultset import decode_text_result

log = logging.getLogger("hoopy.masking")

VIEWS_TTL = 30.0  # seconds a catalog is trusted (a view created since is seen after this)
VIEWS_TIMEOUT = 5.0
MAX_VIEWS = 10_000

_VIEWS_SQL = (
    b"\x03SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
    b"LIMIT 10001"
)
_COLUMNS_SQL = (
    b"\x03SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c "
    b"JOIN information_schema.VIEWS v ON v.TABLE_SCHEMA = c.TABLE_SCHEMA AND "
    b"v.TABLE_NAME = c.TABLE_NAME ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"
)


class ViewsUnavailable(Exception):
    pass


class ViewCatalog:
    def __init__(self, target: Target) -> None:
        self.target = target
        self._connection: ReplayConnection | None = None
        self._lock = trio.Lock()
        self._views: Views | None = None
        self._read_at = -VIEWS_TTL

    @property
    def available(self) -> bool:
        """Whether hoopy can read this target's views at all (it has an account there)."""
        return self.target.login is not LoginMode.PASSTHROUGH and bool(self.target.user)

    async def views(self) -> Views:
        """The views, traced (cached for ``VIEWS_TTL``). Raises ViewsUnavailable."""
        now = trio.current_time()
        if self._views is not None and now - self._read_at < VIEWS_TTL:
            return self._views
        async with self._lock:
            if self._views is not None and trio.current_time() - self._read_at < VIEWS_TTL:
                return self._views
            with trio.move_on_after(VIEWS_TIMEOUT):
                try:
                    self._views = await self._read()
                    self._read_at = trio.current_time()
                    return self._views
                except (UpstreamError, ProtocolError, ConnectionClosed, OSError) as exc:
                    await self.aclose()
                    raise ViewsUnavailable(str(exc)) from None
            await self.aclose()
            raise ViewsUnavailable(f"reading them took over {VIEWS_TIMEOUT:g}s")

    async def _read(self) -> Views:
        if self._connection is None:
            self._connection = await ReplayConnection.open(
                self.target,
                database=None,
                recorded_capabilities=0,
                session="-",
                program=b"hoopy-views",
            )
        summary, raw = await self._connection.request_raw(_VIEWS_SQL)
        if summary.error is not None:
            raise ProtocolError(f"information_schema.VIEWS: {summary.error.message}")
        defined = decode_text_result(raw)
        if len(defined.rows) > MAX_VIEWS:
            raise ProtocolError(f"more than {MAX_VIEWS} views")
        summary, raw = await self._connection.request_raw(_COLUMNS_SQL)
        if summary.error is not None:
            raise ProtocolError(f"information_schema.COLUMNS: {summary.error.message}")
        names: dict[tuple[str, str], list[str]] = {}
        for schema, table, column in decode_text_result(raw).rows:
            key = (_text(schema), _text(table))
            names.setdefault(key, []).append(_text(column))
        traced: dict[tuple[str, str], tuple[Output, ...] | None] = {}
        for schema_b, table_b, definition in defined.rows:
            key = (_text(schema_b), _text(table_b))
            (lin,) = lineage(definition or b"") or (None,)
            columns = names.get(key, [])
            if lin is None or lin.unknown or len(lin.outputs) != len(columns) or any(
                o.star for o in lin.outputs
            ):
                traced[key] = None  # cannot be followed: a masking session refuses reading it
                continue
            traced[key] = tuple(
                Output(c, o.sources) for c, o in zip(columns, lin.outputs, strict=True)
            )
        log.info("target '%s': %d views read for masking", self.target.name, len(traced))
        return Views(traced)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await connection.aclose()


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace").lower()
