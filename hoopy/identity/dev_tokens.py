"""Local signing keys and tokens, for laptops and CI without an identity provider.

``create_signing_key`` writes an ES256 private key (a JWK, RFC 7517) and the matching public
JWK Set; an issuer with ``jwks_file`` pointing at the set trusts what ``mint_token`` signs.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

KEY_FILE = "dev-signing-key.jwk"
JWKS_FILE = "dev-jwks.json"
ALGORITHM = "ES256"

# Set by mint_token itself (RFC 7519 section 4.1); extra claims may not override them.
_REGISTERED = frozenset({"iss", "aud", "sub", "iat", "nbf", "exp", "jti"})
_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


def create_signing_key(
    directory: Path, *, kid: str | None = None, force: bool = False
) -> tuple[Path, Path]:
    """Write a new ES256 key to ``directory``; returns (private key file, public JWKS file).

    The private key is created with mode 0600. Existing files raise ``FileExistsError``
    unless ``force``. The key id defaults to the key's RFC 7638 thumbprint.
    """
    key_path, jwks_path = directory / KEY_FILE, directory / JWKS_FILE
    if not force:
        for path in (key_path, jwks_path):
            if path.exists():
                raise FileExistsError(0, "refusing to overwrite", str(path))
    parameters: dict[str, Any] = {"alg": ALGORITHM, "use": "sig"}
    if kid is not None:
        parameters["kid"] = kid
    key = ECKey.generate_key("P-256", parameters=parameters)  # type: ignore[arg-type]
    key.ensure_kid()
    private = json.dumps(key.as_dict(private=True), indent=2) + "\n"
    public = json.dumps({"keys": [key.as_dict(private=False)]}, indent=2) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(key_path, private.encode(), replace=force)
    jwks_path.write_text(public)
    return key_path, jwks_path


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Create ``path`` with mode 0600 from the start (no window where it is readable)."""
    target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp") if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if replace:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def mint_token(
    key_file: Path,
    *,
    issuer: str,
    audience: str,
    subject: str,
    groups: Sequence[str] = (),
    claims: Mapping[str, Any] = _NO_CLAIMS,
    ttl: float = 3600,
    now: float | None = None,
) -> str:
    """Sign a JWT with the key from ``create_signing_key``: iss, aud, sub, groups, iat, nbf,
    exp (``now + ttl``), a random jti, and ``claims``; the header names the key's kid.

    A negative ``ttl`` makes an already expired token, for tests."""
    clashes = _REGISTERED & set(claims)
    if clashes:
        raise ValueError(f"claims may not set {', '.join(sorted(clashes))}")
    if not math.isfinite(ttl):
        raise ValueError("ttl must be a finite number of seconds")
    key = ECKey.import_key(json.loads(key_file.read_text()))
    if not key.is_private:
        raise ValueError(f"{key_file} holds no private key")
    key.ensure_kid()
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        **claims,
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
        "jti": secrets.token_urlsafe(16),
    }
    if groups:
        payload["groups"] = list(groups)
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, payload, key, algorithms=[ALGORITHM])
