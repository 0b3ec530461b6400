"""Dev signing keys: written safely, and what they mint verifies."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from hoopy.identity.dev_tokens import JWKS_FILE, KEY_FILE, create_signing_key, mint_token
from hoopy.identity.tokens import IssuerConfig, TokenRejected, TokenVerifier


def _verifier(jwks: Path, clock: float | None = None) -> TokenVerifier:
    config = IssuerConfig(
        name="dev", issuer="hoopy-dev", audience=("hoopy",), jwks_file=jwks, jwks_url=None
    )
    verifier = TokenVerifier([config], clock=(lambda: clock) if clock else time.time)
    verifier.refresh("dev", lambda url: b"")
    return verifier


def test_key_file_is_private_and_jwks_public(tmp_path: Path) -> None:
    key, jwks = create_signing_key(tmp_path / "keys", kid="dev-1")
    assert (key.name, jwks.name) == (KEY_FILE, JWKS_FILE)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    private = json.loads(key.read_text())
    assert private["kid"] == "dev-1" and private["crv"] == "P-256" and "d" in private
    published = json.loads(jwks.read_text())["keys"]
    assert [k["kid"] for k in published] == ["dev-1"]
    assert "d" not in published[0]


def test_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    key, _ = create_signing_key(tmp_path)
    before = key.read_text()
    with pytest.raises(FileExistsError):
        create_signing_key(tmp_path)
    assert key.read_text() == before
    key.chmod(0o644)
    key2, _ = create_signing_key(tmp_path, force=True)
    assert key2 == key and key.read_text() != before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_default_kid_is_the_thumbprint(tmp_path: Path) -> None:
    key, jwks = create_signing_key(tmp_path)
    kid = json.loads(key.read_text())["kid"]
    assert len(kid) == 43  # base64url SHA-256 (RFC 7638)
    assert json.loads(jwks.read_text())["keys"][0]["kid"] == kid


def test_minted_token_verifies(tmp_path: Path) -> None:
    key, jwks = create_signing_key(tmp_path)
    token = mint_token(
        key,
        issuer="hoopy-dev",
        audience="hoopy",
        subject="alice",
        groups=["analysts", "dba"],
        claims={"repository": "org/app"},
        ttl=600,
    )
    verified = _verifier(jwks).verify(token)
    assert verified.subject == "alice"
    assert verified.groups == ("analysts", "dba")
    assert verified.claims["repository"] == "org/app"
    assert verified.token_id and len(verified.token_id) >= 16
    assert verified.expires_at == verified.claims["iat"] + 600
    other = mint_token(key, issuer="hoopy-dev", audience="hoopy", subject="alice")
    assert _verifier(jwks).verify(other).token_id != verified.token_id


def test_minted_token_expires(tmp_path: Path) -> None:
    key, jwks = create_signing_key(tmp_path)
    token = mint_token(key, issuer="hoopy-dev", audience="hoopy", subject="a", ttl=60, now=1000)
    assert _verifier(jwks, clock=1059).verify(token).expires_at == 1060
    # No leeway on exp (identity/tokens.py): good exactly while now < exp.
    with pytest.raises(TokenRejected, match="expired"):
        _verifier(jwks, clock=1060).verify(token)
    expired = mint_token(key, issuer="hoopy-dev", audience="hoopy", subject="a", ttl=-120)
    with pytest.raises(TokenRejected, match="expired"):
        _verifier(jwks).verify(expired)


def test_another_key_does_not_verify(tmp_path: Path) -> None:
    key, _ = create_signing_key(tmp_path / "a", kid="k")
    _, other_jwks = create_signing_key(tmp_path / "b", kid="k")
    token = mint_token(key, issuer="hoopy-dev", audience="hoopy", subject="a")
    with pytest.raises(TokenRejected, match="signature is invalid"):
        _verifier(other_jwks).verify(token)


def test_mint_refuses_registered_claims_and_public_keys(tmp_path: Path) -> None:
    key, jwks = create_signing_key(tmp_path)
    with pytest.raises(ValueError, match="exp"):
        mint_token(key, issuer="i", audience="a", subject="s", claims={"exp": 1})
    with pytest.raises(ValueError, match="no private key"):
        public = tmp_path / "public.jwk"
        public.write_text(json.dumps(json.loads(jwks.read_text())["keys"][0]))
        mint_token(public, issuer="i", audience="a", subject="s")
