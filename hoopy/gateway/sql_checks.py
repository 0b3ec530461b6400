"""The session's checks of SQL text (``hoopy.sql.checks``), off the event loop for huge
statements (``hoopy.gateway.offload``)."""

from __future__ import annotations

from hoopy.gateway import offload
from hoopy.sql.checks import loads_local_file as _loads_local_file
from hoopy.sql.lexer import ServerVersion
from hoopy.wire.handshake import Greeting
from hoopy.wire.packets import copy_from


def server_version(greeting: Greeting | None) -> ServerVersion | None:
    """The target's flavour and version from its greeting (None: read comments as code)."""
    return None if greeting is None else ServerVersion.from_greeting(greeting.server_version)


async def loads_local_file(payload: bytes, server: ServerVersion | None) -> bool:
    """Whether a COM_QUERY payload holds a ``LOAD DATA|XML ... LOCAL INFILE`` statement under
    any reading of its text (executable comments included, as ``server`` reads them; the
    caller parses the greeting's version once per session, not per statement)."""
    return await offload.run(len(payload), lambda: _loads_local_file(copy_from(payload, 1), server))
