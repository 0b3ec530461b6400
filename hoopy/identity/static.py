"""Gateway users: static users from the config, verified by password scramble.

The plugins follow mysql-mimic's ``AuthPlugin`` protocol (an async generator that yields
AuthMoreData payloads and ends with ``Success`` or ``Forbidden``); hoopy's front door drives
them on trio and closes the connection on every refusal.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from mysql_mimic.auth import AuthInfo, AuthPlugin, AuthState, Forbidden, Success

from hoopy.config.model import GatewayUser
from hoopy.wire.handshake import (
    CACHING_SHA2_PASSWORD,
    NATIVE_PASSWORD,
    SCRAMBLE_LENGTH,
    verify_caching_sha2_scramble,
    verify_native_scramble,
)

# MySQL's scrambles avoid NUL and '$' and stay 7-bit so that every client, including ones
# that treat the nonce as a C string, reads all 20 bytes.
_NONCE_ALPHABET = bytes(c for c in range(0x21, 0x7F) if c != ord("$"))


def new_nonce() -> bytes:
    return bytes(secrets.choice(_NONCE_ALPHABET) for _ in range(SCRAMBLE_LENGTH))


class FastAuthSuccess(Success):
    """caching_sha2_password fast path: the front door sends AuthMoreData 0x03 before OK."""


class _ScramblePlugin(AuthPlugin):
    def __init__(self, users: Mapping[str, GatewayUser]) -> None:
        self.users = users

    def _verify(self, user: GatewayUser, scramble: bytes, nonce: bytes) -> bool:
        raise NotImplementedError

    def _success(self, name: str) -> Success:
        return Success(name)

    async def auth(self, auth_info: AuthInfo | None = None) -> AuthState:
        if (
            auth_info is not None
            and auth_info.client_plugin_name == self.name
            and auth_info.handshake_auth_data
        ):
            # The client already scrambled with this plugin and the greeting's nonce.
            nonce = auth_info.handshake_auth_data
        else:
            # Auth switch: a fresh nonce, NUL-terminated as MySQL sends it.
            nonce = new_nonce()
            auth_info = yield nonce + b"\x00"
        assert auth_info is not None
        user = self.users.get(auth_info.username)
        if user is not None and self._verify(user, auth_info.data, nonce):
            yield self._success(user.name)
        else:
            yield Forbidden(
                f"Access denied for user '{auth_info.username}' (wrong user or password)"
            )


class CachingSha2Plugin(_ScramblePlugin):
    name = CACHING_SHA2_PASSWORD.decode()
    client_plugin_name = name

    def _verify(self, user: GatewayUser, scramble: bytes, nonce: bytes) -> bool:
        return verify_caching_sha2_scramble(user.sha2_hash, scramble, nonce)

    def _success(self, name: str) -> Success:
        return FastAuthSuccess(name)


class NativePasswordPlugin(_ScramblePlugin):
    name = NATIVE_PASSWORD.decode()
    client_plugin_name = name

    def _verify(self, user: GatewayUser, scramble: bytes, nonce: bytes) -> bool:
        return verify_native_scramble(user.native_hash, scramble, nonce)
