"""Token verification with real keys and real signatures: no mocks of the verifier."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import threading
import urllib.error
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jws, jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from hoopy.identity.tokens import (
    IssuerConfig,
    KeysNeeded,
    TokenRejected,
    TokenVerifier,
    VerifiedToken,
    claim_at,
    http_fetch,
)

NOW = 1_800_000_000.0
ISS = "https://idp.example.com/realms/agents"
AUD = "hoopy"


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Keys:
    rsa: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, {"kid": "rsa1"}))
    ec: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256", {"kid": "ec1"}))
    ed: OKPKey = field(default_factory=lambda: OKPKey.generate_key("Ed25519", {"kid": "ed1"}))

    def jwks(self, *keys: Any) -> bytes:
        chosen = keys or (self.rsa, self.ec, self.ed)
        return json.dumps({"keys": [k.as_dict(private=False) for k in chosen]}).encode()


_KEYS = Keys()  # RSA generation is slow: one set for the module


@pytest.fixture
def keys() -> Keys:
    return _KEYS


@pytest.fixture
def jwks_file(tmp_path: Path, keys: Keys) -> Path:
    path = tmp_path / "jwks.json"
    path.write_bytes(keys.jwks())
    return path


def issuer(jwks_file: Path | None = None, **options: Any) -> IssuerConfig:
    return IssuerConfig(
        name="idp",
        issuer=ISS,
        audience=(AUD,),
        jwks_file=jwks_file,
        jwks_url=None if jwks_file else "http://127.0.0.1:1/jwks",
        **options,
    )


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "agent-7",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 300,
        "jti": "j-1",
        "azp": "ci-runner",
        "groups": ["analysts"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: Mapping[str, Any] | str, key: Any, alg: str = "RS256", **header: Any) -> str:
    """A real signature; a str payload is signed as is (for JSON that json.dumps won't make)."""
    hdr = {"alg": alg, "kid": key.kid, **header}
    hdr = {k: v for k, v in hdr.items() if v is not None}
    raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    with warnings.catch_warnings():  # joserfc warns on every "EdDSA" (RFC 9864)
        warnings.simplefilter("ignore", SecurityWarning)
        return jws.serialize_compact(hdr, raw, key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: Mapping[str, Any], payload: Mapping[str, Any], sig: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(sig)}"


def make_verifier(config: IssuerConfig, clock: Clock | None = None) -> TokenVerifier:
    verifier = TokenVerifier([config], clock=clock or Clock())
    verifier.refresh(config.name, _no_fetch)
    return verifier


def _no_fetch(url: str) -> bytes:
    raise AssertionError(f"unexpected fetch of {url}")


def rejected(verifier: TokenVerifier, token: str | bytes) -> str:
    with pytest.raises(TokenRejected) as info:
        verifier.verify(token)
    return info.value.reason


# -- the happy paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_name", "alg"),
    [("rsa", "RS256"), ("rsa", "RS512"), ("rsa", "PS256"), ("ec", "ES256"), ("ed", "EdDSA")],
)
def test_verifies_each_key_type(keys: Keys, jwks_file: Path, key_name: str, alg: str) -> None:
    verifier = make_verifier(issuer(jwks_file))
    token = verifier.verify(sign(claims(), getattr(keys, key_name), alg))
    assert token == VerifiedToken(
        issuer_name="idp",
        issuer=ISS,
        subject="agent-7",
        groups=("analysts",),
        claims={},  # not compared
        expires_at=NOW + 300,
        token_id="j-1",
        client_id="ci-runner",
    )
    assert token.claims["azp"] == "ci-runner"
    with pytest.raises(TypeError):
        token.claims["sub"] = "root"  # type: ignore[index]


def test_token_without_kid_tries_keys_of_the_right_type(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file))
    token = jwt.encode({"alg": "ES256"}, claims(), keys.ec, algorithms=["ES256"])
    assert verifier.verify(token).subject == "agent-7"
    assert verifier.verify(token.encode()).subject == "agent-7"  # bytes work too


