"""Several gateway processes on the same listeners: ``[gateway] workers = N``.

One process runs the gateway on one core (its event loop is one thread). With ``workers`` above
1, ``hoopy serve`` becomes a supervisor: it binds every listener itself, then forks N workers,
each a whole gateway (``server.run_gateway``) accepting on those same sockets. The kernel gives
each new connection to one of the workers waiting in ``accept``: one that is busy relaying
gets there later, so the idle ones take more. A session stays in the worker that accepted it.

Why shared sockets rather than one ``SO_REUSEPORT`` socket per worker: a connection queued on
a reuseport socket is lost with its worker, and the kernel spreads connections by a hash of
their addresses, not by how busy a worker is; and unix sockets have no reuseport at all.
Sockets the supervisor holds outlive any worker, so a worker that dies loses its own sessions
and nothing queued: the next ``accept`` is another worker's.

Each worker keeps its own audit chain, ``<audit directory>/worker-K`` (its own head state
``<head>.worker-K``); every reader (``hoopy sessions``, ``audit search``, ``replay``,
``verify``) reads the directory as one trail (``hoopy/audit/lines.py``, ``audit_trails``).
Each ``file_start`` names its worker and how many there are, so ``verify`` reports a
worker's chain that was removed whole.

With approvals, the workers share one store (``ApprovalStore(shared=True)``): the supervisor
opens it first, as a single gateway would (compacting the journal, cancelling the holds the
last run left; worker 1 audits those), and binds the admin API's sockets, which every worker
serves. A decision taken through any worker reaches the worker holding the statement; see
``hoopy/approvals/store.py``.

The supervisor runs no event loop: signals are blocked and taken with ``sigtimedwait``.
A worker that exits while the gateway is not stopping is started again (after 0.5 s, doubling
while it keeps failing within a minute, at most 30 s); the others keep serving. SIGTERM or
SIGINT to the supervisor is passed to every worker as SIGTERM (each drains as a single gateway
does, within ``shutdown_grace``); workers are in their own process group, so a terminal's
Ctrl-C reaches only the supervisor. A worker whose supervisor is killed outright sees its
lifeline pipe close and shuts down the same way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from hoopy.approvals.store import ApprovalStore
from hoopy.config.model import Config
from hoopy.gateway.admin import admin_sockets
from hoopy.gateway.admission import SharedConnectionTable
from hoopy.gateway.approvals import approvals_directory
from hoopy.gateway.audit_log import lock_directory
from hoopy.gateway.server import WorkerRole, run_gateway, unix_listener, write_ready_file
from hoopy.gateway.tls import ensure_server_certificate

log = logging.getLogger("hoopy.workers")

SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
READY_TIMEOUT = 60.0  # a worker not listening by then is a failed start
RESTART_FIRST_DELAY = 0.5
RESTART_MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a worker that lived this long restarts after the first delay again
KILL_AFTER_GRACE = 10.0  # workers still there this long after shutdown_grace get SIGKILL


@dataclass
class Worker:
    number: int
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    failures: int = 0  # exits in a row, each within STABLE_AFTER of its start
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Runs ``config.gateway.workers`` gateway processes; ``run`` returns the exit status."""

    config: Config
    ready_file: Path | None = None
    on_ready: Callable[[dict[str, Any]], None] | None = None
    workers: list[Worker] = field(default_factory=list)
    sockets: dict[str, list[socket.socket]] = field(default_factory=dict)
    admin_sockets: list[socket.socket] = field(default_factory=list)
    stopping: bool = False
    interrupted: bool = False  # SIGINT/SIGTERM came before every worker was ready

    def run(self) -> int:
        count = self.config.gateway.workers
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        self._tmp = Path(tempfile.mkdtemp(prefix="hoopy-workers-"))
        lifeline_r, self._lifeline_w = os.pipe()
        self._lifeline_r = lifeline_r
        self._lock_fd: int | None = None
        try:
            if self.config.audit is not None:
                # The directory is the workers' together: no single gateway may write it too.
                self._lock_fd = lock_directory(self.config.audit.directory)
            self._stale_holds = open_approval_store(self.config)
            self.sockets = bind_listeners(self.config)
            if self.config.approvals is not None:
                self.admin_sockets = admin_sockets(self.config.approvals)
            self._generated = generate_certificate(self.config)
            # Before the forks: every worker maps the same pages.
            self._shared_ids = SharedConnectionTable(count, self.config.gateway.max_connections)
            self.workers = [Worker(k) for k in range(1, count + 1)]
            for worker in self.workers:
                self._start(worker)
            if not self._wait_ready():
                self._stop()
                return 0 if self.interrupted else 1
            info = self._ready_info()
            if self.ready_file is not None:
                write_ready_file(self.ready_file, info)
            if self.on_ready is not None:
                self.on_ready(info)
            self._supervise()
            return 0
        finally:
            self._stop()
            self._close_sockets()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            os.close(self._lifeline_w)
            os.close(lifeline_r)
            shutil.rmtree(self._tmp, ignore_errors=True)

    # --- workers ---------------------------------------------------------------------------

    def _worker_ready_file(self, worker: Worker) -> Path:
        return self._tmp / f"worker-{worker.number}.json"

    def _start(self, worker: Worker) -> None:
        ready = self._worker_ready_file(worker)
        ready.unlink(missing_ok=True)
        self._shared_ids.clear(worker.number)  # a dead predecessor's sessions are gone
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                code = self._worker_main(worker, ready)
            finally:
                os._exit(code)
        with contextlib.suppress(OSError):  # the child does it too: whichever runs first
            os.setpgid(pid, pid)
        if worker.number == 1:
            self._stale_holds = ()  # worker 1's first start records them; a restart does not
        worker.pid, worker.started, worker.ready, worker.restart_at = (
            pid,
            time.monotonic(),
            False,
            None,
        )
        log.info("worker %d started (pid %d)", worker.number, pid)

    def _worker_main(self, worker: Worker, ready: Path) -> int:
        try:
            os.setpgid(0, 0)  # a terminal's Ctrl-C is the supervisor's to pass on
            os.close(self._lifeline_w)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            tag_log_records(f"w{worker.number}")
            role = WorkerRole(
                worker.number,
                len(self.workers),
                self.sockets,
                self._lifeline_r,
                self._shared_ids,
                admin_sockets=tuple(self.admin_sockets),
                stale_holds=self._stale_holds if worker.number == 1 else (),
            )
            trio.run(lambda: run_gateway(self.config, ready_file=ready, worker=role))
            return 0
        except KeyboardInterrupt:
            return 0
        except BaseException as exc:  # the process ends here either way
            with contextlib.suppress(Exception):
                log.error("worker %d: cannot serve: %s", worker.number, exc)
            return 1
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()

    def _wait_ready(self) -> bool:
        """Until every worker listens; False (logged) when one ends first or times out."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            for worker in self.workers:
                if not worker.ready and self._worker_ready_file(worker).exists():
                    worker.ready = True
            if all(w.ready for w in self.workers):
                return True
            failed = False
            for dead, _, status in self._reap_workers():
                log.error(
                    "worker %d exited before it was ready (%s): stopping",
                    dead.number,
                    describe_status(status),
                )
                failed = True
            if failed:
                return False
            if time.monotonic() > deadline:
                log.error("workers not ready after %gs: stopping", READY_TIMEOUT)
                return False
            signum = signal.sigtimedwait(SIGNALS, 0.05)
            if signum is not None and signum.si_signo != signal.SIGCHLD:
                log.info(
                    "%s before the workers were ready: stopping",
                    signal.Signals(signum.si_signo).name,
                )
                self.interrupted = True
                return False

    def _supervise(self) -> None:
        while True:
            waits = [w.restart_at - time.monotonic() for w in self.workers if w.restart_at]
            timeout = max(0.0, min([1.0, *waits]))
            signum = signal.sigtimedwait(SIGNALS, timeout)
            if signum is not None and signum.si_signo in (signal.SIGINT, signal.SIGTERM):
                log.info("%s: shutting down the workers", signal.Signals(signum.si_signo).name)
                return
            for worker, pid, status in self._reap_workers():
                lived = time.monotonic() - worker.started
                if self.ready_file is not None:
                    write_ready_file(self.ready_file, self._ready_info())
                worker.failures = worker.failures + 1 if lived < STABLE_AFTER else 1
                delay = min(RESTART_MAX_DELAY, RESTART_FIRST_DELAY * 2 ** (worker.failures - 1))
                worker.restart_at = time.monotonic() + delay
                log.error(
                    "worker %d (pid %d) %s after %.1fs; its sessions are gone, the other "
                    "workers keep serving; restarting it in %gs",
                    worker.number,
                    pid,
                    describe_status(status),
                    lived,
                    delay,
                )
            now = time.monotonic()
            for worker in self.workers:
                if worker.restart_at is not None and now >= worker.restart_at:
                    try:
                        self._start(worker)
                    except OSError as exc:  # fork failed (out of processes or memory)
                        worker.failures += 1
                        worker.restart_at = now + RESTART_MAX_DELAY
                        log.error(
                            "cannot restart worker %d: %s; trying again in %gs",
                            worker.number,
                            exc,
                            RESTART_MAX_DELAY,
                        )
            for worker in self.workers:
                if worker.pid and not worker.ready and self._worker_ready_file(worker).exists():
                    worker.ready = True
                    if self.ready_file is not None:
                        write_ready_file(self.ready_file, self._ready_info())

    def _stop(self) -> None:
        """SIGTERM to every worker; wait for them (SIGKILL after the grace)."""
        if self.stopping:
            return
        self.stopping = True
        running = [w for w in self.workers if w.pid]
        for worker in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        # Stop taking connections now, as a single gateway does: the workers close their
        # copies as they start draining, and a successor may bind the addresses.
        self._close_sockets()
        deadline = time.monotonic() + self.config.gateway.shutdown_grace + KILL_AFTER_GRACE
        while any(w.pid for w in self.workers):
            self._reap_workers()
            if not any(w.pid for w in self.workers):
                break
            if time.monotonic() > deadline:
                for worker in self.workers:
                    if worker.pid:
                        log.error("worker %d did not stop: killing it", worker.number)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(worker.pid, signal.SIGKILL)
                deadline = time.monotonic() + KILL_AFTER_GRACE
            signal.sigtimedwait(SIGNALS, 0.05)

    def _reap_workers(self) -> list[tuple[Worker, int, int]]:
        """Workers that have exited (each then has ``pid`` 0), with the pid they had and
        their wait status."""
        done = []
        for worker in self.workers:
            if not worker.pid:
                continue
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already: gone all the same
                pid, status = worker.pid, 0
            if pid:
                worker.pid = 0
                done.append((worker, pid, status))
        return done

    def _close_sockets(self) -> None:
        for socks in (*self.sockets.values(), self.admin_sockets):
            for sock in socks:
                if sock.fileno() < 0:
                    continue
                if sock.family == socket.AF_UNIX:
                    with contextlib.suppress(OSError):
                        os.unlink(sock.getsockname())
                sock.close()

    def _ready_info(self) -> dict[str, Any]:
        """Worker 1's listeners (all workers serve the same), the supervisor's pid and each
        worker's."""
        first: dict[str, Any] = {}
        for worker in self.workers:  # one that is running (a restarted one may not be yet)
            try:
                first = json.loads(self._worker_ready_file(worker).read_text())
                break
            except (OSError, ValueError):
                continue
        return {
            **first,
            "tls_cert_generated": self._generated,
            "pid": os.getpid(),
            "worker": None,
            "workers": [{"worker": w.number, "pid": w.pid or None} for w in self.workers],
        }


