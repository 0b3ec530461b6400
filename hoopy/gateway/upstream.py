"""The upstream leg: one connection to the target per client session."""

from __future__ import annotations

import ssl

import trio

from hoopy.config.model import Target, UpstreamTLS
from hoopy.gateway.stream import ConnectionClosed, PacketStream
from hoopy.gateway.tls import upstream_context
from hoopy.wire import errors
from hoopy.wire.handshake import (
    CLIENT_SSL,
    Greeting,
    HandshakeResponse,
    SSLRequest,
    build_handshake_response,
    build_ssl_request,
    parse_greeting,
)
from hoopy.wire.login import (
    LoggedIn,
    LoginStep,
    LoginUnsupported,
    Refused,
    Send,
    UpstreamLogin,
    Wait,
)
from hoopy.wire.messages import ErrPacket, is_err, parse_err
from hoopy.wire.packets import ProtocolError


class UpstreamError(Exception):
    """The target could not be reached or refused hoopy. ``code`` is the MySQL error to show."""

    def __init__(self, code: int, message: str, sqlstate: str = "HY000") -> None:
        super().__init__(message)
        self.code = code
        self.sqlstate = sqlstate
        self.message = message


# Every failure to reach or log into the target reaches the client as
# ER_CONNECT_TO_FOREIGN_DATA_SOURCE with a message saying what went wrong (see errors.py).
TARGET_UNAVAILABLE = errors.TARGET_UNAVAILABLE.code


class UpstreamConnection:
    def __init__(self, target: Target, packets: PacketStream, greeting: Greeting) -> None:
        self.target = target
        self.packets = packets
        self.greeting = greeting
        self.tls = False

    @classmethod
    async def open(cls, target: Target, max_payload: int) -> UpstreamConnection:
        """Connect and read the server greeting (the login happens later)."""
        stream: trio.abc.Stream
        with trio.move_on_after(target.connect_timeout) as scope:
            try:
                if target.unix_socket:
                    stream = await trio.open_unix_socket(str(target.unix_socket))
                else:
                    stream = await trio.open_tcp_stream(target.host, target.port)
            except OSError as exc:
                raise UpstreamError(
                    TARGET_UNAVAILABLE,
                    f"hoopy cannot reach target '{target.name}' at {target.address()}: "
                    f"{exc.strerror or exc}",
                ) from None
            packets = PacketStream(stream, max_payload)
            try:
                first = await packets.read_packet()
            except ConnectionClosed:
                await packets.aclose()
                raise UpstreamError(
                    TARGET_UNAVAILABLE,
                    f"target '{target.name}' closed the connection before its greeting",
                ) from None
            if is_err(first.payload):
                err = parse_err(first.payload, 0)
                await packets.aclose()
                # e.g. 1040 Too many connections, 1129 host blocked: pass the server's word on.
                raise UpstreamError(
                    err.code, f"target '{target.name}': {err.message}", err.sqlstate
                )
            try:
                greeting = parse_greeting(first.payload)
            except ProtocolError as exc:
                await packets.aclose()
                raise UpstreamError(
                    TARGET_UNAVAILABLE, f"target '{target.name}' sent a bad greeting: {exc}"
                ) from None
            return cls(target, packets, greeting)
        assert scope.cancelled_caught
        raise UpstreamError(
            TARGET_UNAVAILABLE,
            f"hoopy timed out after {target.connect_timeout:g}s connecting to target "
            f"'{target.name}' at {target.address()}",
        )

    def wants_tls(self) -> bool:
        """Decide TLS for this leg from the target's mode and what the server offers."""
        if self.target.tls is UpstreamTLS.OFF or self.target.unix_socket:
            return False
        offered = bool(self.greeting.capabilities & CLIENT_SSL)
        if not offered and self.target.tls is not UpstreamTLS.PREFERRED:
            # Refused before hoopy sends anything: not even a scramble of the password.
            raise UpstreamError(
                TARGET_UNAVAILABLE,
                f"target '{self.target.name}' does not offer TLS but hoopy requires it "
                f'(tls = "{self.target.tls.value}"; "required" is the default for targets '
                "not on loopback): turn TLS on in the server, or set "
                'tls = "preferred" for this target to allow an unencrypted connection',
            )
        return offered

    async def start_tls(self, request: SSLRequest, seq: int) -> int:
        """Send SSLRequest and upgrade; returns the next sequence id."""
        seq = await self.packets.send_payload(build_ssl_request(request), seq)
        ctx: ssl.SSLContext = upstream_context(self.target)
        tls_stream = trio.SSLStream(
            self.packets.stream, ctx, server_hostname=self.target.host, https_compatible=False
        )
        try:
            await self.packets.start_tls(tls_stream)
        except ConnectionClosed as exc:
            raise UpstreamError(
                TARGET_UNAVAILABLE, f"TLS to target '{self.target.name}' failed: {exc}"
            ) from None
        self.tls = True
        return seq

    async def login(
        self, response: HandshakeResponse, password: bytes, seq: int
    ) -> tuple[LoggedIn, int]:
        """Send hoopy's handshake response and complete the exchange (vaulted credentials)."""
        machine = self.login_machine(response.auth_plugin or b"", password, response.capabilities)
        seq = await self.packets.send_payload(build_handshake_response(response), seq)
        return await self.drive(machine, seq)

    def login_machine(self, plugin: bytes, password: bytes, capabilities: int) -> UpstreamLogin:
        """The exchange for hoopy's own login (or COM_CHANGE_USER), with this leg's security
        and the target's pinned ``server_public_key``, read now so a rotated file applies."""
        pinned = None
        if self.target.server_public_key is not None:
            try:
                pinned = self.target.server_public_key.read_bytes()
            except OSError as exc:
                raise UpstreamError(
                    TARGET_UNAVAILABLE,
                    f"hoopy cannot log into target '{self.target.name}': cannot read its "
                    f"server_public_key {self.target.server_public_key}: {exc.strerror}",
                ) from None
        return UpstreamLogin(
            plugin=plugin,
            nonce=self.greeting.auth_data,
            password=password,
            secure=self.tls or self.target.unix_socket is not None,
            capabilities=capabilities,
            server_public_key=pinned,
        )

    async def drive(self, machine: UpstreamLogin, seq: int) -> tuple[LoggedIn, int]:
        """Run an authentication exchange to its end (login or COM_CHANGE_USER)."""
        while True:
            try:
                packet = await self.packets.read_packet()
            except ConnectionClosed:
                raise UpstreamError(
                    TARGET_UNAVAILABLE,
                    f"target '{self.target.name}' closed the connection during login",
                ) from None
            try:
                step: LoginStep = machine.receive(packet.payload)
            except (LoginUnsupported, ProtocolError) as exc:
                raise UpstreamError(
                    TARGET_UNAVAILABLE, f"hoopy cannot log into target '{self.target.name}': {exc}"
                ) from None
            seq = packet.next_seq
            if isinstance(step, LoggedIn):
                return step, seq
            if isinstance(step, Refused):
                raise UpstreamRefused(self.target.name, step.error)
            if isinstance(step, Send):
                seq = await self.packets.send_payload(step.payload, seq)
            else:
                assert isinstance(step, Wait)


class UpstreamRefused(UpstreamError):
    """The target refused hoopy's own credentials: an operator problem, not the client's."""

    def __init__(self, target: str, error: ErrPacket) -> None:
        super().__init__(
            error.code,
            f"target '{target}' refused hoopy's login: {error.message}",
            error.sqlstate,
        )
        self.error = error
