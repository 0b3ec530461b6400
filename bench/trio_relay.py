"""The control: a bare trio TCP byte relay, the floor cost of any Python hop.

    python bench/trio_relay.py --target 127.0.0.1:3306 [--listen 127.0.0.1:0] [--ready-file F]

Per client it opens one TCP connection to the target and runs two tasks that copy bytes
(``receive_some`` / ``send_all``) until either side closes. No parsing, no buffering beyond
one read. The read size matches hoopy's (``hoopy.gateway.stream.RECEIVE_SIZE``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

RECEIVE_SIZE = 256 * 1024
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def _pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some(RECEIVE_SIZE):
            await dst.send_all(data)
    except _BROKEN:
        pass
    done.cancel()  # one side is gone: end the pair


def _handler(host: str, port: int) -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def handle(client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(host, port)
        except OSError:
            await client.aclose()
            return
        with trio.CancelScope() as done:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, client, upstream, done)
                nursery.start_soon(_pump, upstream, client, done)
        with trio.CancelScope(shield=True):
            await client.aclose()
            await upstream.aclose()

    return handle


async def _serve(listen: tuple[str, int], target: tuple[str, int], ready: Path | None) -> None:
    listeners = await trio.open_tcp_listeners(listen[1], host=listen[0])
    bound = listeners[0].socket.getsockname()
    if ready is not None:
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "tcp": [bound[0], bound[1]]}))
        os.replace(tmp, ready)
    else:
        print(f"relaying {bound[0]}:{bound[1]} -> {target[0]}:{target[1]}", flush=True)
    await trio.serve_listeners(_handler(*target), listeners)


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", type=_addr, required=True, help="host:port to relay to")
    p.add_argument("--listen", type=_addr, default=("127.0.0.1", 0), help="host:port (0: any)")
    p.add_argument("--ready-file", type=Path, help="write {pid, tcp: [host, port]} here")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_serve, args.listen, args.target, args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
