"""The front door: greet the client as the target would, authenticate it, log in upstream.

The greeting carries the target's real server version, connection id, charset and status,
and a capability set that is what hoopy can relay intersected with what the target offers
(DESIGN.md, fidelity rule 2). Every failed login ends the connection.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import trio
from mysql_mimic.auth import AuthInfo, AuthPlugin, Forbidden, Success, User

from hoopy.config.model import Config, Listener, LoginMode, SecretUnavailable, Target
from hoopy.gateway.stream import PacketStream
from hoopy.gateway.throttle import LoginDelays
from hoopy.gateway.tokenauth import TokenAuthenticator, TokenLoginFailed
from hoopy.gateway.upstream import (
    TARGET_UNAVAILABLE as TARGET_UNAVAILABLE_CODE,
)
from hoopy.gateway.upstream import UpstreamConnection, UpstreamError, UpstreamRefused
from hoopy.identity.principal import Principal
from hoopy.identity.roles import role_matches
from hoopy.identity.static import (
    CachingSha2Plugin,
    FastAuthSuccess,
    NativePasswordPlugin,
    new_nonce,
)
from hoopy.wire import errors
from hoopy.wire.compress import COMPRESSION_CAPABILITIES, Compression, negotiate
from hoopy.wire.errors import ErrorKind
from hoopy.wire.handshake import (
    AUTH_MORE_DATA_HEADER,
    CACHING_SHA2_PASSWORD,
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_LOCAL_FILES,
    CLIENT_LONG_PASSWORD,
    CLIENT_MULTI_RESULTS,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    CLIENT_TRANSACTIONS,
    FAST_AUTH_SUCCESS,
    LEG_CAPABILITIES,
    NATIVE_PASSWORD,
    RELAYABLE_CAPABILITIES,
    RELAYABLE_MARIADB_CAPABILITIES,
    REQUIRED_CLIENT_CAPABILITIES,
    Greeting,
    HandshakeResponse,
    SSLRequest,
    build_auth_switch,
    build_greeting,
    build_handshake_response,
    parse_handshake_response,
)
from hoopy.wire.login import initial_auth_response
from hoopy.wire.messages import ERR_HEADER, OK_HEADER, parse_err
from hoopy.wire.packets import ProtocolError

log = logging.getLogger("hoopy.frontdoor")

# Connect attributes hoopy sets on the upstream session (gateway users): who and from where.
HOOPY_ATTR_PREFIX = b"hoopy_"


class LoginFailed(Exception):
    """The login cannot complete. Unless ``relayed``, the client still needs the ERR.

    ``user`` is the name the client logged in with, when known. ``counts`` says whether the
    failure is the client's own (wrong credentials, an expired token...) and so counts
    toward its login delays; hoopy's own failures (the target unreachable, or refusing
    hoopy's credentials) never do.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        seq: int,
        *,
        relayed: bool = False,
        user: str | None = None,
        counts: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.seq = seq
        self.relayed = relayed
        self.user = user
        self.counts = kind == errors.ACCESS_DENIED if counts is None else counts


@dataclass(frozen=True, slots=True)
class LoginResult:
    principal: Principal
    username: str  # the name the client sent (login delays are kept per this name)
    capabilities: int  # what the client and hoopy agreed on; the upstream leg matches it
    client_tls: bool
    connect_attrs: dict[str, str]
    database: str | None
    front_nonce: bytes  # COM_CHANGE_USER scrambles against the greeting's nonce
    charset: int
    upstream_capabilities: int
    connection_id: int  # what the client was greeted with
    # The client leg's compressed protocol, from the OK after login on (None: plain).
    compression: Compression | None = None
    # MariaDB's extended capabilities both legs use (MARIADB_CLIENT_EXTENDED_METADATA).
    mariadb_capabilities: int = 0


