"""OIDC/JWT tokens as the MySQL password: verification without I/O.

An agent logs in with a JWT (RFC 7519) in JWS Compact Serialization (RFC 7515, section 7.1)
as its password. ``TokenVerifier.verify`` is pure CPU. When it needs keys it does not have,
it raises ``KeysNeeded``; the caller then runs ``TokenVerifier.refresh`` (blocking: it reads a
file or calls the injected ``fetch``) in a worker thread and calls ``verify`` again::

    try:
        token = verifier.verify(password)
    except KeysNeeded as needed:
        await trio.to_thread.run_sync(verifier.refresh, needed.issuer_name, http_fetch)
        token = verifier.verify(password)

Every refusal is a ``TokenRejected`` whose ``reason`` is safe to show the client: it never
contains the token, only short values (issuer, key id, algorithm) sanitised and truncated.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from joserfc import jwt
from joserfc.errors import UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from hoopy.identity.jwks import (
    ALG_KEYS,
    PublishedKey,
    StrictDecoder,
    http_fetch,
    load_jwks,
    url_scheme,
)

log = logging.getLogger("hoopy.identity")

__all__ = [
    "DEFAULT_ALGORITHMS",
    "IssuerConfig",
    "KeysNeeded",
    "TokenRejected",
    "TokenVerifier",
    "VerifiedToken",
    "claim_at",
    "http_fetch",
]

MAX_TOKEN_BYTES = 64 * 1024

DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
DEFAULT_MAX_TOKEN_LIFETIME = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted token issuer (an OIDC provider, a CI system, hoopy's dev keys)."""

    name: str
    issuer: str
    audience: tuple[str, ...]
    jwks_file: Path | None
    jwks_url: str | None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: float = 60.0
    subject_claim: str = "sub"
    groups_claim: str = "groups"
    required_claims: tuple[str, ...] = ()
    jwks_min_refresh_interval: float = 30.0
    jwks_max_age: float = 3600.0
    # The furthest in the future a token's exp may lie when hoopy verifies it. A token is a
    # bearer password: one that claims to be good for years (or exp = 1e300) is refused
    # rather than honoured that long. One day covers the usual issuers (GitHub Actions
    # ~10 min, Kubernetes projected service-account tokens 1 h, OIDC access tokens <= 1 day).
    max_token_lifetime: float = DEFAULT_MAX_TOKEN_LIFETIME

    def __post_init__(self) -> None:
        where = f"issuer {self.name!r}"
        if not self.name or not self.issuer:
            raise ValueError(f"{where}: name and issuer must not be empty")
        if not isinstance(self.audience, tuple) or not self.audience:
            raise ValueError(f"{where}: audience must be a non-empty tuple of strings")
        if not all(isinstance(a, str) and a for a in self.audience):
            raise ValueError(f"{where}: audience must be a non-empty tuple of strings")
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError(f"{where}: set exactly one of jwks_file and jwks_url")
        if self.jwks_url is not None and url_scheme(self.jwks_url) not in ("http", "https"):
            raise ValueError(f"{where}: jwks_url must be an http(s) URL")
        if not self.algorithms:
            raise ValueError(f"{where}: algorithms must not be empty")
        for alg in self.algorithms:
            if alg not in ALG_KEYS:
                raise ValueError(
                    f"{where}: algorithm {alg!r} is not allowed "
                    f"(allowed: {', '.join(ALG_KEYS)}; never 'none' or HMAC)"
                )
        for value in (self.leeway, self.jwks_min_refresh_interval, self.jwks_max_age):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{where}: times must be finite and not negative")
        if not math.isfinite(self.max_token_lifetime) or self.max_token_lifetime <= 0:
            raise ValueError(f"{where}: max_token_lifetime must be finite and greater than zero")
        if not self.subject_claim or not self.groups_claim or not all(self.required_claims):
            raise ValueError(f"{where}: claim paths must not be empty")


