"""Token logins: an OIDC/JWT token sent as the MySQL password (DESIGN.md, "Authentication with
tokens").

hoopy announces ``caching_sha2_password`` and, unless the client's scramble matches a token it
verified before, answers "perform full authentication" (0x01 0x04): over TLS or a unix socket
every stock client then sends the password, i.e. the token, in clear, with no client option.
Over plain TCP hoopy refuses instead of asking, with a message naming the fix, so the token
never crosses the network in clear; the RSA key exchange is not offered (a 2048-bit key
cannot carry a real JWT). ``mysql_clear_password``
is accepted on a secure leg, or on plain loopback TCP when the listener allows it; MySQL 9's
``authentication_openid_connect_client`` sends ``0x01`` + length-encoded token.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from hoopy.config.model import Config, Listener
from hoopy.gateway.stream import PacketStream
from hoopy.identity.principal import Principal
from hoopy.identity.static import new_nonce
from hoopy.identity.tokens import KeysNeeded, TokenRejected, TokenVerifier, http_fetch
from hoopy.wire.handshake import (
    AUTH_MORE_DATA_HEADER,
    CACHING_SHA2_PASSWORD,
    CLEAR_PASSWORD,
    PERFORM_FULL_AUTHENTICATION,
    REQUEST_PUBLIC_KEY,
    HandshakeResponse,
    build_auth_switch,
    caching_sha2_hash,
    verify_caching_sha2_scramble,
)
from hoopy.wire.packets import ProtocolError, Reader

log = logging.getLogger("hoopy.identity")

OPENID_CONNECT_CLIENT = b"authentication_openid_connect_client"
# Tokens remembered for caching_sha2 fast-path reconnects. Each entry costs one SHA-256 per
# login attempt by the same user name, so both the total and the per-name count are bounded.
TOKEN_CACHE_SIZE = 10_000
TOKEN_CACHE_PER_USER = 8
# How long a verified token may log in by scramble alone, without its signature being checked
# again; entries end at exp or this long after the full login, whichever comes first. The
# same hour as an issuer's default jwks_max_age: a key withdrawn from the JWKS stops
# fast-path logins about when it stops full logins.
TOKEN_CACHE_MAX_AGE = 3600.0


class TokenLoginFailed(Exception):
    def __init__(self, message: str, seq: int) -> None:
        super().__init__(message)
        self.message = message
        self.seq = seq


@dataclass(frozen=True, slots=True)
class _Cached:
    verifier_hash: bytes  # SHA256(SHA256(token)), what checks a caching_sha2 scramble
    principal: Principal
    until: float  # min(exp, added + TOKEN_CACHE_MAX_AGE)


class TokenCache:
    """Verified tokens by user name, for the caching_sha2 fast path. An entry lives until the
    token's ``exp`` or ``TOKEN_CACHE_MAX_AGE`` after it was added, whichever is sooner."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._entries: OrderedDict[str, list[_Cached]] = OrderedDict()
        self._size = 0
        self._clock = clock

    def __len__(self) -> int:
        return self._size

    def add(self, username: str, token: bytes, principal: Principal) -> None:
        verifier_hash = caching_sha2_hash(token)
        now = self._clock()
        until = now + TOKEN_CACHE_MAX_AGE
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        old = self._entries.pop(username, [])
        self._size -= len(old)
        entries = [e for e in old if e.until > now and e.verifier_hash != verifier_hash]
        entries.append(_Cached(verifier_hash, principal, until))
        entries = entries[-TOKEN_CACHE_PER_USER:]
        self._entries[username] = entries
        self._size += len(entries)
        while self._size > TOKEN_CACHE_SIZE and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._size -= len(evicted)

    def match(self, username: str, scramble: bytes, nonce: bytes) -> Principal | None:
        # The same rule as the login and the per-command check: good while now < exp.
        now = self._clock()
        for entry in self._entries.get(username, ()):
            if entry.until > now and verify_caching_sha2_scramble(
                entry.verifier_hash, scramble, nonce
            ):
                return entry.principal
        return None


