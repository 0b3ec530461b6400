"""The upstream login, sans-IO: hoopy logging into a target with its vaulted credentials.

Feed it the server's packets; it answers with the packets to send. Covers
mysql_native_password, caching_sha2_password (fast path; full authentication over TLS; over
plain TCP only RSA-encrypted to a key the target's config pins), mysql_clear_password over
TLS, and auth switches between them ("Connection Phase", "Authentication Method Switch",
"caching_sha2_password" in the MySQL protocol docs). Also drives COM_CHANGE_USER, which
re-enters the same exchange.

hoopy never asks the server for its public key (``0x02``). A server that chooses the key
chooses who can decrypt the password: an impostor on the path answers with its own key and
reads hoopy's database password. libmysqlclient requests the key only when told to
(``--get-server-public-key``, "Authentication requires secure connection" otherwise) and
uses ``--server-public-key-path`` without asking; hoopy behaves like the latter and has no
equivalent of the former.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hoopy.wire.handshake import (
    AUTH_MORE_DATA_HEADER,
    AUTH_SWITCH_HEADER,
    CACHING_SHA2_PASSWORD,
    CLEAR_PASSWORD,
    FAST_AUTH_SUCCESS,
    NATIVE_PASSWORD,
    PERFORM_FULL_AUTHENTICATION,
    caching_sha2_scramble,
    native_password_scramble,
    parse_auth_switch,
)
from hoopy.wire.messages import ERR_HEADER, OK_HEADER, ErrPacket, OkPacket, parse_err, parse_ok
from hoopy.wire.packets import ProtocolError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey


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
        server_public_key: bytes | None = None,
    ) -> None:
        self.plugin = plugin
        self.nonce = nonce
        self._password = password
        self.secure = secure  # TLS or a unix socket: cleartext may be sent
        self.capabilities = capabilities
        # The target's RSA public key (PEM) as pinned in hoopy's config, never as sent by the
        # server: the only key hoopy encrypts its password to over an unencrypted leg.
        self.server_public_key = server_public_key

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
            if len(payload) == 2 and payload[1] == FAST_AUTH_SUCCESS:
                return Wait()
            if len(payload) == 2 and payload[1] == PERFORM_FULL_AUTHENTICATION:
                if self.secure:
                    return Send(self._password + b"\x00")
                if self.server_public_key is None:
                    raise LoginUnsupported(_FULL_AUTH_IN_CLEAR)
                return Send(
                    rsa_encrypt_password(self.server_public_key, self._password, self.nonce)
                )
            if payload[1:].lstrip().startswith(PEM_BEGIN):
                # A key hoopy did not ask for (it never sends REQUEST_PUBLIC_KEY): a server
                # hoping hoopy would encrypt its password to it.
                raise LoginUnsupported(
                    "the target sent an RSA public key hoopy did not ask for; " + _FIX
                )
            raise ProtocolError("unexpected caching_sha2_password AuthMoreData")
        raise ProtocolError(f"unexpected packet 0x{first:02x} during authentication")


class LoginUnsupported(Exception):
    """The target wants an authentication hoopy cannot perform (message says what to do)."""


PEM_BEGIN = b"-----BEGIN"
_FIX = (
    "hoopy sends its password only over TLS, or RSA-encrypted to a key its config pins, "
    "never to a key the server chooses: turn TLS on in the server and set "
    'tls = "required" (or "verify-ca") for this target, or pin the server\'s key with '
    'server_public_key = "<path to its public_key.pem>"'
)
_FULL_AUTH_IN_CLEAR = (
    "the target asks for hoopy's password itself (caching_sha2_password full authentication) "
    "over an unencrypted connection; " + _FIX
)


def load_server_public_key(pem: bytes) -> RSAPublicKey:
    """The pinned ``server_public_key``: a PEM RSA public key, or ``ValueError`` saying why."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("is not an RSA public key (caching_sha2_password uses RSA)")
    return key


def rsa_encrypt_password(pem: bytes, password: bytes, nonce: bytes) -> bytes:
    """caching_sha2_password over plain TCP: RSA-OAEP(password + NUL XOR nonce), the layout
    libmysqlclient's ``encrypt_password`` uses (OAEP with SHA-1, as the server decrypts)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        key = load_server_public_key(pem)
    except ValueError as exc:
        raise LoginUnsupported(f"the pinned server_public_key {exc}") from None
    plain = password + b"\x00"
    mixed = bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(plain))
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    # OAEP-SHA1 carries at most key bytes - 42 (RFC 8017 section 7.1.1): 214 for 2048 bits.
    if len(mixed) > key.key_size // 8 - 2 * hashes.SHA1.digest_size - 2:
        raise LoginUnsupported(
            "hoopy's password is too long for the pinned server_public_key's RSA size; "
            'use TLS (tls = "required") for this target'
        )
    return key.encrypt(mixed, oaep)