@dataclass(frozen=True, slots=True)
class LoginContext:
    """What a login needs to know about where it happens."""

    config: Config
    target: Target
    listener: Listener
    tls_context: ssl.SSLContext | None
    peer: str
    address: str  # the client's host (or "unix-socket"): login delays are per (user, address)
    unix_socket: bool
    tokens: TokenAuthenticator | None
    delays: LoginDelays
    # The login's deadline, moved out by any login delay (a delay is not the client's time).
    deadline: trio.CancelScope | None = None

    def login_delay(self, username: str) -> float:
        """The delay this (user, address) has earned by failed logins (logged when > 0)."""
        delay = self.delays.delay(username, self.address)
        if delay > 0:
            log.info(
                "login of %r from %s delayed %.1fs after failed logins", username, self.peer, delay
            )
        return delay

    async def wait(self, delay: float) -> None:
        """Wait a login delay; the login's deadline moves out by as much."""
        if delay > 0:
            if self.deadline is not None:
                self.deadline.deadline += delay
            await trio.sleep(delay)

    async def wait_login_delay(self, username: str) -> None:
        """Wait out the delay this (user, address) has earned, before it learns anything."""
        await self.wait(self.login_delay(username))


# What the client is told when hoopy cannot log into the target for a reason that is hoopy's
# (or the operator's), not the client's: it names no database account (the log has the rest).
def target_login_failed(target: Target) -> str:
    return (
        f"hoopy cannot log into target '{target.name}': the target refused hoopy's own "
        "credentials (an operator problem; the gateway log says more)"
    )


def upstream_failure(target: Target, exc: UpstreamError, seq: int, user: str) -> LoginFailed:
    """hoopy's own upstream failure as the client sees it: never counted against it."""
    log.error("target %s: %s", target.name, exc.message)
    if isinstance(exc, UpstreamRefused):
        return LoginFailed(
            errors.TARGET_UNAVAILABLE, target_login_failed(target), seq, user=user, counts=False
        )
    return LoginFailed(ErrorKind(exc.code, exc.sqlstate), exc.message, seq, user=user, counts=False)


def front_capabilities(greeting: Greeting, mode: LoginMode, tls: bool) -> int:
    caps = greeting.capabilities & RELAYABLE_CAPABILITIES & ~LEG_CAPABILITIES
    if mode is LoginMode.PASSTHROUGH:
        # The target runs the authentication: offer exactly its auth-related bits.
        caps |= greeting.capabilities & LEG_CAPABILITIES & ~CLIENT_SSL
    else:
        caps |= (
            CLIENT_PLUGIN_AUTH
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CLIENT_CONNECT_ATTRS
            | CLIENT_CONNECT_WITH_DB
        )
    if tls:
        caps |= CLIENT_SSL
    # Compression is hoopy's own, on the client leg only (DESIGN.md, fidelity rule 2): always
    # offered, whatever the target does; the upstream leg stays uncompressed.
    caps |= COMPRESSION_CAPABILITIES
    return caps


async def log_in(
    ctx: LoginContext,
    client: PacketStream,
    *,
    upstream: UpstreamConnection | None = None,
    profile: Greeting | None = None,
    connection_id: int = 0,
    open_upstream: Callable[[], Awaitable[UpstreamConnection]] | None = None,
) -> tuple[LoginResult, UpstreamConnection]:
    """Greet the client, authenticate it, log in upstream.

    Passthrough: ``upstream`` is connected already; its greeting (nonce included) is the
    client's. Gateway users and tokens: the client is greeted with ``profile`` (the target's
    last greeting, or a stand-in when ``None``) and ``connection_id``, verified, and only then
    is ``open_upstream`` called, so an unauthenticated client costs the target nothing.
    """
    target = ctx.target
    if target.login is LoginMode.PASSTHROUGH:
        assert upstream is not None
        return await _log_in_passthrough(ctx, client, upstream)
    assert open_upstream is not None
    nonce = new_nonce()
    response, seq, client_tls, negotiated = await _greet_front(
        ctx,
        client,
        profile if profile is not None else stand_in_greeting(),
        connection_id=connection_id,
        auth_data=nonce,
        auth_plugin=CACHING_SHA2_PASSWORD,
    )
    username = response.username.decode("utf-8", "replace")
    await ctx.wait_login_delay(username)
    config = ctx.config
    try:
        if target.login is LoginMode.TOKENS:
            if ctx.tokens is None:
                raise LoginFailed(errors.ACCESS_DENIED, "no token issuers are configured", seq)
            try:
                principal, seq, fast = await ctx.tokens.authenticate(
                    client,
                    response,
                    nonce,
                    seq,
                    secure=client_tls or ctx.unix_socket,
                    listener=ctx.listener,
                )
            except TokenLoginFailed as exc:
                raise LoginFailed(errors.ACCESS_DENIED, exc.message, exc.seq) from None
        else:
            principal, seq, fast = await _authenticate_gateway_user(
                client, config, response, nonce, seq, username
            )
        principal = authorize(config, target, principal, seq)
    except LoginFailed as exc:
        exc.user = username
        raise
    if fast:
        # caching_sha2_password's "fast auth success" precedes the OK (after the delay, and
        # only for a principal that is authorized).
        seq = await client.send_payload(bytes((AUTH_MORE_DATA_HEADER, FAST_AUTH_SUCCESS)), seq)
    database = (
        response.database.decode("utf-8", "replace") if response.database else target.database
    )
    try:
        upstream = await open_upstream()
    except UpstreamError as exc:
        raise upstream_failure(target, exc, seq, username) from None
    try:
        missing = negotiated & ~front_capabilities(upstream.greeting, target.login, False)
        if missing:
            # The target changed (an upgrade, a failover) since its greeting was remembered,
            # and the client chose something it no longer offers: the next login greets with
            # what it offers now.
            raise UpstreamError(
                TARGET_UNAVAILABLE_CODE,
                f"target '{target.name}' no longer offers capabilities 0x{missing:x} that the "
                "client chose; reconnect",
            )
        upstream_caps = await _upstream_login(
            client, upstream, target, response, negotiated, database, principal, ctx.peer, seq
        )
    except UpstreamError as exc:
        await upstream.packets.aclose()
        raise upstream_failure(target, exc, seq, username) from None
    except BaseException:
        await upstream.packets.aclose()
        raise
    result = _login_result(
        response, principal, negotiated, client_tls, database, upstream_caps, nonce, connection_id
    )
    return result, upstream