def test_audience_list_and_client_id(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file))
    token = sign(claims(aud=["other", AUD], azp=None, client_id="cli"), keys.rsa)
    assert verifier.verify(token).client_id == "cli"
    assert rejected(verifier, sign(claims(aud=["a", "b"]), keys.rsa)) == (
        "token audience does not match"
    )
    assert rejected(verifier, sign(claims(aud=None), keys.rsa)) == "token audience does not match"
    assert rejected(verifier, sign(claims(aud=[1]), keys.rsa)) == "token audience does not match"


def test_groups_paths(keys: Keys, jwks_file: Path) -> None:
    nested = make_verifier(issuer(jwks_file, groups_claim="realm_access.roles"))
    token = sign(claims(realm_access={"roles": ["dba", "ops"]}), keys.ec, "ES256")
    assert nested.verify(token).groups == ("dba", "ops")
    assert nested.verify(sign(claims(), keys.ec, "ES256")).groups == ()  # missing: no groups
    plain = make_verifier(issuer(jwks_file))
    assert plain.verify(sign(claims(groups="solo"), keys.ec, "ES256")).groups == ("solo",)
    assert rejected(plain, sign(claims(groups={"a": 1}), keys.ec, "ES256")) == (
        "token claim 'groups' is not a string or a list of strings"
    )


def test_claim_at() -> None:
    data = {"a": {"b": {"c": 1}}, "https://x.example/roles": ["r"], "n": None}
    assert claim_at(data, "a.b.c") == 1
    assert claim_at(data, "https://x.example/roles") == ["r"]
    assert claim_at(data, "a.x") is None
    assert claim_at(data, "a.b.c.d") is None
    assert claim_at(data, "n") is None


def test_required_claims_and_subject(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(
        issuer(jwks_file, required_claims=("repository", "ctx.env"), subject_claim="email")
    )
    good = claims(repository="org/app", ctx={"env": "ci"}, email="a@example.com")
    assert verifier.verify(sign(good, keys.rsa)).subject == "a@example.com"
    missing = {k: v for k, v in good.items() if k != "repository"}
    assert rejected(verifier, sign(missing, keys.rsa)) == (
        "token lacks required claim 'repository'"
    )
    assert rejected(verifier, sign({**good, "ctx": {}}, keys.rsa)) == (
        "token lacks required claim 'ctx.env'"
    )
    assert rejected(verifier, sign({**good, "email": ""}, keys.rsa)) == "token has no subject"
    assert rejected(verifier, sign({**good, "email": 5}, keys.rsa)) == "token has no subject"


# -- time ------------------------------------------------------------------------------------


def test_exp_has_no_leeway(keys: Keys, jwks_file: Path) -> None:
    # One rule for the login and for every later command (the session checks now >= exp):
    # a token is good while now < exp. Before, a token expired within the leeway logged in
    # and then had its first command refused.
    clock = Clock()
    lenient = make_verifier(issuer(jwks_file, leeway=60), clock)
    assert rejected(lenient, sign(claims(exp=NOW - 30), keys.rsa)) == "token has expired"
    assert rejected(lenient, sign(claims(exp=NOW), keys.rsa)) == "token has expired"
    assert lenient.verify(sign(claims(exp=NOW + 0.5), keys.rsa)).expires_at == NOW + 0.5
    assert rejected(lenient, sign(claims(exp=None), keys.rsa)) == "token has no expiration time"


def test_token_lifetime_is_bounded(keys: Keys, jwks_file: Path) -> None:
    default = make_verifier(issuer(jwks_file))
    assert default.verify(sign(claims(exp=NOW + 86400), keys.rsa)).expires_at == NOW + 86400
    for exp in (NOW + 86401, 1e300, 10**20):
        reason = rejected(default, sign(claims(exp=exp), keys.rsa))
        assert reason == (
            "token expires too far in the future (more than the issuer's "
            "max_token_lifetime, 86400 s, from now)"
        )
    short = make_verifier(issuer(jwks_file, max_token_lifetime=600))
    assert short.verify(sign(claims(exp=NOW + 600), keys.rsa)).subject == "agent-7"
    assert "max_token_lifetime, 600 s" in rejected(short, sign(claims(exp=NOW + 601), keys.rsa))


def test_not_yet_valid_with_and_without_leeway(keys: Keys, jwks_file: Path) -> None:
    clock = Clock()
    strict = make_verifier(issuer(jwks_file, leeway=0), clock)
    lenient = make_verifier(issuer(jwks_file, leeway=60), clock)
    for token in (
        sign(claims(nbf=NOW + 30), keys.rsa),
        sign(claims(iat=NOW + 30, nbf=None), keys.rsa),
    ):
        assert rejected(strict, token) == "token is not valid yet"
        assert lenient.verify(token).subject == "agent-7"
    assert rejected(lenient, sign(claims(nbf=NOW + 61), keys.rsa)) == "token is not valid yet"


@pytest.mark.parametrize("exp", ["soon", True, 1e400, [1], {"t": 1}])
def test_bad_numeric_dates_are_malformed(keys: Keys, jwks_file: Path, exp: Any) -> None:
    verifier = make_verifier(issuer(jwks_file))
    payload = json.dumps(claims(exp=0)).replace('"exp": 0', f'"exp": {json.dumps(exp)}')
    assert rejected(verifier, sign(payload, keys.rsa)) == "token is malformed"


def test_infinity_and_duplicate_claims_are_malformed(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file))
    for payload in (
        json.dumps(claims(exp=None))[:-1] + ', "exp": Infinity}',
        json.dumps(claims())[:-1] + ', "sub": "root"}',
    ):
        assert rejected(verifier, sign(payload, keys.rsa)) == "token is malformed"


