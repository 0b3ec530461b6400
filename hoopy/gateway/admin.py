"""The admin API: approvals over a local unix socket and, optionally, TCP+TLS.

On the unix socket the approver is the peer's OS user (``SO_PEERCRED``), with their OS
groups; the socket's file mode decides who may connect at all (``[approvals] socket_mode``,
0600 by default: only the gateway's own user). On the TLS listener the approver sends
``Authorization: Bearer <token>``, verified like a token login against the configured
issuers; the token's groups decide what they may approve.

Resource handling: ``AdminServer.serve`` owns its listeners; each connection is handled by
one task that closes it after one response. Error handling: a bad request gets a 4xx JSON
error and the connection closes; nothing a client sends ends the gateway.

Endpoints (all JSON): ``GET /v1/whoami``, ``GET /v1/approvals[?state=pending|all]``,
``GET /v1/approvals/ID``, ``POST /v1/approvals/ID/approve`` (``{"reason": ...}``
optional) and ``POST /v1/approvals/ID/deny`` (``{"reason": ...}`` required),
``GET /v1/approvals?wait=SECONDS&after=N`` waits up to SECONDS for a change after change
number N (``--watch``).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import trio

from hoopy.approvals.http import HTTPError, Request, RequestReader, error_response, response
from hoopy.approvals.policy import Approver, os_identity, token_identity
from hoopy.approvals.store import PENDING
from hoopy.config.model import AdminListener, ApprovalSettings
from hoopy.gateway.approvals import ApprovalFailed, ApprovalService
from hoopy.gateway.tokenauth import TokenAuthenticator

log = logging.getLogger("hoopy.admin")

# A request must arrive whole within this (a slow client holds one task, no more).
REQUEST_TIMEOUT = 10.0
# Connections served at once; more wait in the listen backlog.
MAX_CONNECTIONS = 32
# The longest a --watch request waits for a change.
MAX_WAIT = 30.0


def admin_unix_socket(path: Path, mode: int) -> socket.socket:
    """The admin API's unix socket, bound and listening with file mode ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Imported here: the server module imports this one.
    from hoopy.gateway.server import unix_listener

    return unix_listener(path, mode)


def admin_sockets(settings: ApprovalSettings) -> list[socket.socket]:
    """What ``AdminServer.bind`` binds, for a supervisor to hand its workers (``adopt``)."""
    from hoopy.gateway.workers import tcp_sockets  # the workers module imports the server's

    socks = [admin_unix_socket(settings.socket, settings.socket_mode)]
    try:
        if settings.listener is not None:
            socks += tcp_sockets(*settings.listener.tcp)
    except BaseException:
        for sock in socks:
            sock.close()
        settings.socket.unlink(missing_ok=True)
        raise
    return socks