def _login_result(
    response: HandshakeResponse,
    principal: Principal,
    negotiated: int,
    client_tls: bool,
    database: str | None,
    upstream_caps: int,
    front_nonce: bytes,
    connection_id: int,
) -> LoginResult:
    """What both login paths hand the session; the rest comes from the client's response."""
    return LoginResult(
        principal=principal,
        username=response.username.decode("utf-8", "replace"),
        capabilities=negotiated,
        client_tls=client_tls,
        connect_attrs=response.attrs_dict(),
        database=database,
        front_nonce=front_nonce,
        charset=response.charset,
        upstream_capabilities=upstream_caps,
        connection_id=connection_id,
        compression=negotiate(response.capabilities, response.zstd_level),
        mariadb_capabilities=response.mariadb_capabilities,
    )


async def _log_in_passthrough(
    ctx: LoginContext, client: PacketStream, upstream: UpstreamConnection
) -> tuple[LoginResult, UpstreamConnection]:
    g = upstream.greeting
    target = ctx.target
    response, seq, client_tls, negotiated = await _greet_front(ctx, client, g)
    username = response.username.decode("utf-8", "replace")
    # The target verifies; the delay is waited out before its verdict is relayed.
    delay = ctx.login_delay(username)
    try:
        principal, upstream_caps = await _relay_authentication(
            ctx, client, upstream, response, negotiated, seq, delay
        )
    except UpstreamError as exc:
        raise upstream_failure(target, exc, seq, username) from None
    except LoginFailed as exc:
        exc.user = username
        raise
    database = response.database.decode("utf-8", "replace") if response.database else None
    result = _login_result(
        response,
        principal,
        negotiated,
        client_tls,
        database,
        upstream_caps,
        g.auth_data,
        g.connection_id,
    )
    return result, upstream


async def _greet_front(
    ctx: LoginContext, client: PacketStream, base: Greeting, **changes: Any
) -> tuple[HandshakeResponse, int, bool, int]:
    """Greet like ``base`` (with ``changes``) offering what hoopy relays, and read the answer.

    Returns the handshake response (its MariaDB capabilities cut to those offered), the next
    sequence id, whether the client uses TLS, and the capabilities both sides agreed on."""
    offered = front_capabilities(base, ctx.target.login, ctx.tls_context is not None)
    greeting = replace(
        base,
        capabilities=offered,
        mariadb_capabilities=base.mariadb_capabilities & RELAYABLE_MARIADB_CAPABILITIES,
        **changes,
    )
    response, seq, client_tls = await _greet(client, greeting, ctx.tls_context)
    response = replace(
        response, mariadb_capabilities=response.mariadb_capabilities & greeting.mariadb_capabilities
    )
    return response, seq, client_tls, response.capabilities & offered & ~CLIENT_SSL