# -- issuer, algorithm, signature -----------------------------------------------------------------


def test_untrusted_or_missing_issuer(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file))
    assert rejected(verifier, sign(claims(iss="https://evil.example"), keys.rsa)) == (
        "token issuer 'https://evil.example' is not trusted"
    )
    assert rejected(verifier, sign(claims(iss=None), keys.rsa)) == "token has no issuer"
    long_iss = "x" * 500 + "'\n"
    reason = rejected(verifier, sign(claims(iss=long_iss), keys.rsa))
    assert len(reason) < 120 and "\n" not in reason


def test_alg_none_is_refused(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file))
    for alg in ("none", "None", "NONE"):
        token = unsigned({"alg": alg, "kid": "rsa1"}, claims())
        assert rejected(verifier, token) == f"token algorithm '{alg}' is not allowed"
    with pytest.raises(ValueError, match="'none' is not allowed"):
        issuer(jwks_file, algorithms=("RS256", "none"))


def test_hs256_with_the_public_key_as_secret_is_refused(keys: Keys, jwks_file: Path) -> None:
    """The classic key-confusion attack: HMAC keyed with the RSA public key an attacker
    can download."""
    verifier = make_verifier(issuer(jwks_file))
    pem = keys.rsa.as_pem(private=False)
    public_jwk = json.dumps(keys.rsa.as_dict(private=False)).encode()
    for secret in (pem, public_jwk):
        header = b64(json.dumps({"alg": "HS256", "kid": "rsa1"}).encode())
        payload = b64(json.dumps(claims()).encode())
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{b64(mac)}"
        assert rejected(verifier, token) == "token algorithm 'HS256' is not allowed"
        # And below our allowlist, the key type check refuses an RSA key for HMAC.
        with pytest.raises(Exception, match="requires 'oct' key"):
            jwt.decode(token, KeySet([keys.rsa]), registry=JWSRegistry(algorithms=["HS256"]))
    for alg in ("HS256", "HS512"):
        with pytest.raises(ValueError, match=f"{alg}' is not allowed"):
            issuer(jwks_file, algorithms=(alg,))


def test_algorithm_outside_the_issuer_list(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file, algorithms=("ES256",)))
    assert rejected(verifier, sign(claims(), keys.rsa)) == "token algorithm 'RS256' is not allowed"


def test_algorithm_must_fit_the_key(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file))
    # An ES384 header over a P-256 key's signature, under the P-256 key's kid.
    token = sign(claims(), keys.ec, "ES256")
    _, payload, sig = token.split(".")
    forged = b64(json.dumps({"alg": "ES384", "kid": "ec1"}).encode())
    assert rejected(verifier, f"{forged}.{payload}.{sig}") == "token key id 'ec1' is unknown"
    # A PS256 header over an RS256 signature: the key fits, the signature does not.
    _, payload, sig = sign(claims(), keys.rsa, "RS256").split(".")
    forged = b64(json.dumps({"alg": "PS256", "kid": "rsa1"}).encode())
    assert rejected(verifier, f"{forged}.{payload}.{sig}") == "token signature is invalid"


