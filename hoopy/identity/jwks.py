"""JSON Web Key Sets (RFC 7517): which keys hoopy verifies tokens with, and fetching them.

No I/O here but ``http_fetch``, which the caller passes to ``TokenVerifier.refresh``.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPMessage
from types import MappingProxyType
from typing import IO, Any

from joserfc.jwk import JWKRegistry, Key

log = logging.getLogger("hoopy.identity")

MAX_JWKS_BYTES = 1024 * 1024
MIN_RSA_BITS = 2048

# What each asymmetric JWS algorithm (RFC 7518 section 3.1, RFC 8037, RFC 9864) needs of a
# key: its "kty" and, for curves, its "crv". Only these can be configured: "none" and the
# HMAC family are refused outright, because a verifier that accepts HS256 can be fooled into
# using a public key as the shared secret.
ALG_KEYS: Mapping[str, tuple[str, frozenset[str] | None]] = MappingProxyType(
    {
        **{f"{p}{n}": ("RSA", None) for p in ("RS", "PS") for n in (256, 384, 512)},
        "ES256": ("EC", frozenset({"P-256"})),
        "ES384": ("EC", frozenset({"P-384"})),
        "ES512": ("EC", frozenset({"P-521"})),
        "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
        "Ed25519": ("OKP", frozenset({"Ed25519"})),
        "Ed448": ("OKP", frozenset({"Ed448"})),
    }
)


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A verification key and the JWK members that choose it."""

    kid: str | None  # as published: joserfc fills in a thumbprint kid we must not match on
    kty: str
    crv: str | None
    alg: str | None
    key: Key


class StrictDecoder(json.JSONDecoder):
    """JSON as RFC 8259 has it: no NaN/Infinity (an ``exp`` of Infinity never expires)
    and no duplicate names (RFC 7515 section 5.2 allows rejecting them; parsers disagree
    on which duplicate wins)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["parse_constant"] = _refuse_constant
        kwargs["object_pairs_hook"] = _unique_object
        super().__init__(**kwargs)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    return obj


_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def load_jwks(data: bytes, issuer_name: str) -> tuple[PublishedKey, ...]:
    """The usable signature keys of a JWK Set. Keys we cannot or must not use are skipped
    with a warning (RFC 7517 section 5: ignore what you do not understand); none is an error.
    """
    if len(data) > MAX_JWKS_BYTES:
        raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
    document = json.loads(data, cls=StrictDecoder)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWK Set (no "keys" array)')
    keys: list[PublishedKey] = []
    for index, entry in enumerate(document["keys"]):
        problem = _unusable(entry)
        if problem is None:
            if any(member in entry for member in _PRIVATE_MEMBERS):
                log.warning("issuer %r: key %d holds private material", issuer_name, index)
                entry = {k: v for k, v in entry.items() if k not in _PRIVATE_MEMBERS}
            try:
                key = JWKRegistry.import_key(entry)
            except Exception as exc:  # one bad key must not hide the others
                problem = f"cannot import it ({exc})"
            else:
                size = getattr(key.raw_value, "key_size", MIN_RSA_BITS)
                if key.key_type == "RSA" and size < MIN_RSA_BITS:
                    problem = f"RSA keys need at least {MIN_RSA_BITS} bits"
                else:
                    kid, crv, alg = entry.get("kid"), entry.get("crv"), entry.get("alg")
                    keys.append(PublishedKey(kid, entry["kty"], crv, alg, key))
                    continue
        log.warning("issuer %r: skipping key %d of the JWKS: %s", issuer_name, index, problem)
    if not keys:
        raise ValueError("the JWKS has no usable signature keys")
    return tuple(keys)


def _unusable(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not a JSON object"
    kty = entry.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        return f"key type {kty!r} is not an asymmetric signature key type"
    for member in ("kid", "crv", "alg"):
        if not isinstance(entry.get(member, ""), str):
            return f'"{member}" is not a string'
    if entry.get("use", "sig") != "sig":
        return "it is not a signature key (use)"
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "it is not a verification key (key_ops)"
    return None


def url_scheme(url: str) -> str:
    return urllib.parse.urlsplit(url).scheme.lower()


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if url_scheme(newurl) not in ("http", "https"):
            raise ValueError(f"refusing a redirect to {newurl!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def http_fetch(url: str, timeout: float = 5.0) -> bytes:
    """GET ``url`` (http or https only) and return the body; for ``TokenVerifier.refresh``.

    Blocking. Redirects to other schemes and bodies over 1 MiB are refused; HTTP errors
    raise ``urllib.error.HTTPError``.
    """
    if url_scheme(url) not in ("http", "https"):
        raise ValueError(f"refusing to fetch {url!r}: only http and https are allowed")
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    request = urllib.request.Request(
        url, headers={"Accept": "application/jwk-set+json, application/json"}
    )
    with opener.open(request, timeout=timeout) as response:
        body: bytes = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"{url} returned more than {MAX_JWKS_BYTES} bytes")
    return body