async def _greet(
    client: PacketStream, greeting: Greeting, tls_context: ssl.SSLContext | None
) -> tuple[HandshakeResponse, int, bool]:
    """Send the greeting, upgrade to TLS if asked, read the handshake response.

    Returns the response, the next sequence id and whether the client uses TLS.
    """
    await client.send_payload(build_greeting(greeting), 0)
    packet = await client.read_packet_exact()
    client_tls = False
    try:
        parsed = parse_handshake_response(packet.payload)
    except ProtocolError as exc:
        raise LoginFailed(errors.HANDSHAKE, f"Bad handshake: {exc}", packet.next_seq) from None
    if isinstance(parsed, SSLRequest):
        if tls_context is None:
            raise LoginFailed(
                errors.HANDSHAKE, "Bad handshake: TLS was not offered", packet.next_seq
            )
        await client.start_tls(trio.SSLStream(client.stream, tls_context, server_side=True))
        client_tls = True
        packet = await client.read_packet()
        try:
            parsed = parse_handshake_response(packet.payload)
        except ProtocolError as exc:
            raise LoginFailed(errors.HANDSHAKE, f"Bad handshake: {exc}", packet.next_seq) from None
        if isinstance(parsed, SSLRequest):
            raise LoginFailed(errors.HANDSHAKE, "Bad handshake: second SSLRequest", packet.next_seq)
    response = parsed
    if response.capabilities & REQUIRED_CLIENT_CAPABILITIES != REQUIRED_CLIENT_CAPABILITIES:
        raise LoginFailed(
            errors.NOT_SUPPORTED_AUTH_MODE,
            "Client does not support the authentication protocol requested by server; "
            "consider upgrading MySQL client",
            packet.next_seq,
        )
    return response, packet.next_seq, client_tls


# Used to greet a client when the target cannot be reached and no greeting from it has been
# seen yet, so the refusal arrives as a regular ERR after the handshake (clients distrust, or
# misread, an ERR sent before it: libmariadb reports "malformed packet").
_STAND_IN_CAPABILITIES = (
    CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_CONNECT_ATTRS
    | CLIENT_TRANSACTIONS
    | CLIENT_MULTI_RESULTS
    | CLIENT_LONG_PASSWORD
)
_UTF8MB4_GENERAL_CI = 45


def stand_in_greeting() -> Greeting:
    """A greeting for a target hoopy has not heard from yet (it could not be reached)."""
    return Greeting(
        server_version=b"8.0.0-hoopy-target-unavailable",
        connection_id=0,
        auth_data=b"",
        capabilities=_STAND_IN_CAPABILITIES,
        charset=_UTF8MB4_GENERAL_CI,
        status=0x0002,  # SERVER_STATUS_AUTOCOMMIT
        auth_plugin=NATIVE_PASSWORD,
    )


async def refuse_after_greeting(
    client: PacketStream,
    last_greeting: Greeting | None,
    tls_context: ssl.SSLContext | None,
    kind: ErrorKind,
    message: str,
) -> NoReturn:
    """Complete the client's half of the handshake, then answer with an ERR.

    Used when the target is unreachable or the login cannot be started: the greeting imitates
    the target's last one (or a stand-in), nothing is verified, and the client gets
    ``kind``/``message`` as it would any login error, over TLS if it asked for it.
    """
    greeting = replace(
        last_greeting or stand_in_greeting(), connection_id=0, mariadb_capabilities=0
    )
    caps = greeting.capabilities & RELAYABLE_CAPABILITIES & ~CLIENT_SSL
    greeting = replace(
        greeting,
        capabilities=caps | (CLIENT_SSL if tls_context is not None else 0),
        auth_data=new_nonce(),
        auth_plugin=NATIVE_PASSWORD,
    )
    _, seq, _ = await _greet(client, greeting, tls_context)
    raise LoginFailed(kind, message, seq, counts=False)


def _upstream_capabilities(target: Target, negotiated: int) -> int:
    caps = negotiated & ~LEG_CAPABILITIES & ~COMPRESSION_CAPABILITIES
    if not target.allow_local_infile:
        # Without this bit the target itself refuses LOAD DATA LOCAL: fail closed even if
        # hoopy's own check of the statement text were fooled.
        caps &= ~CLIENT_LOCAL_FILES
    return caps


