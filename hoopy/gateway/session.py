"""One client session: login, then the command loop that relays each command's response.

Resource handling: a session owns its client stream and its upstream connection and closes
both on every exit path. Error handling: anything that goes wrong ends this session only;
the client gets a MySQL ERR when the protocol state still allows one.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import trio
from mysql_mimic.auth import Forbidden

from hoopy.audit.writer import AuditUnavailable
from hoopy.config.model import Listener, LoginMode, SecretUnavailable, Target
from hoopy.gateway import offload, sql_checks
from hoopy.gateway.admission import PRE_AUTH_MAX_PAYLOAD, kill_target
from hoopy.gateway.compressed import CompressedPacketStream
from hoopy.gateway.frontdoor import (
    HOOPY_ATTR_PREFIX,
    LoginContext,
    LoginFailed,
    LoginResult,
    authorize,
    log_in,
    refuse_after_greeting,
    relay_auth_exchange,
    run_auth_plugins,
    target_login_failed,
    users_plugins,
)
from hoopy.gateway.guardrails import SessionGuardrails, may_switch_to_multibyte
from hoopy.gateway.idle import IdleWatch, TargetEnded
from hoopy.gateway.masked_relay import MASKED_COMMANDS, masking_refusal, relay_masked
from hoopy.gateway.refusal import LongData, refusal_reply
from hoopy.gateway.review import review
from hoopy.gateway.session_audit import SessionAudit
from hoopy.gateway.stream import ConnectionClosed, PacketStream
from hoopy.gateway.upstream import UpstreamConnection, UpstreamError, UpstreamRefused
from hoopy.identity.principal import Principal
from hoopy.identity.static import FastAuthSuccess
from hoopy.policy.masking import MaskingPlan, MaskingPolicy
from hoopy.policy.rules import Action, GuardrailVerdict
from hoopy.sql.lexer import ServerVersion
from hoopy.wire import errors
from hoopy.wire.command import ClientCommand, PreparedStatement, SessionCommands
from hoopy.wire.compress import CompressionError
from hoopy.wire.errors import ErrorKind
from hoopy.wire.handshake import (
    AUTH_MORE_DATA_HEADER,
    CLIENT_CONNECT_ATTRS,
    CLIENT_QUERY_ATTRIBUTES,
    FAST_AUTH_SUCCESS,
    ChangeUser,
    build_change_user,
    parse_change_user,
)
from hoopy.wire.login import initial_auth_response
from hoopy.wire.messages import build_err
from hoopy.wire.packets import Packet, ProtocolError, frame
from hoopy.wire.params import bind_types
from hoopy.wire.response import (
    COM_CHANGE_USER,
    COM_PING,
    COM_PROCESS_KILL,
    COM_QUERY,
    COM_QUIT,
    COM_RESET_CONNECTION,
    COM_STMT_EXECUTE,
    COM_STMT_PREPARE,
    COMMAND_NAMES,
    NO_RESPONSE_COMMANDS,
    ResponseSummary,
    ResponseTracker,
)

if TYPE_CHECKING:
    from hoopy.approvals.store import ApprovalRequest
    from hoopy.gateway.server import GatewayServer

log = logging.getLogger("hoopy.session")

# Commands hoopy relays. Replication (COM_BINLOG_DUMP, COM_REGISTER_SLAVE), COM_CONNECT,
# COM_TIME, COM_DELAYED_INSERT and MariaDB's COM_STMT_BULK_EXECUTE (only with a capability
# hoopy never offers) are answered with ER_UNKNOWN_COM_ERROR.
RELAYED_COMMANDS = frozenset(COMMAND_NAMES) - {0x00}

# COM_QUERY payloads longer than this are never a bare KILL statement worth mapping.
_KILL_MAX = 4200
# The first byte of a COM_QUERY's SQL that may begin a KILL (the keyword, a comment or
# space): one byte test keeps every other statement off the KILL mapping's path.
_KILL_FIRST = frozenset(b"kK/#- \t\r\n")

_next_session_number = 0


def _new_session_id() -> str:
    """Sortable, unique across restarts and instances: time, then random."""
    import secrets

    return f"{int(time.time() * 1000):x}-{secrets.token_hex(4)}"


class SessionEnded(Exception):
    """End the session (the reason has been logged / told to the client)."""


@dataclass
class SessionStats:
    statements: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)


class Session:
    def __init__(
        self,
        server: GatewayServer,
        target: Target,
        stream: trio.abc.Stream,
        peer: str,
        tls_context: ssl.SSLContext | None,
        listener: Listener,
    ) -> None:
        self.server = server
        self.target = target
        self.listener = listener
        self.unix_socket = (
            isinstance(stream, trio.SocketStream) and stream.socket.family == socket.AF_UNIX
        )
        self.id = _new_session_id()
        self.peer = peer
        self.peer_host = peer.rsplit(":", 1)[0]
        # Small packets until the client has logged in; max_statement_bytes after.
        self.client = PacketStream(stream, PRE_AUTH_MAX_PAYLOAD)
        self.tls_context = tls_context
        self.upstream: UpstreamConnection | None = None
        self.login: LoginResult | None = None
        self.stats = SessionStats()
        self.idle_scope: trio.CancelScope | None = None
        self.waiting = False  # between commands, waiting for the client
        self.commands = 0  # commands received (the idle watchdog watches it move)
        self.idled_out = False
        self.end_reason = "client quit"
        self.audit: SessionAudit | None = None  # set once logged in, when auditing
        self.front_id: int | None = None  # the connection id hoopy greeted with, if its own
        self._query_attributes = False  # CLIENT_QUERY_ATTRIBUTES: SQL starts after them
        # The target's flavour and version, for reading executable comments (set at login).
        self.server_version: ServerVersion | None = None
        # Every command decoded once, and the state that needs (wire/command.py); set up at
        # login with the negotiated capabilities.
        self.command_state = SessionCommands(0)
        self.long_data = LongData(self.command_state)  # long data hoopy broke (gateway/refusal.py)
        self.guardrails: SessionGuardrails | None = None  # when rule sets apply (set at login)
        # When masking sets apply (set at login): results go through gateway/masked_relay.py.
        self.masking: MaskingPolicy | None = None
        self.cursor_plans: dict[int, MaskingPlan] = {}  # open cursors' masking plans
        # The last statement read masked columns: SHOW WARNINGS hides its messages.
        self.diagnostics_masked = False

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if not await self._connect_and_log_in():
                return
            assert self.login is not None
            self._start_compression()
            principal = self.login.principal
            log.info(
                "session %s: %s (%s%s%s) from %s on target %s%s",
                self.id,
                principal.name,
                principal.method,
                f" from {principal.issuer}" if principal.issuer else "",
                f", roles {','.join(principal.roles)}" if principal.roles else "",
                self.peer,
                self.target.name,
                " over TLS" if self.login.client_tls else "",
            )
            self.command_state.capabilities = self.login.capabilities
            self.command_state.database = self.login.database or None
            self.command_state.charset(self.login.charset)
            audit_settings = self.server.config.audit
            if self.server.audit is not None and audit_settings is not None:
                self.audit = SessionAudit(
                    self.server.audit,
                    self.id,
                    audit_settings,
                    self.login.capabilities,
                    self.server_version,
                    self.command_state,
                )
                self.audit.session_start(
                    principal,
                    client=self.peer,
                    tls=self.login.client_tls,
                    capabilities=self.login.capabilities,
                    target=self.target.name,
                    database=self.login.database,
                    connect_attrs=self.login.connect_attrs,
                )
            self._set_guardrails()
            await self._command_loop()
        except SessionEnded:
            pass
        except ConnectionClosed as exc:
            self.end_reason = f"connection closed: {exc}"
        except ProtocolError as exc:
            self.end_reason = f"protocol error: {exc}"
            log.warning("session %s: protocol error: %s", self.id, exc)
        finally:
            if self.front_id is not None:
                self.server.connection_ids.unregister(self.front_id)
            with trio.CancelScope(shield=True):
                await self.client.aclose()
                if self.upstream is not None:
                    await self.upstream.packets.aclose()
            if self.audit is not None:
                self.audit.session_end(
                    self.end_reason,
                    self.stats.statements,
                    self.stats.errors,
                    time.monotonic() - self.stats.started,
                )
            if self.login is not None:
                log.info(
                    "session %s ended: %s (%d statements, %.1fs)",
                    self.id,
                    self.end_reason,
                    self.stats.statements,
                    time.monotonic() - self.stats.started,
                )

    def _set_guardrails(self) -> None:
        """The rule sets for this target and principal (none: no analysis at all)."""
        assert self.login is not None
        policies = self.server.policies
        self.masking = policies.masking(self.target, self.login.principal)
        self.cursor_plans.clear()
        policy = policies.for_session(self.target, self.login.principal)
        self.guardrails = (
            None
            if policy is None
            else SessionGuardrails(
                policies, policy, self.server_version, self.command_state, self.target
            )
        )

    def _login_context(self, deadline: trio.CancelScope | None) -> LoginContext:
        return LoginContext(
            config=self.server.config,
            target=self.target,
            listener=self.listener,
            tls_context=self.tls_context,
            peer=self.peer,
            address=self.peer_host,
            unix_socket=self.unix_socket,
            tokens=self.server.tokens,
            delays=self.server.login_delays,
            deadline=deadline,
        )

    async def _open_upstream(self) -> UpstreamConnection:
        upstream = await UpstreamConnection.open(
            self.target, self.server.config.gateway.max_statement_bytes
        )
        self.server.greetings.remember(self.target.name, upstream.greeting)
        return upstream

    async def _connect_and_log_in(self) -> bool:
        gw = self.server.config.gateway
        with trio.move_on_after(gw.handshake_timeout) as scope:
            ctx = self._login_context(scope)
            try:
                if self.target.login is LoginMode.PASSTHROUGH:
                    await self._log_in_passthrough(ctx)
                else:
                    # Log in first, connect upstream after: a client that never proves who it
                    # is costs the target nothing (DESIGN.md, rule 10).
                    profile = await self.server.greetings.probe(self.target, gw.max_statement_bytes)
                    self.front_id = self.server.connection_ids.allocate()
                    self.login, self.upstream = await log_in(
                        ctx,
                        self.client,
                        profile=profile,
                        connection_id=self.front_id,
                        open_upstream=self._open_upstream,
                    )
                    self.server.connection_ids.register(
                        self.front_id, self.target.name, self.upstream.greeting.connection_id
                    )
            except LoginFailed as exc:
                log.warning(
                    "session %s from %s: login refused: %s", self.id, self.peer, exc.message
                )
                if exc.counts and exc.user is not None:
                    self.server.login_delays.failed(exc.user, self.peer_host)
                if not exc.relayed:
                    await self._send_error_quietly(exc.kind, exc.message, exc.seq)
                return False
            except ProtocolError as exc:
                log.info("session %s from %s: bad handshake: %s", self.id, self.peer, exc)
                await self._send_error_quietly(errors.HANDSHAKE, f"Bad handshake: {exc}", 2)
                return False
            except ConnectionClosed as exc:
                log.info("session %s from %s: handshake abandoned: %s", self.id, self.peer, exc)
                return False
            assert self.login is not None
            self.server.login_delays.succeeded(self.login.username, self.peer_host)
            self.client.max_payload = gw.max_statement_bytes
            self._query_attributes = bool(self.login.capabilities & CLIENT_QUERY_ATTRIBUTES)
            assert self.upstream is not None
            self.server_version = sql_checks.server_version(self.upstream.greeting)
            return True
        assert scope.cancelled_caught
        log.info("session %s from %s: handshake timed out", self.id, self.peer)
        return False

    async def _log_in_passthrough(self, ctx: LoginContext) -> None:
        """The target authenticates the client, so its greeting comes first: each login in
        flight holds an upstream connection, and ``pending_logins`` bounds how many."""
        gw = self.server.config.gateway
        pending = self.server.pending_logins
        with trio.move_on_after(gw.handshake_timeout / 2) as wait:
            await pending.acquire(self.peer_host)
        if wait.cancelled_caught:
            log.warning(
                "session %s: refusing %s: %d passthrough logins in progress from it, %d in all "
                "(max_pending_logins_per_address, max_pending_logins)",
                self.id,
                self.peer,
                pending.in_flight(self.peer_host),
                pending.in_flight(),
            )
            await refuse_after_greeting(
                self.client,
                self.server.greetings.get(self.target.name),
                self.tls_context,
                errors.CON_COUNT,
                "Too many connections: hoopy has too many logins in progress from this "
                "address; try again shortly",
            )
        with pending.held(self.peer_host):
            try:
                self.upstream = await self._open_upstream()
            except UpstreamError as exc:
                log.warning("session %s from %s: %s", self.id, self.peer, exc.message)
                await refuse_after_greeting(
                    self.client,
                    self.server.greetings.get(self.target.name),
                    self.tls_context,
                    ErrorKind(exc.code, exc.sqlstate),
                    exc.message,
                )
            self.login, _ = await log_in(ctx, self.client, upstream=self.upstream)

    def _start_compression(self) -> None:
        """From the login's OK on, the client leg speaks the compressed protocol if the
        client asked for it (the upstream leg never does: gateway/compressed.py)."""
        assert self.login is not None
        if self.login.compression is not None:
            self.client = CompressedPacketStream(
                self.client,
                self.login.compression,
                self.server.config.gateway.max_statement_bytes,
            )

    async def _send_error_quietly(self, kind: ErrorKind, message: str, seq: int) -> None:
        with trio.move_on_after(1):
            with contextlib.suppress(ConnectionClosed):
                await self.client.send_payload(build_err(kind.code, kind.sqlstate, message), seq)

    # --- command phase -------------------------------------------------------------------

    async def _command_loop(self) -> None:
        assert self.upstream is not None and self.login is not None
        # While waiting for a command, watch the target too (gateway/idle.py).
        idle = IdleWatch(
            self.client, self.upstream.packets, self.target.name, self.server.target_watcher
        )
        # The server's idle watchdog and its shutdown cancel this scope, but only while the
        # session is ``waiting`` for a command: a running statement is never cut here.
        try:
            with trio.CancelScope() as scope:
                self.idle_scope = scope
                while not self.server.draining:
                    self.waiting = True
                    try:
                        packet = await idle.next_command()
                    except ProtocolError as exc:
                        kind = (
                            errors.NET_UNCOMPRESS
                            if isinstance(exc, CompressionError)
                            else errors.PACKET_TOO_LARGE
                        )
                        await self._send_error_quietly(kind, f"hoopy: {exc}", 1)
                        raise
                    finally:
                        self.waiting = False
                    if isinstance(packet, TargetEnded):
                        await self._target_ended(packet)
                    if scope.cancel_called:
                        break  # the timeout or shutdown came as the command arrived: drop it
                    self.commands += 1
                    if not packet.payload:
                        raise ProtocolError("empty command packet")
                    await self._command(packet)
        finally:
            idle.close()
        self.idle_scope = None
        if self.server.draining:
            self.end_reason = "gateway shutting down"
        elif self.idled_out:
            self.end_reason = f"idle for {self.server.config.gateway.idle_timeout:g}s"

    async def _target_ended(self, ended: TargetEnded) -> NoReturn:
        """The target ended the session while it was idle: pass on its ERR, then close."""
        self.end_reason = ended.reason
        if ended.violation:
            log.warning("session %s: %s", self.id, ended.reason)
        else:
            log.info("session %s: %s", self.id, ended.reason)
        if ended.relay is not None:
            with trio.move_on_after(1), contextlib.suppress(ConnectionClosed):
                await self.client.send_raw(ended.relay)
        raise SessionEnded

    def end_if_idle(self) -> bool:
        """Called by the server's watchdog: end the session if it is waiting for a command."""
        if self.waiting and self.idle_scope is not None:
            self.idled_out = True
            self.idle_scope.cancel()
            return True
        return False

    async def _command(self, packet: Packet) -> None:
        assert self.upstream is not None and self.login is not None
        command = packet.payload[0]
        if command == COM_QUIT:  # not a statement: nothing to refuse or record
            await self._forward_quietly(packet.raw)
            raise SessionEnded
        self.stats.statements += 1
        expires_at = self.login.principal.expires_at
        if (
            expires_at is not None
            and time.time() >= expires_at
            and self.server.config.gateway.on_token_expiry == "close"
        ):
            # The statement that was running when the token expired has finished; this one
            # is refused and the session ends (docs/security.md).
            self.end_reason = "token expired"
            log.info("session %s: token of %s expired", self.id, self.login.principal.name)
            if await self._deny(
                packet,
                "token_expired",
                errors.ACCESS_DENIED,
                "hoopy: this session's token has expired; reconnect with a fresh token",
            ):
                raise SessionEnded
            return  # dropped unanswered; the next command that has a response says why
        if command not in RELAYED_COMMANDS:
            await self._deny(
                packet,
                "unrelayed_command",
                errors.UNKNOWN_COMMAND,
                f"hoopy does not relay command 0x{command:02x}",
            )
            return
        decoded = self.command_state.decode(packet.payload)
        verdict: GuardrailVerdict | None = None
        approved: ApprovalRequest | None = None  # the approval this statement runs under
        record: dict[str, Any] | None = None  # its audit record, when the review built it
        review_at_execute = False
        if self.guardrails is not None:
            try:
                verdict = (
                    self.guardrails.judge_now(decoded)
                    if len(packet.payload) < offload.OFF_LOOP_BYTES  # most: no coroutine
                    and self.guardrails.estimator is None
                    else await self.guardrails.judge(decoded)
                )
            except Exception as exc:  # a bug must refuse the statement, not end the session
                # Where, not what: an exception's message may quote the statement's text.
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                log.error(
                    "session %s: cannot evaluate the guardrails: %s at %s:%d",
                    self.id,
                    type(exc).__name__,
                    frame.filename,
                    frame.lineno,
                )
                await self._deny(
                    packet,
                    "guardrail_error",
                    errors.GUARDRAIL,
                    "hoopy could not evaluate its guardrails for this statement, so it was "
                    "not run (the gateway log has the details)",
                    command=decoded,
                )
                return
            if verdict is not None and verdict.refused:
                if not self._reviews(verdict):
                    await self._deny(
                        packet,
                        verdict.rule or "guardrail",
                        errors.GUARDRAIL,
                        _refusal_message(verdict, self._approvals_off()),
                        verdict=verdict.action.word,
                        command=decoded,
                    )
                    return
                if command == COM_STMT_PREPARE:
                    # Preparing runs nothing: each EXECUTE is reviewed with its parameters
                    # (the prepared statement keeps this verdict).
                    review_at_execute = True
                else:
                    reviewed = await review(self, packet, decoded, verdict)
                    if reviewed is None:
                        return
                    approved, record = reviewed
        if self.masking is not None and command in (COM_QUERY, COM_STMT_PREPARE):
            refused = await masking_refusal(self, decoded)
            if refused is not None:
                await self._deny(
                    packet, refused.rule, errors.GUARDRAIL, refused.message, command=decoded
                )
                return
        if (
            command == COM_QUERY
            and self.guardrails is None
            and self.audit is not None  # only the audit's redaction needs to know
            and may_switch_to_multibyte(self.server.policies, decoded, self.command_state.multibyte)
        ):
            decoded.switches_multibyte = True
        if (
            command == COM_QUERY
            and not self.target.allow_local_infile
            and (
                decoded.loads_local  # the guardrails' analysis read it already
                if decoded.loads_local is not None
                else await sql_checks.loads_local_file(packet.payload, self.server_version)
            )
        ):
            await self._deny(
                packet,
                "local_infile",
                errors.NOT_ALLOWED_COMMAND,
                f"LOAD DATA LOCAL INFILE is not allowed on target '{self.target.name}' "
                "(set allow_local_infile = true in its [targets] section to allow it)",
            )
            return
        if self.long_data:
            dropped = self.long_data.check(packet.payload)
            if dropped is not None:
                await self._deny(packet, "long_data_refused", *dropped)
                return
        audit = self.audit if command != COM_PING else None
        if audit is not None:
            try:
                flagged = verdict is not None and verdict.action is not Action.ALLOW
                await audit.before(
                    self.stats.statements,
                    self.login.principal,
                    packet.payload,
                    command=decoded,
                    verdict="approved"
                    if approved is not None
                    else ("log" if flagged else "allow"),
                    rule=verdict.rule if flagged and verdict is not None else None,
                    record=record,
                    approval=approved.id
                    if approved is not None
                    else ("at_execute" if review_at_execute else None),
                )
            except AuditUnavailable as exc:
                await self.refuse_unaudited(packet, exc)
                return
        if command == COM_CHANGE_USER:
            await self._change_user(packet)
            self.command_state.reset()
            self.long_data.reset()
            if audit is not None:
                audit.changed_user(self.stats.statements, self.login.principal)
            return
        if command == COM_PROCESS_KILL or (
            command == COM_QUERY
            and 1 < len(packet.payload) <= _KILL_MAX
            and (packet.payload[1] in _KILL_FIRST or self._query_attributes)
        ):
            packet = self._map_kill(packet, decoded)
        elif (
            command == COM_STMT_EXECUTE
            and decoded.prepared is not None
            and decoded.prepared.types_unsent
        ):
            packet = self._bind_unsent_types(packet, decoded.prepared)
        try:
            await self.upstream.packets.send_raw(packet.raw)
        except ConnectionClosed:
            # A command without a response gets none, not even this (gateway/refusal.py).
            await self._upstream_lost(None, reply=command not in NO_RESPONSE_COMMANDS)
        if command in NO_RESPONSE_COMMANDS:
            self.long_data.forwarded(packet.payload, True)
            self.command_state.no_response(decoded)
            return
        digest = audit.new_digest() if audit is not None else None
        tracker = ResponseTracker(command, self.login.capabilities, digest)
        if self.masking is not None and command in MASKED_COMMANDS:
            summary = await relay_masked(self, tracker, decoded, self.masking)
        else:
            summary = await self._relay_response(tracker)
        if summary.error is not None:
            self.stats.errors += 1
        self.command_state.completed(decoded, summary)
        if self.long_data and command != COM_STMT_PREPARE:
            if command == COM_RESET_CONNECTION and summary.error is None:
                self.long_data.reset()
            else:
                self.long_data.forwarded(packet.payload, summary.error is None)
        if audit is not None:
            audit.after(self.stats.statements, command, summary, digest)

    def _map_kill(self, packet: Packet, decoded: ClientCommand) -> Packet:
        """``KILL <id>`` (or COM_PROCESS_KILL) naming the connection id hoopy greeted another
        session with: name that session's upstream thread instead (DESIGN.md, rule 7).

        Gateway-user and token clients are greeted before any upstream session exists, with
        an id of hoopy's (admission.FrontConnectionIds); clients kill by that id (the mysql
        CLI on Ctrl-C, connectors' cancel). Ids hoopy did not hand out pass on unchanged, and
        the server checks the privilege to kill as it always does.
        """
        payload = packet.payload
        ids = self.server.connection_ids
        if payload[0] == COM_PROCESS_KILL:
            if len(payload) != 5:
                return packet
            front = int.from_bytes(payload[1:5], "little")
            upstream_id = ids.upstream_id(front, self.target.name)
            if upstream_id is None:
                self._foreign_kill(front)
                return packet
            new_payload = payload[:1] + upstream_id.to_bytes(4, "little")
        else:
            if b"kill" not in payload[:600].lower():
                return packet
            try:
                _, sql = decoded.query()
            except ProtocolError:
                return packet
            found = kill_target(sql)
            if found is None:
                return packet
            front, start, end = found
            upstream_id = ids.upstream_id(front, self.target.name)
            if upstream_id is None:
                self._foreign_kill(front)
                return packet
            offset = len(payload) - len(sql)
            new_payload = (
                payload[: offset + start] + str(upstream_id).encode() + payload[offset + end :]
            )
            log.info("session %s: KILL %d: upstream thread %d", self.id, front, upstream_id)
        raw, _ = frame(new_payload, packet.seq)
        return Packet(packet.seq, packet.next_seq, new_payload, raw)

    def _foreign_kill(self, front: int) -> None:
        """A KILL of an id another worker handed out that hoopy cannot map (that session
        has ended, or its worker's table was full): passed on unchanged (it names no session
        of the server's, which says so), and logged, since the client meant one."""
        worker = self.server.worker
        owner = self.server.connection_ids.worker_of(front)
        if worker is not None and owner is not None and owner != worker.number:
            log.warning(
                "session %s: KILL %d names no open connection of worker %d that this "
                "worker (%d) can see",
                self.id,
                front,
                owner,
                worker.number,
            )

    def _reviews(self, verdict: GuardrailVerdict) -> bool:
        """Whether this refused verdict goes to a human (approvals on, and audited)."""
        return (
            verdict.action is Action.REVIEW
            and self.server.approvals is not None
            and self.audit is not None
        )

    def _approvals_off(self) -> str:
        workers = self.server.config.gateway.workers
        if self.server.config.approvals is None and workers > 1:
            return (
                f"approvals are off while the gateway runs {workers} worker processes "
                "([gateway] workers)"
            )
        if self.server.config.approvals is None:
            return "approvals are turned off ([approvals] enabled = false)"
        return "approvals need the audit log, which is turned off ([audit] enabled = false)"

    async def refuse_unaudited(self, packet: Packet, exc: AuditUnavailable) -> None:
        """The statement's record cannot be written: it does not run (fail closed)."""
        log.error("session %s: %s; statement refused", self.id, exc)
        self.stats.errors += 1
        await self._refuse(
            packet,
            errors.AUDIT_UNAVAILABLE,
            f"hoopy cannot write its audit log, so the statement was not run: {exc.reason}",
        )

    def _bind_unsent_types(self, packet: Packet, statement: PreparedStatement) -> Packet:
        """An EXECUTE after one hoopy refused: the types that one bound are written in, since
        the server never saw them (wire/params.py, ``bind_types``)."""
        assert self.login is not None
        statement.types_unsent = False
        if statement.types is None:
            return packet
        try:
            payload = bind_types(
                packet.payload,
                statement.num_params,
                statement.types,
                capabilities=self.login.capabilities,
            )
        except ProtocolError:
            return packet  # malformed: the server will say so
        if payload is None:
            return packet
        raw, next_seq = frame(payload, packet.seq)
        return Packet(packet.seq, next_seq, payload, raw)

    async def _deny(
        self,
        packet: Packet,
        rule: str,
        kind: ErrorKind,
        message: str,
        *,
        verdict: str = "deny",
        command: ClientCommand | None = None,
        record: dict[str, Any] | None = None,
        approval: str | None = None,
    ) -> bool:
        """Refuse a statement hoopy will not forward, and record why (see ``_refuse``)."""
        assert self.login is not None
        self.stats.errors += 1
        if self.audit is not None:
            await self.audit.refused(
                self.stats.statements,
                self.login.principal,
                packet.payload,
                rule,
                kind,
                message,
                verdict=verdict,
                command=command,
                record=record,
                approval=approval,
            )
        return await self._refuse(packet, kind, message)

    deny = _deny  # for the pipeline's stages in other modules (gateway/review.py)

    async def _refuse(self, packet: Packet, kind: ErrorKind, message: str) -> bool:
        """Answer a command hoopy does not forward: every refusal goes through here.

        An ERR for a command that has a response; nothing for one that has none, whose
        consequences the session then carries (gateway/refusal.py). Returns whether the
        client was answered.
        """
        self.long_data.refused(packet.payload, kind, message)
        if packet.payload[0] == COM_STMT_EXECUTE:
            statement = self.command_state.decode(packet.payload).prepared
            if statement is not None:
                statement.types_unsent = True  # whatever types it bound, the server lacks
        reply = refusal_reply(packet, kind, message)
        if reply is None:
            return False
        await self.client.send_raw(reply)
        return True

    async def _forward_quietly(self, raw: bytes) -> None:
        assert self.upstream is not None
        with contextlib.suppress(ConnectionClosed):
            await self.upstream.packets.send_raw(raw)

    async def _relay_response(self, tracker: ResponseTracker) -> ResponseSummary:
        """Relay the response byte for byte until the tracker says it is complete."""
        assert self.upstream is not None
        upstream = self.upstream.packets
        client = self.client
        first = True
        while True:
            try:
                # Right after a command nothing can have arrived yet: wait before reading.
                data = await upstream.receive_some(wait_first=first)
            except ConnectionClosed:
                await self._upstream_lost(tracker)
            first = False
            used = tracker.feed(data)
            if used < len(data):
                upstream.unread(data[used:])
                data = data[:used]
            if data:
                await client.send_raw(data)
            if tracker.done:
                return tracker.summary
            if tracker.awaiting_local_infile:
                await self._relay_local_infile()
                tracker.local_infile_sent()

    relay_response = _relay_response  # for gateway/masked_relay.py

    async def _relay_local_infile(self) -> int:
        """Relay the client's file (allowed targets only): packets until an empty one."""
        assert self.upstream is not None
        size = 0
        while True:
            packet = await self.client.read_packet()
            await self.upstream.packets.send_raw(packet.raw)
            size += len(packet.payload)
            if not packet.payload:
                log.info("session %s: LOCAL INFILE relayed, %d bytes", self.id, size)
                return size

    relay_local_infile = _relay_local_infile

    async def _upstream_lost(self, tracker: ResponseTracker | None, *, reply: bool = True) -> None:
        self.end_reason = f"lost connection to target '{self.target.name}'"
        log.warning("session %s: %s", self.id, self.end_reason)
        if reply and (tracker is None or tracker.at_packet_boundary):
            seq = 1 if tracker is None or tracker.last_seq < 0 else tracker.last_seq + 1
            await self._send_error_quietly(
                errors.SERVER_LOST,
                f"hoopy lost its connection to target '{self.target.name}' during the query",
                seq & 0xFF,
            )
        raise SessionEnded

    # --- COM_CHANGE_USER -----------------------------------------------------------------

    async def _change_user(self, packet: Packet) -> None:
        assert self.upstream is not None and self.login is not None
        try:
            request = parse_change_user(packet.payload, self.login.capabilities)
        except ProtocolError as exc:
            await self._refuse(packet, errors.HANDSHAKE, f"malformed COM_CHANGE_USER: {exc}")
            raise SessionEnded from None
        name = request.username.decode("utf-8", "replace")
        delays = self.server.login_delays
        try:
            if self.target.login is LoginMode.PASSTHROUGH:
                await self.upstream.packets.send_raw(packet.raw)
                await relay_auth_exchange(
                    self.client,
                    self.upstream,
                    delta=0,
                    delay=self._login_context(None).login_delay(name),
                )
                principal = Principal(name=name, method="passthrough")
            elif self.target.login is LoginMode.TOKENS:
                raise LoginFailed(
                    errors.ACCESS_DENIED,
                    "COM_CHANGE_USER is not supported for token logins: reconnect with the "
                    "new token",
                    1,
                    counts=False,
                )
            else:
                await self._login_context(None).wait_login_delay(name)
                principal = await self._change_gateway_user(request, name)
        except LoginFailed as exc:
            log.warning("session %s: COM_CHANGE_USER to %r refused: %s", self.id, name, exc.message)
            if exc.counts:
                # Guessing another user's password from an authenticated session costs the
                # same delays as guessing it at the door.
                delays.failed(name, self.peer_host)
            if not exc.relayed:
                await self._send_error_quietly(exc.kind, exc.message, exc.seq)
            self.end_reason = "COM_CHANGE_USER refused"
            raise SessionEnded from None
        except UpstreamError as exc:
            log.error("session %s: %s", self.id, exc.message)
            message = (
                target_login_failed(self.target)
                if isinstance(exc, UpstreamRefused)
                else exc.message
            )
            kind = (
                errors.TARGET_UNAVAILABLE
                if isinstance(exc, UpstreamRefused)
                else ErrorKind(exc.code, exc.sqlstate)
            )
            await self._send_error_quietly(kind, message, 2)
            raise SessionEnded from None
        delays.succeeded(name, self.peer_host)
        log.info("session %s: now acting for %s (COM_CHANGE_USER)", self.id, principal.name)
        from dataclasses import replace

        self.login = replace(self.login, principal=principal)
        database = request.database.decode("utf-8", "replace") if request.database else None
        self.command_state.database = database or self.target.database
        if request.charset is not None:
            self.command_state.charset(request.charset)
        self._set_guardrails()

    async def _change_gateway_user(self, request: ChangeUser, name: str) -> Principal:
        """Verify the new gateway user, then reset the upstream session as hoopy's account."""
        assert self.upstream is not None and self.login is not None
        config = self.server.config
        decision, seq = await run_auth_plugins(
            self.client,
            users_plugins(config),
            username=name,
            auth_response=request.auth_response,
            client_plugin=(request.auth_plugin or b"mysql_native_password").decode(
                "ascii", "replace"
            ),
            connect_attrs={},
            nonce=self.login.front_nonce,
            seq=1,
        )
        if isinstance(decision, Forbidden):
            message = decision.msg or f"Access denied for user '{name}'"
            raise LoginFailed(errors.ACCESS_DENIED, message, seq)
        user = config.users[decision.authenticated_as]
        principal = Principal(name=user.name, method="gateway_user", groups=user.groups)
        principal = authorize(config, self.target, principal, seq)
        if isinstance(decision, FastAuthSuccess):
            seq = await self.client.send_payload(
                bytes((AUTH_MORE_DATA_HEADER, FAST_AUTH_SUCCESS)), seq
            )
        try:
            password = self.target.password.read()
        except SecretUnavailable:
            raise LoginFailed(
                errors.TARGET_UNAVAILABLE,
                f"hoopy cannot log into target '{self.target.name}': "
                "its credentials are unavailable",
                seq,
            ) from None
        g = self.upstream.greeting
        plugin, auth = initial_auth_response(g.auth_plugin, password, g.auth_data)
        caps = self.login.upstream_capabilities
        attrs = (
            (
                (HOOPY_ATTR_PREFIX + b"principal", user.name.encode()),
                (HOOPY_ATTR_PREFIX + b"client", self.peer.encode()),
            )
            if caps & CLIENT_CONNECT_ATTRS
            else ()
        )
        database = request.database or (self.target.database or "").encode()
        upstream_request = ChangeUser(
            username=self.target.user.encode(),
            auth_response=auth,
            database=database,
            charset=request.charset if request.charset is not None else self.login.charset,
            auth_plugin=plugin,
            connect_attrs=attrs,
        )
        machine = self.upstream.login_machine(plugin, password, caps)
        useq = await self.upstream.packets.send_payload(
            build_change_user(upstream_request, caps), 0
        )
        logged_in, _ = await self.upstream.drive(machine, useq)
        del password
        await self.client.send_payload(logged_in.payload, seq)
        return principal


def _refusal_message(verdict: GuardrailVerdict, approvals_off: str = "") -> str:
    """What the client reads when a guardrail stops its statement."""
    reason = f": {verdict.message}" if verdict.message else ""
    if verdict.action is Action.REVIEW:
        return (
            f"hoopy guardrail {verdict.rule} needs a human's approval for this statement"
            f"{reason}; {approvals_off}, so it was not run"
        )
    return f"hoopy guardrail {verdict.rule} denied this statement{reason}"
