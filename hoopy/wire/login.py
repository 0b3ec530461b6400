"""The upstream login, sans-IO: hoopy logging into a target with its vaulted credentials.

Feed it the server's packets; it answers with the packets to send. Covers
mysql_native_password, caching_sha2_password (fast path; full authentication over TLS; RSA
key exchange over plain TCP), mysql_clear_password over TLS, and auth switches between them
("Connection Phase", "Authentication Method Switch", "caching_sha2_password" in the MySQL
protocol docs). Also drives COM_CHANGE_USER, which re-enters the same exchange.
"""

from __future__ import annotations

from dataclasses import dataclass

from hoopy.wire.handshake import (
    AUTH_MORE_DATA_HEADER,
    AUTH_SWITCH_HEADER,
    CACHING_SHA2_PASSWORD,
    CLEAR_PASSWORD,
    FAST_AUTH_SUCCESS,
    NATIVE_PASSWORD,
    PERFORM_FULL_AUTHENTICATION,
    REQUEST_PUBLIC_KEY,
    caching_sha2_scramble,
    native_password_scramble,
    parse_auth_switch,
)
from hoopy.wire.messages import ERR_HEADER, OK_HEADER, ErrPacket, OkPacket, parse_err, parse_ok
from hoopy.wire.packets import ProtocolError


@dataclass(frozen=True, slots=True)
class Send:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to send; read the next server packet."""


@dataclass(frozen=True, slots=True)
class LoggedIn:
    ok: OkPacket
    payload: bytes  # the server's OK as sent, for relaying unchanged


@dataclass(frozen=True, slots=True)
class Refused:
    error: ErrPacket


LoginStep = Send | Wait | LoggedIn | Refused

SUPPORTED_PLUGINS = (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD)


def initial_auth_response(plugin: bytes, password: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    """The plugin hoopy answers the greeting with, and its first auth response."""
    if plugin == CACHING_SHA2_PASSWORD:
        return plugin, caching_sha2_scramble(password, nonce)
    # Any other server default: answer with mysql_native_password and let the server switch.
    return NATIVE_PASSWORD, native_password_scramble(password, nonce)


class UpstreamLogin:
    """Follows the server's side of an authentication exchange after the first response."""

    def __init__(
        self,
        *,
        plugin: bytes,
        nonce: bytes,
        password: bytes,
        secure: bool,
        capabilities: int,
    ) -> None:
        self.plugin = plugin
        self.nonce = nonce
        self._password = password
        self.secure = secure  # TLS or a unix socket: cleartext may be sent
        self.capabilities = capabilities
        self._awaiting_key = False

    def receive(self, payload: bytes) -> LoginStep:
        if not payload:
            raise ProtocolError("empty packet during authentication")
        first = payload[0]
        if first == OK_HEADER:
            return LoggedIn(parse_ok(payload, self.capabilities), payload)
        if first == ERR_HEADER:
            return Refused(parse_err(payload, self.capabilities))
        if first == AUTH_SWITCH_HEADER:
            switch = parse_auth_switch(payload)
            self.plugin = switch.plugin
            if switch.data:
                self.nonce = switch.data
            if switch.plugin == NATIVE_PASSWORD:
                return Send(native_password_scramble(self._password, self.nonce))
            if switch.plugin == CACHING_SHA2_PASSWORD:
                return Send(caching_sha2_scramble(self._password, self.nonce))
            if switch.plugin == CLEAR_PASSWORD:
                if not self.secure:
                    raise LoginUnsupported(
                        "the target asks for mysql_clear_password over an unencrypted "
                        'connection; set tls = "required" for this target'
                    )
                return Send(self._password + b"\x00")
            raise LoginUnsupported(
                f"the target asks for auth plugin {switch.plugin.decode(errors='replace')!r}, "
                "which hoopy cannot use for its own login (use mysql_native_password or "
                "caching_sha2_password for hoopy's account)"
            )
        if first == AUTH_MORE_DATA_HEADER:
            if self.plugin != CACHING_SHA2_PASSWORD:
                raise ProtocolError(
                    "unexpected AuthMoreData for " + self.plugin.decode(errors="replace")
                )
            if self._awaiting_key:
                self._awaiting_key = False
                return Send(_rsa_encrypt_password(payload[1:], self._password, self.nonce))
            if len(payload) == 2 and payload[1] == FAST_AUTH_SUCCESS:
                return Wait()
            if len(payload) == 2 and payload[1] == PERFORM_FULL_AUTHENTICATION:
                if self.secure:
                    return Send(self._password + b"\x00")
                self._awaiting_key = True
                return Send(bytes((REQUEST_PUBLIC_KEY,)))
            raise ProtocolError("unexpected caching_sha2_password AuthMoreData")
        raise ProtocolError(f"unexpected packet 0x{first:02x} during authentication")


class LoginUnsupported(Exception):
    """The target wants an authentication hoopy cannot perform (message says what to do)."""


def _rsa_encrypt_password(pem: bytes, password: bytes, nonce: bytes) -> bytes:
    """caching_sha2_password over plain TCP: RSA-OAEP(password + NUL XOR nonce)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ProtocolError("the target's public key is not an RSA key")
    plain = password + b"\x00"
    mixed = bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(plain))
    return key.encrypt(
        mixed, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    )