class TokenRejected(Exception):
    """A refused token. ``reason`` may be sent to the client: it never contains the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysNeeded(Exception):
    """``verify`` needs a (fresh) JWKS for ``issuer_name``: call ``refresh``, then retry."""

    def __init__(self, issuer_name: str) -> None:
        super().__init__(f"the keys of issuer {issuer_name!r} need a refresh")
        self.issuer_name = issuer_name


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    issuer_name: str
    issuer: str
    subject: str
    groups: tuple[str, ...]
    claims: Mapping[str, Any] = field(hash=False, compare=False)  # the full payload
    expires_at: float
    token_id: str | None  # jti
    client_id: str | None  # azp, or client_id (RFC 9068)


def claim_at(claims: Mapping[str, Any], path: str) -> Any | None:
    """The value at a dotted ``path`` (``realm_access.roles``), or None if absent.

    A top-level claim whose name contains dots (Auth0-style ``https://example.com/roles``)
    is found by its exact name first.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True, slots=True)
class _KeyState:
    """Replaced whole, never mutated: ``refresh`` runs in a worker thread beside ``verify``."""

    keys: tuple[PublishedKey, ...] | None = None  # None: never loaded
    loaded_at: float | None = None
    last_attempt: float | None = None  # when the last refresh (successful or not) ended


class _Registry(JWSRegistry):
    # joserfc's defaults (512-byte header, 1 KiB signature) refuse x5c headers and RSA keys
    # over 6144 bits; our own 64 KiB cap on the whole token comes first anyway.
    max_header_length = 16 * 1024
    max_signature_length = 4 * 1024

    def get_alg(self, name: str) -> JWSAlgModel:
        # Only the algorithm we allowed, and without joserfc's warning on every "EdDSA"
        # (RFC 9864 deprecates the polymorphic name, not the algorithm; IdPs still use it).
        if not self.allowed or name not in self.allowed or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"algorithm {name!r} is not allowed")
        return self.algorithms[name]


_MALFORMED = "token is malformed"
_B64URL = re.compile(rb"[A-Za-z0-9_-]*")