async def _start_upstream_tls(
    upstream: UpstreamConnection, response: HandshakeResponse, caps: int
) -> tuple[int, int]:
    if upstream.wants_tls():
        caps |= CLIENT_SSL
        # MariaDB takes the client's capabilities, its extended ones included, from the
        # SSLRequest: leaving them out here negotiates no extended metadata upstream while
        # the client believes it has it, and it reads every column definition as malformed.
        seq = await upstream.start_tls(
            SSLRequest(
                caps,
                response.max_packet_size,
                response.charset,
                response.mariadb_capabilities,
            ),
            1,
        )
        return caps, seq
    return caps, 1


async def _upstream_login(
    client: PacketStream,
    upstream: UpstreamConnection,
    target: Target,
    response: HandshakeResponse,
    negotiated: int,
    database: str | None,
    principal: Principal,
    peer: str,
    seq: int,
) -> int:
    g = upstream.greeting
    caps = _upstream_capabilities(target, negotiated)
    caps |= g.capabilities & (
        CLIENT_PLUGIN_AUTH
        | CLIENT_SECURE_CONNECTION
        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CLIENT_CONNECT_ATTRS
    )
    if database:
        caps |= CLIENT_CONNECT_WITH_DB
    try:
        password = target.password.read()
    except SecretUnavailable as exc:
        log.error("target %s: hoopy's password is unavailable: %s", target.name, exc)
        raise LoginFailed(
            errors.TARGET_UNAVAILABLE,
            f"hoopy cannot log into target '{target.name}': its credentials are unavailable "
            "(see the gateway log)",
            seq,
        ) from None
    caps, useq = await _start_upstream_tls(upstream, response, caps)
    plugin, auth = initial_auth_response(g.auth_plugin, password, g.auth_data)
    # The client's attributes, minus any it sent under hoopy's names (they would let a
    # client pose as someone else in the target's process list).
    attrs = (
        *(kv for kv in response.connect_attrs if not kv[0].startswith(HOOPY_ATTR_PREFIX)),
        (HOOPY_ATTR_PREFIX + b"principal", principal.name.encode()),
        (HOOPY_ATTR_PREFIX + b"client", peer.encode()),
    )
    upstream_response = HandshakeResponse(
        capabilities=caps,
        max_packet_size=response.max_packet_size,
        charset=response.charset,
        username=target.user.encode(),
        auth_response=auth,
        database=database.encode() if database else None,
        auth_plugin=plugin,
        connect_attrs=attrs,
        mariadb_capabilities=response.mariadb_capabilities,
    )
    logged_in, _ = await upstream.login(upstream_response, password, useq)
    del password
    # The client gets the target's own OK (status flags, session-state info) unchanged.
    await client.send_payload(logged_in.payload, seq)
    return caps


async def _authenticate_gateway_user(
    client: PacketStream,
    config: Config,
    response: HandshakeResponse,
    nonce: bytes,
    seq: int,
    username: str,
) -> tuple[Principal, int, bool]:
    """Verify a gateway user; returns the principal, the next sequence id and whether the
    caching_sha2 fast path succeeded (the caller sends its "fast auth success")."""
    decision, seq = await run_auth_plugins(
        client,
        users_plugins(config),
        username=username,
        auth_response=response.auth_response,
        client_plugin=(response.auth_plugin or b"").decode("ascii", "replace"),
        connect_attrs=response.attrs_dict(),
        nonce=nonce,
        seq=seq,
    )
    if isinstance(decision, Forbidden):
        raise LoginFailed(
            errors.ACCESS_DENIED, decision.msg or f"Access denied for user '{username}'", seq
        )
    user = config.users[decision.authenticated_as]
    principal = Principal(name=user.name, method="gateway_user", groups=user.groups)
    return principal, seq, isinstance(decision, FastAuthSuccess)


def authorize(config: Config, target: Target, principal: Principal, seq: int) -> Principal:
    """Deny by default: some role must grant this target. Returns the principal with the
    names of the roles that do (what the logs, and later the audit, record)."""
    roles = tuple(
        role.name
        for role in config.roles.values()
        if target.name in role.targets and role_matches(role, principal)
    )
    if not roles:
        raise LoginFailed(
            errors.ACCESS_DENIED,
            f"Access denied for user '{principal.name}': no role grants target '{target.name}'",
            seq,
        )
    return replace(principal, roles=roles)