def test_bad_signature(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file))
    token = sign(claims(), keys.rsa)
    head, payload, _ = token.split(".")
    other = RSAKey.generate_key(2048, {"kid": "rsa1"})
    assert rejected(verifier, sign(claims(), other)) == "token signature is invalid"
    tampered = b64(json.dumps(claims(sub="root")).encode())
    assert rejected(verifier, f"{head}.{tampered}.{token.split('.')[2]}") == (
        "token signature is invalid"
    )
    assert rejected(verifier, f"{head}.{payload}.") == "token signature is invalid"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d.e",
        "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.sig==",  # padding is not base64url
        "!!!.???.***",
        "é.é.é",
        b"\xff\xfe.\x00.\x01",
        unsigned({"alg": 5}, claims()),
        unsigned({"alg": "RS256", "kid": 7}, claims()),
        unsigned({"alg": "RS256", "crit": ["exp"]}, claims()),
        unsigned({"alg": "RS256", "b64": False}, claims()),
        f"{b64(b'[1]')}.{b64(b'{}')}.",
        f"{b64(b'{')}.{b64(b'{}')}.",
    ],
)
def test_malformed_tokens(jwks_file: Path, token: str | bytes) -> None:
    assert rejected(make_verifier(issuer(jwks_file)), token) == "token is malformed"


def test_reasons_never_contain_the_token(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file))
    token = sign(claims(exp=NOW - 1000), keys.rsa)
    reason = rejected(verifier, token)
    assert all(part not in reason for part in token.split("."))


