"""Listeners, the connection cap and graceful shutdown.

Resource handling: ``GatewayServer.serve`` owns one nursery. Listener tasks run in their own
cancel scope so shutdown can stop accepting without touching sessions; each session task
owns its sockets (see ``Session``). Error handling: a failing session is logged and forgotten;
a listener that cannot bind fails ``serve`` before it reports ready.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from hoopy.config.model import Config, Listener, LoginMode
from hoopy.gateway import memory
from hoopy.gateway.admin import AdminServer
from hoopy.gateway.admission import (
    FrontConnectionIds,
    PendingLogins,
    SharedConnectionTable,
    TargetGreetings,
)
from hoopy.gateway.approvals import ApprovalService
from hoopy.gateway.audit_log import AuditLog
from hoopy.gateway.guardrails import Policies
from hoopy.gateway.idle import TargetWatcher
from hoopy.gateway.session import Session
from hoopy.gateway.throttle import LoginDelays
from hoopy.gateway.tls import ServerCertificate, ensure_server_certificate, server_context
from hoopy.gateway.tokenauth import TokenAuthenticator
from hoopy.wire import errors
from hoopy.wire.messages import build_err
from hoopy.wire.packets import frame

log = logging.getLogger("hoopy.server")

# accept() errors that mean "out of resources right now", as trio's serve_listeners treats
# them: log, sleep, retry instead of crashing the listener.
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


@dataclass
class BoundListener:
    config: Listener
    tcp: tuple[str, int] | None = None
    unix_socket: Path | None = None
    trio_listeners: list[trio.abc.Listener[Any]] = field(default_factory=list)
    tls_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class WorkerRole:
    """What a gateway that is worker ``number`` of ``count`` (gateway/workers.py) gets from its
    supervisor: the listening ``sockets`` (by listener name) to serve, the ``lifeline`` pipe
    (read end) whose closing means the supervisor is gone, the table through which the
    workers share their connection ids, the admin API's sockets (with approvals), and the
    holds the supervisor cancelled at start, for this worker to audit (given to one)."""

    number: int
    count: int
    sockets: dict[str, list[socket.socket]]
    lifeline: int
    shared_ids: SharedConnectionTable
    admin_sockets: tuple[socket.socket, ...] = ()
    stale_holds: tuple[tuple[str, str], ...] = ()

    @property
    def slot(self) -> tuple[int, int]:
        return self.number, self.count


class GatewayServer:
    def __init__(self, config: Config, *, worker: WorkerRole | None = None) -> None:
        """``worker``: set when this gateway is one of several (``[gateway] workers``)."""
        self.config = config
        self.worker = worker
        self.draining = False
        self.sessions: set[Session] = set()
        self.certificate: ServerCertificate | None = None
        self.bound: list[BoundListener] = []
        # The last greeting each target sent: what gateway-user and token clients are greeted
        # with before hoopy connects upstream, and what a refusal imitates when it is down.
        self.greetings = TargetGreetings()
        self.connection_ids = (
            FrontConnectionIds(worker.slot, worker.shared_ids)
            if worker is not None
            else FrontConnectionIds()
        )
        self.policies = Policies(config)  # guardrail rule sets and the shared analysis cache
        gw = config.gateway
        self.pending_logins = PendingLogins(
            gw.max_pending_logins, gw.max_pending_logins_per_address
        )
        self.tokens = TokenAuthenticator(config) if config.issuers else None
        self.audit: AuditLog | None = None
        # Review verdicts go to a human (needs the audit: approvals are evidence).
        self.approvals: ApprovalService | None = None
        self.admin: AdminServer | None = None
        # Watches idle TLS-client sessions' targets (gateway/idle.py); Linux only (epoll).
        self.target_watcher: TargetWatcher | None = None
        self.login_delays = LoginDelays(
            gw.login_delay_after_failures,
            gw.login_delay,
            gw.login_delay_max,
            gw.login_failures_forget_after,
        )

    def _tls_context_for(self, listener: Listener) -> ssl.SSLContext | None:
        if not listener.tls:
            return None
        if listener.tls_cert and listener.tls_key:
            return server_context(listener.tls_cert, listener.tls_key)
        if self.certificate is None:
            self.certificate = ensure_server_certificate(self.config.gateway.state_dir)
        return server_context(self.certificate.cert, self.certificate.key)

    async def _bind(self, listener: Listener) -> BoundListener:
        bound = BoundListener(config=listener, tls_context=self._tls_context_for(listener))
        if self.worker is not None:
            # A worker: the supervisor bound them, and removes the unix socket at the end.
            for std in self.worker.sockets[listener.name]:
                bound.trio_listeners.append(
                    trio.SocketListener(trio.socket.from_stdlib_socket(std))
                )
                if std.family == socket.AF_UNIX:
                    bound.unix_socket = listener.unix_socket
                elif bound.tcp is None:
                    name = std.getsockname()
                    bound.tcp = (name[0], name[1])
            return bound
        if listener.tcp:
            host, port = listener.tcp
            tcp = await trio.open_tcp_listeners(port, host=host)
            bound.trio_listeners.extend(tcp)
            sockname = tcp[0].socket.getsockname()
            bound.tcp = (sockname[0], sockname[1])
        if listener.unix_socket:
            sock = trio.socket.from_stdlib_socket(unix_listener(listener.unix_socket))
            bound.trio_listeners.append(trio.SocketListener(sock))
            bound.unix_socket = listener.unix_socket
        return bound

    def _admin_server(self, service: ApprovalService) -> AdminServer:
        settings = service.settings
        context = None
        if settings.listener is not None:
            if settings.listener.tls_cert and settings.listener.tls_key:
                context = server_context(settings.listener.tls_cert, settings.listener.tls_key)
            else:
                if self.certificate is None:
                    self.certificate = ensure_server_certificate(self.config.gateway.state_dir)
                context = server_context(self.certificate.cert, self.certificate.key)
        return AdminServer(
            service,
            settings.socket,
            settings.socket_mode,
            settings.listener,
            context,
            self.tokens,
        )

    def ready_info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "worker": self.worker.number if self.worker is not None else None,
            "listeners": [
                {
                    "name": b.config.name,
                    "target": b.config.target,
                    "tcp": list(b.tcp) if b.tcp else None,
                    "unix_socket": str(b.unix_socket) if b.unix_socket else None,
                    "tls": b.tls_context is not None,
                }
                for b in self.bound
            ],
            "tls_cert": str(self.certificate.cert) if self.certificate else None,
            "tls_cert_generated": self.certificate.generated if self.certificate else False,
            "admin": None
            if self.admin is None
            else {
                "unix_socket": str(self.admin.socket_path),
                "tcp": list(self.admin.tcp) if self.admin.tcp else None,
            },
        }

    async def serve(
        self,
        *,
        task_status: trio.TaskStatus[GatewayServer] = trio.TASK_STATUS_IGNORED,
        on_ready: Callable[[GatewayServer], None] | None = None,
    ) -> None:
        """Bind every listener, report ready, serve until cancelled or signalled, then drain."""
        if self.config.audit is not None:
            settings = self.config.audit
            key = settings.key.read() if settings.key is not None else None
            self.audit = AuditLog(
                settings, key, self.worker.slot if self.worker is not None else None
            )
            self.audit.open()  # AuditUnavailable: refuse to start rather than run unaudited
        admin_listeners: list[trio.abc.Listener[Any]] = []
        if self.config.approvals is not None and self.audit is not None:
            self.approvals = ApprovalService(
                self.config.approvals,
                self.audit,
                self.config.gateway.state_dir,
                worker=self.worker.number if self.worker is not None else None,
                stale=self.worker.stale_holds if self.worker is not None else (),
            )
            self.approvals.open()  # StoreError: refuse to start rather than lose decisions
            await self.approvals.take_over()
            self.admin = self._admin_server(self.approvals)
            admin_listeners = (
                self.admin.adopt(self.worker.admin_sockets)
                if self.worker is not None
                else await self.admin.bind()
            )
        for listener in self.config.listeners:
            self.bound.append(await self._bind(listener))
        try:
            async with trio.open_nursery() as nursery:
                accept_scope = trio.CancelScope()
                nursery.start_soon(self._accept_all, accept_scope, nursery)
                nursery.start_soon(self._watch_signals, accept_scope, nursery)
                if self.worker is not None:
                    nursery.start_soon(self._watch_supervisor, accept_scope, nursery)
                if self.audit is not None:
                    nursery.start_soon(self.audit.run_background_tasks)
                if self.approvals is not None and self.admin is not None:
                    nursery.start_soon(self.approvals.run)
                    nursery.start_soon(self.admin.serve, admin_listeners)
                for target in self.config.targets.values():
                    if target.login is not LoginMode.PASSTHROUGH:
                        # Learn the target's greeting now, so the first client is greeted
                        # like the target without waiting for it.
                        nursery.start_soon(
                            self.greetings.probe, target, self.config.gateway.max_statement_bytes
                        )
                if hasattr(select, "epoll"):
                    self.target_watcher = TargetWatcher()
                    nursery.start_soon(self.target_watcher.run)
                if self.config.gateway.idle_timeout:
                    nursery.start_soon(self._idle_watchdog, self.config.gateway.idle_timeout)
                if on_ready:
                    on_ready(self)
                task_status.started(self)
        finally:
            for b in self.bound:
                if b.unix_socket and self.worker is None:
                    b.unix_socket.unlink(missing_ok=True)
            await self.policies.aclose()
            if self.admin is not None and self.worker is None:
                self.admin.socket_path.unlink(missing_ok=True)
            if self.approvals is not None:
                self.approvals.close()
            if self.audit is not None:
                await self.audit.close()

    async def _accept_all(self, scope: trio.CancelScope, session_nursery: trio.Nursery) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                for bound in self.bound:
                    for listener in bound.trio_listeners:
                        nursery.start_soon(self._accept_loop, bound, listener, session_nursery)
        for bound in self.bound:
            for listener in bound.trio_listeners:
                await listener.aclose()

    async def _accept_loop(
        self, bound: BoundListener, listener: trio.abc.Listener[Any], session_nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                    log.error("accept on %s: %s; retrying in 100 ms", bound.config.name, exc)
                    await trio.sleep(0.1)
                    continue
                raise
            session_nursery.start_soon(self._handle, bound, stream)

    async def _handle(self, bound: BoundListener, stream: trio.abc.Stream) -> None:
        peer = _peer_name(stream)
        if isinstance(stream, trio.SocketStream) and stream.socket.family != socket.AF_UNIX:
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        if len(self.sessions) >= self.config.gateway.max_connections:
            log.warning("refusing %s: %d sessions open (max_connections)", peer, len(self.sessions))
            with trio.move_on_after(1):
                try:
                    data, _ = frame(
                        build_err(
                            errors.CON_COUNT.code,
                            errors.CON_COUNT.sqlstate,
                            "Too many connections",
                            protocol_41=False,
                        ),
                        0,
                    )
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
            await trio.aclose_forcefully(stream)
            return
        target = self.config.targets[bound.config.target]
        session = Session(self, target, stream, peer, bound.tls_context, bound.config)
        self.sessions.add(session)
        try:
            await session.run()
        except Exception:
            log.exception("session %s crashed", session.id)
        finally:
            self.sessions.discard(session)

    async def _idle_watchdog(self, idle_timeout: float) -> None:
        """End sessions that have waited for a command longer than ``idle_timeout``.

        One task for all sessions instead of a deadline per command: moving a cancel scope's
        deadline costs several microseconds, paid twice per statement. A session counts as
        idle from the first tick that sees it waiting with an unchanged command count, so a
        timeout fires between ``idle_timeout`` and ``idle_timeout + tick`` after the last
        command.
        """
        tick = min(max(idle_timeout / 10, 0.05), 60.0)
        seen: dict[Session, tuple[int, float]] = {}
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            current: dict[Session, tuple[int, float]] = {}
            for session in self.sessions:
                count, since = seen.get(session, (-1, now))
                if not session.waiting or count != session.commands:
                    current[session] = (session.commands, now)
                elif now - since >= idle_timeout and session.end_if_idle():
                    log.info("session %s: idle for %gs, closing", session.id, idle_timeout)
                else:
                    current[session] = (count, since)
            seen = current

    async def _watch_signals(self, accept_scope: trio.CancelScope, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("%s: shutting down", signal.Signals(signum).name)
                await self.shutdown(accept_scope, nursery)
                return

    async def _watch_supervisor(
        self, accept_scope: trio.CancelScope, nursery: trio.Nursery
    ) -> None:
        """A worker whose supervisor is gone (killed: it never got to stop its workers)
        shuts down as on SIGTERM: nobody would restart it or tidy up after it."""
        assert self.worker is not None
        await trio.lowlevel.wait_readable(self.worker.lifeline)  # readable only at EOF
        log.warning("the supervisor process is gone: shutting down")
        await self.shutdown(accept_scope, nursery)

    async def shutdown(self, accept_scope: trio.CancelScope, nursery: trio.Nursery) -> None:
        """Stop accepting, let running statements finish, then cut what is left."""
        accept_scope.cancel()
        self.draining = True
        if self.approvals is not None:
            # Held statements are answered now, not cut with their sessions.
            await self.approvals.cancel_holds("the gateway is shutting down")
        for session in list(self.sessions):
            if session.waiting and session.idle_scope is not None:
                session.idle_scope.cancel()  # sessions waiting for a command end now
        grace = self.config.gateway.shutdown_grace
        with trio.move_on_after(grace):
            while self.sessions:
                await trio.sleep(0.05)
        if self.sessions:
            log.warning("%d sessions still busy after %gs: closing them", len(self.sessions), grace)
        nursery.cancel_scope.cancel()


def unix_listener(path: Path, mode: int = 0o666) -> socket.socket:
    """A listening unix socket at ``path`` with file mode ``mode`` (a stale one left there is
    replaced; OSError when another process serves it). The default: anyone may connect, and
    access is decided by authentication (the admin API passes 0600-like modes)."""
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Created with no permissions for anyone, then opened to ``mode``: there is no
        # moment when others could connect.
        old = os.umask(0o777)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, mode)
        sock.listen(socket.SOMAXCONN)
    except BaseException:
        sock.close()
        raise
    return sock


def write_ready_file(path: Path, info: dict[str, Any]) -> None:
    """``--ready-file``: written whole or not at all (scripts poll for it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def remove_stale_socket(path: Path) -> None:
    """A unix socket left by a previous run is removed, only if nobody answers there."""
    if not path.is_socket():
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
    else:
        raise OSError(errno.EADDRINUSE, f"another process is serving {path}")
    finally:
        probe.close()


def _peer_name(stream: trio.abc.Stream) -> str:
    if isinstance(stream, trio.SocketStream):
        try:
            name = stream.socket.getpeername()
        except OSError:
            return "unknown"
        if isinstance(name, tuple):
            return f"{name[0]}:{name[1]}"
        return "unix-socket"
    return "unknown"


async def run_gateway(
    config: Config,
    *,
    ready_file: Path | None = None,
    on_ready: Callable[[GatewayServer], None] | None = None,
    worker: WorkerRole | None = None,
) -> None:
    memory.map_large_blocks()
    server = GatewayServer(config, worker=worker)

    def ready(srv: GatewayServer) -> None:
        if ready_file is not None:
            write_ready_file(ready_file, srv.ready_info())
        if on_ready:
            on_ready(srv)

    await server.serve(on_ready=ready)