def users_plugins(config: Config) -> dict[str, AuthPlugin]:
    return {
        p.name: p for p in (CachingSha2Plugin(config.users), NativePasswordPlugin(config.users))
    }


async def run_auth_plugins(
    client: PacketStream,
    plugins: dict[str, AuthPlugin],
    *,
    username: str,
    auth_response: bytes,
    client_plugin: str,
    connect_attrs: dict[str, str],
    nonce: bytes,
    seq: int,
) -> tuple[Success | Forbidden, int]:
    """Drive mysql-mimic style auth plugins over the client stream; returns the decision."""
    default = plugins[CACHING_SHA2_PASSWORD.decode()]
    plugin = plugins.get(client_plugin, default)
    info = AuthInfo(
        username=username,
        data=auth_response,
        user=User(name=username),
        connect_attrs=connect_attrs,
        client_plugin_name=client_plugin,
        handshake_auth_data=nonce,
        handshake_plugin_name=CACHING_SHA2_PASSWORD.decode(),
    )
    state = plugin.auth(info if plugin.name == client_plugin else None)
    decision = await state.__anext__()
    if isinstance(decision, bytes) and plugin.name != client_plugin:
        # The client used a plugin hoopy does not verify: ask it to switch.
        seq = await client.send_payload(build_auth_switch(plugin.name.encode(), decision), seq)
        packet = await client.read_packet()
        seq = packet.next_seq
        decision = await state.asend(info.copy(packet.payload))
    while isinstance(decision, bytes):
        seq = await client.send_payload(bytes((AUTH_MORE_DATA_HEADER,)) + decision, seq)
        packet = await client.read_packet()
        seq = packet.next_seq
        decision = await state.asend(info.copy(packet.payload))
    await state.aclose()
    assert isinstance(decision, Success | Forbidden)
    return decision, seq


async def _relay_authentication(
    ctx: LoginContext,
    client: PacketStream,
    upstream: UpstreamConnection,
    response: HandshakeResponse,
    negotiated: int,
    seq: int,
    delay: float,
) -> tuple[Principal, int]:
    """Passthrough: the target authenticates the client; hoopy relays and renumbers packets."""
    caps = _upstream_capabilities(ctx.target, negotiated)
    caps |= negotiated & LEG_CAPABILITIES & ~CLIENT_SSL
    caps, useq = await _start_upstream_tls(upstream, response, caps)
    forwarded = replace(response, capabilities=caps)
    useq = await upstream.packets.send_payload(build_handshake_response(forwarded), useq)
    # Upstream sequence ids run ``delta`` ahead of (or behind) the client's when only one
    # leg did an SSLRequest.
    await relay_auth_exchange(client, upstream, delta=useq - seq, delay=delay, ctx=ctx)
    name = response.username.decode("utf-8", "replace")
    return Principal(name=name, method="passthrough"), caps


async def relay_auth_exchange(
    client: PacketStream,
    upstream: UpstreamConnection,
    *,
    delta: int,
    delay: float = 0.0,
    ctx: LoginContext | None = None,
) -> int:
    """Relay an authentication exchange the target runs (login or COM_CHANGE_USER) until
    its OK or ERR, renumbering packets by ``delta``. Raises ``LoginFailed(relayed=True)``.

    A login delay earned by earlier failures is waited out before the target's verdict (or a
    fast-auth-success that announces it) reaches the client: the target has decided by then,
    but the client learns it no sooner than the delay allows."""
    while True:
        packet = await upstream.packets.read_packet()
        first = packet.payload[:1]
        verdict = first in (bytes((OK_HEADER,)), bytes((ERR_HEADER,))) or packet.payload == bytes(
            (AUTH_MORE_DATA_HEADER, FAST_AUTH_SUCCESS)
        )
        if verdict and delay > 0:
            await (ctx.wait(delay) if ctx is not None else trio.sleep(delay))
            delay = 0.0
        cseq = await client.send_payload(packet.payload, packet.seq - delta)
        if first == bytes((OK_HEADER,)):
            return cseq
        if first == bytes((ERR_HEADER,)):
            err = parse_err(packet.payload)
            raise LoginFailed(errors.ACCESS_DENIED, err.message, cseq, relayed=True)
        if packet.payload == bytes((AUTH_MORE_DATA_HEADER, FAST_AUTH_SUCCESS)):
            continue
        reply = await client.read_packet()
        await upstream.packets.send_payload(reply.payload, reply.seq + delta)