# -- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1536, 16 * 1024])
def test_large_tokens_verify(keys: Keys, jwks_file: Path, size: int) -> None:
    verifier = make_verifier(issuer(jwks_file))
    base = sign(claims(pad=""), keys.rsa)
    pad = "p" * ((size - len(base)) * 3 // 4)
    token = sign(claims(pad=pad), keys.rsa)
    assert abs(len(token) - size) < 16
    assert verifier.verify(token).claims["pad"] == pad


def test_oversized_token_is_refused_unparsed(keys: Keys, jwks_file: Path) -> None:
    verifier = make_verifier(issuer(jwks_file))
    token = sign(claims(pad="p" * 52_000), keys.rsa)
    assert len(token) > 70_000
    assert rejected(verifier, token) == "token is malformed"


# -- keys: KeysNeeded, refresh, rotation, rate limit -----------------------------------------------


def test_no_keys_yet_then_unknown_kid(keys: Keys, jwks_file: Path) -> None:
    clock = Clock()
    verifier = TokenVerifier([issuer(jwks_file)], clock=clock)
    token = sign(claims(), keys.rsa, kid="rotated-away")
    with pytest.raises(KeysNeeded) as info:
        verifier.verify(token)
    assert info.value.issuer_name == "idp"
    verifier.refresh("idp", _no_fetch)
    assert rejected(verifier, token) == "token key id 'rotated-away' is unknown"
    clock.now += 30  # the rate limit has passed: one more refresh is allowed
    with pytest.raises(KeysNeeded):
        verifier.verify(token)
    verifier.refresh("idp", _no_fetch)
    assert rejected(verifier, token) == "token key id 'rotated-away' is unknown"


def test_key_rotation_via_jwks_file(keys: Keys, jwks_file: Path) -> None:
    clock = Clock()
    verifier = make_verifier(issuer(jwks_file), clock)
    new = ECKey.generate_key("P-256", {"kid": "ec2"})
    jwks_file.write_bytes(keys.jwks(keys.rsa, new))
    token = sign(claims(), new, "ES256")
    clock.now += 45
    with pytest.raises(KeysNeeded):
        verifier.verify(token)
    verifier.refresh("idp", _no_fetch)
    assert verifier.verify(token).subject == "agent-7"
    assert rejected(verifier, sign(claims(), keys.ec, "ES256")) == "token key id 'ec1' is unknown"


def test_refresh_rate_limit_and_failures(keys: Keys, tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "missing.json"
    verifier = TokenVerifier([issuer(path, jwks_min_refresh_interval=10)], clock=clock)
    token = sign(claims(), keys.rsa)
    with pytest.raises(KeysNeeded):
        verifier.verify(token)
    with pytest.raises(TokenRejected, match="cannot load the keys of issuer 'idp'"):
        verifier.refresh("idp", _no_fetch)
    assert rejected(verifier, token) == "cannot load the keys of issuer 'idp'"
    path.write_bytes(keys.jwks())
    verifier.refresh("idp", _no_fetch)  # within the interval: does nothing
    assert rejected(verifier, token) == "cannot load the keys of issuer 'idp'"
    clock.now += 10
    assert verifier.needs_refresh("idp")
    verifier.refresh("idp", _no_fetch)
    assert verifier.verify(token).subject == "agent-7"
    assert not verifier.needs_refresh("idp")
    # A broken file later keeps the keys that worked.
    path.write_text("{not json")
    clock.now += 10
    with pytest.raises(TokenRejected):
        verifier.refresh("idp", _no_fetch)
    assert verifier.verify(token).subject == "agent-7"


@pytest.mark.parametrize(
    "document",
    [
        b"[]",
        b'{"keys": []}',
        b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
        b'{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}',
        b'{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}',
    ],
)
def test_unusable_jwks(tmp_path: Path, document: bytes) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(document)
    verifier = TokenVerifier([issuer(path)])
    with pytest.raises(TokenRejected, match="cannot load the keys"):
        verifier.refresh("idp", _no_fetch)


def test_jwks_skips_unusable_keys(keys: Keys, tmp_path: Path) -> None:
    enc_key = {**keys.ec.as_dict(private=False), "use": "enc", "kid": "enc"}
    private = {**keys.ed.as_dict(private=True), "kid": "ed1"}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "AA"}, enc_key, private]}))
    verifier = make_verifier(issuer(path))
    assert verifier.verify(sign(claims(), keys.ed, "EdDSA")).subject == "agent-7"
    token = sign(claims(), keys.ec, "ES256", kid="enc")
    assert rejected(verifier, token) == "token key id 'enc' is unknown"