def tag_log_records(tag: str) -> None:
    """Every log record of this process names its worker: ``hoopy.session[w2]: ...``."""
    make = logging.getLogRecordFactory()

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.name = f"{record.name}[{tag}]"
        return record

    logging.setLogRecordFactory(tagged)


def open_approval_store(config: Config) -> tuple[tuple[str, str], ...]:
    """Open the workers' approval store once before they start, as a single gateway opens
    its own: the journal compacted, the last run's holds cancelled. Those holds' (id,
    reason), which worker 1 audits. StoreError: the gateway does not start."""
    if config.approvals is None or config.audit is None:
        return ()
    store = ApprovalStore(approvals_directory(config.approvals, config.gateway.state_dir))
    try:
        return tuple((r.id, str(r.reason)) for r in store.open())
    finally:
        store.close()


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def bind_listeners(config: Config) -> dict[str, list[socket.socket]]:
    """Every listener's sockets, bound and listening (OSError: the address is in use...)."""
    bound: dict[str, list[socket.socket]] = {}
    try:
        for listener in config.listeners:
            socks = bound[listener.name] = []
            if listener.tcp:
                socks += tcp_sockets(*listener.tcp)
            if listener.unix_socket:
                socks.append(unix_listener(listener.unix_socket))
    except BaseException:
        for socks in bound.values():
            for sock in socks:
                sock.close()
        raise
    return bound


def tcp_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` has (as trio.open_tcp_listeners binds
    them); port 0 picks one port for all of them."""
    infos = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                address = (address[0], socks[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and len(infos) > 1:
                    socks.pop().close()  # e.g. ::1 on a host without IPv6
                    continue
                raise
            sock.listen(socket.SOMAXCONN)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if not socks:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot listen on {host}:{port}")
    return socks


def generate_certificate(config: Config) -> bool:
    """The generated TLS certificate, made before the workers would race to make it (the
    audit directory is made by ``lock_directory``). Whether it was generated now."""
    if any(lst.tls and not (lst.tls_cert and lst.tls_key) for lst in config.listeners):
        return ensure_server_certificate(config.gateway.state_dir).generated
    return False
