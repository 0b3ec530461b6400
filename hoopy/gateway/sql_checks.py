"""The session's checks of SQL text (``hoopy.sql.checks``), run so that a huge statement
does not stall the event loop: from ``OFF_LOOP_BYTES`` on, in a worker thread.

The checks are linear and cheap per byte, and each call into C they make is bounded (see
``hoopy.sql.lexer``), so the event loop gets the interpreter back within milliseconds while
a worker thread scans.
"""

from __future__ import annotations

import trio

from hoopy.gateway.session_audit import OFF_LOOP_BYTES
from hoopy.sql.checks import loads_local_file as _loads_local_file
from hoopy.sql.lexer import ServerVersion
from hoopy.wire.handshake import Greeting


def server_version(greeting: Greeting | None) -> ServerVersion | None:
    """The target's flavour and version from its greeting (None: read comments as code)."""
    return None if greeting is None else ServerVersion.from_greeting(greeting.server_version)


async def loads_local_file(payload: bytes, greeting: Greeting | None) -> bool:
    """Whether a COM_QUERY payload holds a ``LOAD DATA|XML ... LOCAL INFILE`` statement under
    any reading of its text (executable comments included, as the target reads them)."""
    server = server_version(greeting)
    if len(payload) < OFF_LOOP_BYTES:
        return _loads_local_file(payload[1:], server)
    return await trio.to_thread.run_sync(lambda: _loads_local_file(payload[1:], server))