class _JWKSHandler(BaseHTTPRequestHandler):
    body: bytes = b""
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path != "/jwks":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[tuple[str, type[_JWKSHandler]]]:
    handler = type("Handler", (_JWKSHandler,), {"body": keys.jwks(keys.rsa), "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_jwks_over_http(keys: Keys, jwks_server: tuple[str, type[_JWKSHandler]]) -> None:
    base, handler = jwks_server
    clock = Clock()
    config = IssuerConfig(
        name="idp", issuer=ISS, audience=(AUD,), jwks_file=None, jwks_url=f"{base}/jwks"
    )
    verifier = TokenVerifier([config], clock=clock)
    token = sign(claims(), keys.rsa)
    with pytest.raises(KeysNeeded):
        verifier.verify(token)
    verifier.refresh("idp", http_fetch)
    assert verifier.verify(token).subject == "agent-7"
    assert handler.hits == ["/jwks"]
    # Older than jwks_max_age: refreshed even though the kid is known.
    clock.now += 3600
    handler.body = keys.jwks(keys.rsa, keys.ec)
    with pytest.raises(KeysNeeded):
        verifier.verify(token)
    verifier.refresh("idp", http_fetch)
    fresh = sign(claims(exp=clock.now + 60), keys.ec, "ES256")
    assert verifier.verify(fresh).subject == "agent-7"
    assert handler.hits == ["/jwks", "/jwks"]


def test_http_fetch_errors(jwks_server: tuple[str, type[_JWKSHandler]], tmp_path: Path) -> None:
    base, _ = jwks_server
    with pytest.raises(urllib.error.HTTPError):
        http_fetch(f"{base}/missing")
    for url in (f"file://{tmp_path}/x", "ftp://example.com/jwks"):
        with pytest.raises(ValueError, match="only http and https"):
            http_fetch(url)
    config = IssuerConfig(
        name="idp", issuer=ISS, audience=(AUD,), jwks_file=None, jwks_url=f"{base}/missing"
    )
    with pytest.raises(TokenRejected, match="cannot load the keys of issuer 'idp'"):
        TokenVerifier([config]).refresh("idp", http_fetch)


def test_config_validation(tmp_path: Path) -> None:
    path = tmp_path / "j.json"
    with pytest.raises(ValueError, match="exactly one"):
        IssuerConfig(name="a", issuer="b", audience=("c",), jwks_file=path, jwks_url="https://x")
    with pytest.raises(ValueError, match="exactly one"):
        IssuerConfig(name="a", issuer="b", audience=("c",), jwks_file=None, jwks_url=None)
    with pytest.raises(ValueError, match="audience"):
        IssuerConfig(name="a", issuer="b", audience=(), jwks_file=path, jwks_url=None)
    with pytest.raises(ValueError, match="http"):
        IssuerConfig(name="a", issuer="b", audience=("c",), jwks_file=None, jwks_url="file:///x")
    with pytest.raises(ValueError, match="unique"):
        TokenVerifier([issuer(path), issuer(path)])
    for lifetime in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_token_lifetime"):
            issuer(path, max_token_lifetime=lifetime)


# -- hypothesis ---------------------------------------------------------------------------------

_VERIFIER = TokenVerifier([issuer(Path("/nonexistent"))])


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_input_is_only_ever_rejected(token: str | bytes) -> None:
    with pytest.raises((TokenRejected, KeysNeeded)):
        _VERIFIER.verify(token)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(
    header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "x"]), _json),
    payload=st.dictionaries(st.sampled_from(["iss", "aud", "exp", "sub", "y"]), _json),
)
def test_random_structured_tokens_are_only_ever_rejected(
    header: dict[str, Any], payload: dict[str, Any]
) -> None:
    with pytest.raises((TokenRejected, KeysNeeded)):
        _VERIFIER.verify(unsigned(header, {**payload, "iss": ISS}))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(shape=_json, roles=_json)
def test_random_group_claim_shapes_never_crash(
    keys: Keys, jwks_file: Path, shape: Any, roles: Any
) -> None:
    verifier = make_verifier(issuer(jwks_file, groups_claim="realm_access.roles"))
    realm = {"roles": roles} if isinstance(shape, dict) else shape
    token = sign(claims(realm_access=realm), keys.ec, "ES256")
    try:
        result = verifier.verify(token)
    except TokenRejected as exc:
        assert "groups" not in exc.reason or "realm_access.roles" in exc.reason
    else:
        assert all(isinstance(g, str) for g in result.groups)


_NUMERIC_DATE_NOISE = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),  # NaN and the infinities included: json.dumps writes them as NaN, Infinity
    st.floats(min_value=NOW - 10**6, max_value=NOW + 10**6),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.integers(min_value=int(NOW) - 200_000, max_value=int(NOW) + 200_000),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(exp=_NUMERIC_DATE_NOISE, nbf=_NUMERIC_DATE_NOISE, iat=_NUMERIC_DATE_NOISE)
def test_numeric_dates_accepted_only_when_sane(
    keys: Keys, jwks_file: Path, exp: Any, nbf: Any, iat: Any
) -> None:
    config = issuer(jwks_file, leeway=60)
    verifier = make_verifier(config)
    payload = {**claims(exp=None, nbf=None, iat=None), "exp": exp, "nbf": nbf, "iat": iat}
    payload = {k: v for k, v in payload.items() if v is not None}
    token = sign(json.dumps(payload), keys.ec, "ES256")
    try:
        verified = verifier.verify(token)
    except TokenRejected:
        return
    # Accepted: every date a real number, exp in (now, now + max_token_lifetime], nbf and
    # iat no later than now + leeway.
    for value in (exp, nbf, iat):
        assert value is None or (type(value) in (int, float) and math.isfinite(value))
    assert NOW < verified.expires_at <= NOW + config.max_token_lifetime
    assert math.isfinite(verified.expires_at)
    assert nbf is None or nbf <= NOW + config.leeway
    assert iat is None or iat <= NOW + config.leeway