class TokenAuthenticator:
    """Verifies token logins for every listener whose target uses ``login = "tokens"``."""

    def __init__(self, config: Config) -> None:
        self.verifier = TokenVerifier(list(config.issuers.values()))
        self.cache = TokenCache()

    async def verify(self, token: str) -> Principal:
        for attempt in range(2):
            try:
                verified = self.verifier.verify(token)
            except KeysNeeded as need:
                if attempt:
                    raise TokenRejected("token key id is unknown") from None
                # Fetching a JWKS may block on the network: a worker thread, never the loop.
                await trio.to_thread.run_sync(self.verifier.refresh, need.issuer_name, http_fetch)
                continue
            return Principal(
                name=verified.subject,
                method="token",
                groups=verified.groups,
                issuer=verified.issuer_name,
                claims=verified.claims,
                token_id=verified.token_id,
                client_id=verified.client_id,
                expires_at=verified.expires_at,
            )
        raise AssertionError("unreachable")

    async def authenticate(
        self,
        client: PacketStream,
        response: HandshakeResponse,
        nonce: bytes,
        seq: int,
        *,
        secure: bool,
        listener: Listener,
    ) -> tuple[Principal, int, bool]:
        """Run the token exchange; returns the principal, the client's next sequence id and
        whether it was a caching_sha2 fast-path match (the caller then sends "fast auth
        success", after any login delay, before the OK)."""
        username = response.username.decode("utf-8", "replace")
        plugin = response.auth_plugin or b""
        data = response.auth_response
        cleartext_ok = secure or listener.allow_cleartext_password
        if plugin == CACHING_SHA2_PASSWORD and len(data) == 32:
            cached = self.cache.match(username, data, nonce)
            if cached is not None:
                return cached, seq, True
        if plugin == CLEAR_PASSWORD and data:
            if not cleartext_ok:
                raise TokenLoginFailed(_INSECURE, seq)
            token = data.rstrip(b"\x00")
        elif plugin == OPENID_CONNECT_CLIENT:
            if not secure:
                raise TokenLoginFailed(_INSECURE if data else _NEEDS_ENCRYPTION, seq)
            if not data:
                seq = await client.send_payload(build_auth_switch(OPENID_CONNECT_CLIENT, b""), seq)
                packet = await client.read_packet()
                seq, data = packet.next_seq, packet.payload
            token = _openid_connect_token(data, seq)
        else:
            if plugin != CACHING_SHA2_PASSWORD:
                # Another default plugin (mysql_native_password...): switch to ours first.
                nonce = new_nonce()
                seq = await client.send_payload(
                    build_auth_switch(CACHING_SHA2_PASSWORD, nonce + b"\x00"), seq
                )
                packet = await client.read_packet()
                seq = packet.next_seq
                cached = self.cache.match(username, packet.payload, nonce)
                if cached is not None:
                    return cached, seq, True
            if not secure:
                # Refuse before asking for the token: in clear it would cross the network,
                # and the RSA key exchange cannot carry it.
                raise TokenLoginFailed(_NEEDS_ENCRYPTION, seq)
            seq = await client.send_payload(
                bytes((AUTH_MORE_DATA_HEADER, PERFORM_FULL_AUTHENTICATION)), seq
            )
            packet = await client.read_packet()
            seq = packet.next_seq
            if packet.payload == bytes((REQUEST_PUBLIC_KEY,)):
                raise TokenLoginFailed(
                    "hoopy does not offer the RSA key exchange (it cannot carry a token): "
                    "connect over TLS (e.g. --ssl-ca=<hoopy's certificate>) or the unix socket",
                    seq,
                )
            token = packet.payload.rstrip(b"\x00")
        try:
            principal = await self.verify(token.decode("utf-8", "strict"))
        except UnicodeDecodeError:
            raise TokenLoginFailed("Access denied: token is malformed", seq) from None
        except TokenRejected as exc:
            raise TokenLoginFailed(f"Access denied: {exc.reason}", seq) from None
        self.cache.add(username, token, principal)
        return principal, seq, False


_NEEDS_ENCRYPTION = (
    "token logins need an encrypted connection: connect with TLS (e.g. --ssl-ca=<hoopy's "
    "certificate>) or over the unix socket (the token was not sent)"
)
_INSECURE = (
    "hoopy refuses a token sent in clear over an unencrypted connection: connect with TLS "
    "(e.g. --ssl-ca=<hoopy's certificate>) or over the unix socket"
)


def _openid_connect_token(data: bytes, seq: int) -> bytes:
    """``authentication_openid_connect_client``'s answer: 0x01, then the length-encoded token."""
    try:
        r = Reader(data)
        if r.uint(1) != 0x01:
            raise ProtocolError("unknown capability byte")
        return r.lenenc_str()
    except ProtocolError:
        raise TokenLoginFailed(
            "Access denied: malformed OpenID Connect login packet", seq
        ) from None