class AdminServer:
    def __init__(
        self,
        service: ApprovalService,
        socket_path: Path,
        socket_mode: int,
        listener: AdminListener | None = None,
        tls_context: ssl.SSLContext | None = None,
        tokens: TokenAuthenticator | None = None,
    ) -> None:
        self.service = service
        self.socket_path = socket_path
        self.socket_mode = socket_mode
        self.listener = listener
        self.tls_context = tls_context
        self.tokens = tokens
        self.tcp: tuple[str, int] | None = None  # the bound TLS address, once listening
        self._slots = trio.Semaphore(MAX_CONNECTIONS)

    async def bind(self) -> list[trio.abc.Listener[Any]]:
        unix = admin_unix_socket(self.socket_path, self.socket_mode)
        listeners: list[trio.abc.Listener[Any]] = [
            trio.SocketListener(trio.socket.from_stdlib_socket(unix))
        ]
        if self.listener is not None:
            host, port = self.listener.tcp
            tcp = await trio.open_tcp_listeners(port, host=host)
            name = tcp[0].socket.getsockname()
            self.tcp = (name[0], name[1])
            assert self.tls_context is not None
            listeners.extend(trio.SSLListener(t, self.tls_context) for t in tcp)
        return listeners

    def adopt(self, sockets: tuple[socket.socket, ...]) -> list[trio.abc.Listener[Any]]:
        """A worker's listeners: the sockets its supervisor bound (``admin_sockets``)."""
        listeners: list[trio.abc.Listener[Any]] = []
        for std in sockets:
            plain = trio.SocketListener(trio.socket.from_stdlib_socket(std))
            if std.family == socket.AF_UNIX:
                listeners.append(plain)
                continue
            if self.tcp is None:
                name = std.getsockname()
                self.tcp = (name[0], name[1])
            assert self.tls_context is not None
            listeners.append(trio.SSLListener(plain, self.tls_context))
        return listeners

    async def serve(self, listeners: list[trio.abc.Listener[Any]]) -> None:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept, listener, nursery)

    async def _accept(self, listener: trio.abc.Listener[Any], nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    log.error("admin accept: %s", exc)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        async with self._slots:
            try:
                with trio.move_on_after(REQUEST_TIMEOUT + MAX_WAIT):
                    reply = await self._reply(stream)
                    with trio.move_on_after(REQUEST_TIMEOUT):
                        await stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            except Exception:
                log.exception("admin request failed")
            finally:
                await trio.aclose_forcefully(stream)

    async def _reply(self, stream: trio.abc.Stream) -> bytes:
        try:
            request = await self._read(stream)
            approver = await self._approver(stream, request)
            return await self._route(request, approver)
        except HTTPError as exc:
            return error_response(exc.status, exc.message)
        except ApprovalFailed as exc:
            return error_response(exc.status, exc.message)

    async def _read(self, stream: trio.abc.Stream) -> Request:
        reader = RequestReader()
        with trio.move_on_after(REQUEST_TIMEOUT):
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    raise HTTPError(400, "the request ended early")
                request = reader.feed(data)
                if request is not None:
                    return request
        raise HTTPError(400, "the request did not arrive in time")

    async def _approver(self, stream: trio.abc.Stream, request: Request) -> Approver:
        if isinstance(stream, trio.SocketStream) and stream.socket.family == socket.AF_UNIX:
            return _peer_approver(stream.socket)
        if self.tokens is None:
            raise HTTPError(401, "this listener has no token issuers")
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPError(401, "send Authorization: Bearer <token> (a token from an issuer)")
        try:
            principal = await self.tokens.verify(token.strip())
        except Exception as exc:  # TokenRejected and its kind: never echo the token
            log.info("admin listener: token refused: %s", type(exc).__name__)
            raise HTTPError(401, "the token was not accepted") from None
        allowed = self.listener.issuers if self.listener is not None else ()
        if allowed and principal.issuer not in allowed:
            raise HTTPError(403, "tokens of this issuer may not approve here")
        return Approver(
            token_identity(principal), principal.name, principal.groups, "admin_listener"
        )

    async def _route(self, request: Request, approver: Approver) -> bytes:
        parts = [p for p in request.path.split("/") if p]
        service = self.service
        if parts[:1] != ["v1"]:
            raise HTTPError(404, "unknown path (the API is under /v1/)")
        parts = parts[1:]
        if parts == ["whoami"] and request.method == "GET":
            return response(200, approver.to_json())
        if parts[:1] != ["approvals"]:
            raise HTTPError(404, "unknown path")
        service.refresh()  # as one of several workers: what the others changed too
        if len(parts) == 1:
            if request.method != "GET":
                raise HTTPError(405, "use GET")
            return await self._list(request, approver)
        request_id = parts[1]
        if len(parts) == 2:
            if request.method != "GET":
                raise HTTPError(405, "use GET")
            found = service.store.requests.get(request_id)
            if found is None or not service.visible(found, approver):
                raise HTTPError(404, f"no approval {request_id}")
            return response(200, found.view())
        if len(parts) == 3 and parts[2] in ("approve", "deny"):
            if request.method != "POST":
                raise HTTPError(405, "use POST")
            body = request.json()
            reason = body.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise HTTPError(400, "reason must be a string")
            decided, outcome = await service.decide(
                request_id, approver, parts[2] == "approve", reason
            )
            return response(200, {"outcome": outcome, "approval": decided.view()})
        raise HTTPError(404, "unknown path")

    async def _list(self, request: Request, approver: Approver) -> bytes:
        state = request.query.get("state", [PENDING])[-1]
        wait = _number(request.query.get("wait", ["0"])[-1], "wait")
        after = _number(request.query.get("after", ["-1"])[-1], "after")
        if wait > 0 and after >= self.service.changes:
            with trio.move_on_after(min(wait, MAX_WAIT)):
                await self.service.changed.wait()
            self.service.refresh()
        requests = [
            r.view()
            for r in self.service.store.requests.values()
            if (state == "all" or r.state == state) and self.service.visible(r, approver)
        ]
        requests.sort(key=lambda r: r["asked_at"])
        return response(200, {"approvals": requests, "changes": self.service.changes})


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HTTPError(400, f"{name} must be a number") from None
    if value != value:  # NaN
        raise HTTPError(400, f"{name} must be a number")
    return value


def _peer_approver(sock: trio.socket.SocketType) -> Approver:
    """The OS user at the other end of a unix socket, and their groups."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, gid = struct.unpack("3i", creds)
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid{uid}"
        gids = [gid]
    else:
        gids = os.getgrouplist(name, gid)
    groups = []
    for g in dict.fromkeys(gids):
        try:
            groups.append(grp.getgrgid(g).gr_name)
        except KeyError:
            groups.append(f"gid{g}")
    return Approver(os_identity(name), name, tuple(groups), "unix_socket")