class TokenVerifier:
    """Verifies tokens of the configured issuers; keeps each issuer's JWKS."""

    def __init__(
        self, issuers: Sequence[IssuerConfig], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._issuers = {i.name: i for i in issuers}
        self._by_iss = {i.issuer: i for i in issuers}
        if len(self._issuers) != len(issuers) or len(self._by_iss) != len(issuers):
            raise ValueError("issuer names and issuer URLs must be unique")
        self._clock = clock
        self._state = {name: _KeyState() for name in self._issuers}
        self._locks = {name: threading.Lock() for name in self._issuers}

    @property
    def issuers(self) -> tuple[IssuerConfig, ...]:
        return tuple(self._issuers.values())

    def needs_refresh(self, issuer_name: str) -> bool:
        """True when the issuer has no keys, or its URL keys are older than ``jwks_max_age``,
        and the refresh rate limit allows a refresh now."""
        config, state = self._issuers[issuer_name], self._state[issuer_name]
        if not self._refresh_allowed(config, state):
            return False
        if state.keys is None or state.loaded_at is None:
            return True
        age = self._clock() - state.loaded_at
        return config.jwks_url is not None and age >= config.jwks_max_age

    def _refresh_allowed(self, config: IssuerConfig, state: _KeyState) -> bool:
        if state.last_attempt is None:
            return True
        return self._clock() - state.last_attempt >= config.jwks_min_refresh_interval

    def verify(self, token: str | bytes) -> VerifiedToken:
        """Verify a JWS-signed JWT (RFC 7519 section 7.2) and return who it names.

        Raises ``TokenRejected`` for every bad input, ``KeysNeeded`` when the token's key is
        unknown (or the keys are stale) and a refresh is allowed now.
        """
        header, payload = _parse_unverified(token)
        iss = payload.get("iss")
        if not isinstance(iss, str) or not iss:
            raise TokenRejected("token has no issuer")
        config = self._by_iss.get(iss)
        if config is None:
            raise TokenRejected(f"token issuer {_shown(iss)} is not trusted")
        alg = header["alg"]
        # RFC 7515 section 10.7 / RFC 8725 section 3.1: the algorithm is the verifier's
        # choice, checked before any key is used.
        if alg not in config.algorithms:
            raise TokenRejected(f"token algorithm {_shown(alg)} is not allowed")
        candidates = self._candidates(config, header.get("kid"), alg)
        claims = self._check_signature(token, alg, candidates)
        if claims.get("iss") != config.issuer:  # the same bytes; checked again for safety
            raise TokenRejected(_MALFORMED)
        return self._check_claims(config, claims)

    def _candidates(self, config: IssuerConfig, kid: str | None, alg: str) -> list[PublishedKey]:
        state = self._state[config.name]
        if self.needs_refresh(config.name):
            raise KeysNeeded(config.name)
        if state.keys is None:
            raise TokenRejected(f"cannot load the keys of issuer {_shown(config.name)}")
        kty, curves = ALG_KEYS[alg]
        fitting = [
            k
            for k in state.keys
            if k.kty == kty
            and (curves is None or k.crv in curves)
            and (k.alg is None or k.alg == alg)
        ]
        if kid is not None:
            # RFC 7515 section 4.1.4: the key id selects the key.
            fitting = [k for k in fitting if k.kid == kid]
        if fitting:
            return fitting
        if self._refresh_allowed(config, state):
            raise KeysNeeded(config.name)
        if kid is None:
            raise TokenRejected(f"no key of issuer {_shown(config.name)} fits the token")
        raise TokenRejected(f"token key id {_shown(kid)} is unknown")

    def _check_signature(
        self, token: str | bytes, alg: str, candidates: list[PublishedKey]
    ) -> dict[str, Any]:
        registry = _Registry(algorithms=[alg], strict_check_header=False)
        for candidate in candidates:
            try:
                decoded = jwt.decode(
                    token, KeySet([candidate.key]), registry=registry, decoder_cls=StrictDecoder
                )
            except Exception as exc:  # any failure is a refusal, never a crash
                log.debug("signature check with key %r failed: %r", candidate.kid, exc)
                continue
            return dict(decoded.claims)
        raise TokenRejected("token signature is invalid")

    def _check_claims(self, config: IssuerConfig, claims: dict[str, Any]) -> VerifiedToken:
        now = self._clock()
        leeway = config.leeway
        # RFC 7519 section 4.1.4: reject on or after exp. hoopy requires it: a password that
        # never expires is not what a token login is for. No leeway here: a session checks
        # exp before every command (docs/security.md), and one rule for both moments means a
        # token is good exactly while now < exp; a login that could only ever run into
        # "token has expired" on its first statement would help nobody. The RFC's leeway
        # ("MAY", section 4.1.4) is spent on nbf and iat, where skew locks out fresh tokens.
        exp = _numeric_date(claims, "exp")
        if exp is None:
            raise TokenRejected("token has no expiration time")
        if now >= exp:
            raise TokenRejected("token has expired")
        if exp - now > config.max_token_lifetime:
            raise TokenRejected(
                "token expires too far in the future (more than the issuer's "
                f"max_token_lifetime, {config.max_token_lifetime:g} s, from now)"
            )
        # Sections 4.1.5 and 4.1.6: not before nbf; an iat in the future is as suspicious.
        nbf = _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
        if (nbf is not None and now < nbf - leeway) or (iat is not None and iat > now + leeway):
            raise TokenRejected("token is not valid yet")
        # Section 4.1.3: aud is a string or an array of strings; one must be ours.
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise TokenRejected("token audience does not match")
        if not set(audiences) & set(config.audience):
            raise TokenRejected("token audience does not match")
        for path in config.required_claims:
            if claim_at(claims, path) is None:
                raise TokenRejected(f"token lacks required claim {_shown(path)}")
        subject = claim_at(claims, config.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("token has no subject")
        groups = claim_at(claims, config.groups_claim)
        if groups is None:
            groups = []
        elif isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise TokenRejected(
                f"token claim {_shown(config.groups_claim)} is not a string or a list of strings"
            )
        jti, azp = claims.get("jti"), claims.get("azp", claims.get("client_id"))
        return VerifiedToken(
            issuer_name=config.name,
            issuer=config.issuer,
            subject=subject,
            groups=tuple(groups),
            claims=MappingProxyType(claims),
            expires_at=exp,
            token_id=jti if isinstance(jti, str) else None,
            client_id=azp if isinstance(azp, str) else None,
        )

    def refresh(
        self, issuer_name: str, fetch: Callable[[str], bytes], *, force: bool = False
    ) -> None:
        """Load the issuer's JWKS (RFC 7517 section 5) from its file or ``fetch(url)``.

        Blocking: run it in a worker thread. Concurrent calls are serialised, and a call
        made within ``jwks_min_refresh_interval`` of the last one does nothing unless
        ``force``: the sessions that all got ``KeysNeeded`` at once cause a single fetch.
        On failure the old keys stay in use and ``TokenRejected`` is raised; the cause is
        logged.
        """
        config = self._issuers[issuer_name]
        with self._locks[issuer_name]:
            state = self._state[issuer_name]
            source = str(config.jwks_file or config.jwks_url)
            if not force and not self._refresh_allowed(config, state):
                return
            try:
                if config.jwks_file is not None:
                    data = config.jwks_file.read_bytes()
                else:
                    assert config.jwks_url is not None
                    data = fetch(config.jwks_url)
                keys = load_jwks(data, issuer_name)
            except Exception as exc:  # whatever fetch raises is logged
                self._state[issuer_name] = _KeyState(state.keys, state.loaded_at, self._clock())
                log.warning(
                    "cannot load the keys of issuer %r from %s: %s", issuer_name, source, exc
                )
                raise TokenRejected(
                    f"cannot load the keys of issuer {_shown(issuer_name)}"
                ) from None
            now = self._clock()
            self._state[issuer_name] = _KeyState(keys, now, now)
            log.info("loaded %d key(s) of issuer %r from %s", len(keys), issuer_name, source)


def _parse_unverified(token: str | bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and payload of a compact JWS (RFC 7515 section 7.1), not yet trusted."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected(_MALFORMED)
    try:
        raw = token.encode("ascii") if isinstance(token, str) else bytes(token)
    except (UnicodeError, TypeError):
        raise TokenRejected(_MALFORMED) from None
    parts = raw.split(b".")
    if len(parts) != 3 or not all(_B64URL.fullmatch(p) for p in parts):
        raise TokenRejected(_MALFORMED)
    try:
        header = json.loads(_b64url(parts[0]), cls=StrictDecoder)
        payload = json.loads(_b64url(parts[1]), cls=StrictDecoder)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise TokenRejected(_MALFORMED) from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise TokenRejected(_MALFORMED)
    if not isinstance(header.get("alg"), str) or not isinstance(header.get("kid", ""), str):
        raise TokenRejected(_MALFORMED)
    # We understand no critical extensions (RFC 7515 section 4.1.11), and an unencoded
    # payload (RFC 7797) is not a JWT.
    if "crit" in header or "b64" in header:
        raise TokenRejected(_MALFORMED)
    return header, payload


def _b64url(segment: bytes) -> bytes:
    if len(segment) % 4 == 1:
        raise ValueError("impossible base64 length")
    try:
        return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate (RFC 7519 section 2): a JSON number of seconds since the epoch."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(_MALFORMED)
    try:
        result = float(value)
    except OverflowError:
        raise TokenRejected(_MALFORMED) from None
    if not math.isfinite(result):
        raise TokenRejected(_MALFORMED)
    return result


def _shown(value: str, limit: int = 64) -> str:
    """A quoted value for a refusal: printable ASCII only, cut to ``limit`` characters."""
    clean = "".join(c if " " <= c <= "~" and c != "'" else "?" for c in value[:limit])
    return f"'{clean}...'" if len(value) > limit else f"'{clean}'"
