"""Token logins end to end: an OIDC/JWT token as the MySQL password, through real clients."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from hoopy.identity.dev_tokens import create_signing_key, mint_token

Start = Any
ISSUER, AUDIENCE = "https://idp.example.test", "hoopy-tests"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return create_signing_key(tmp_path / "keys")


def token_config(jwks: Path, **gateway: Any) -> dict[str, Any]:
    return {
        # Tests here fail logins on purpose: no login delays unless a test asks for them.
        "gateway": {"login_delay_after_failures": 1000, **gateway},
        "targets": {"app": {"login": "tokens"}},
        "issuers": {
            "idp": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "jwks_file": str(jwks),
                "groups_claim": "realm_access.roles",
                "leeway": 0,
            }
        },
        "users": None,
        "roles": {
            "developers": {"groups": ["developers"], "targets": ["app"]},
            "ci": {
                "claims": {"repository": "acme/*", "ref": "refs/heads/main"},
                "targets": ["app"],
            },
        },
    }


def mint(
    key: Path,
    subject: str = "agent-7",
    *,
    roles: list[str] | None = None,
    ttl: float = 600,
    **claims: Any,
) -> str:
    claims.setdefault("realm_access", {"roles": roles if roles is not None else ["developers"]})
    return mint_token(
        key, issuer=ISSUER, audience=AUDIENCE, subject=subject, claims=claims, ttl=ttl
    )


def who(conn: pymysql.connections.Connection) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER(), 40 + 2")
        row = cur.fetchone()
    assert row is not None
    return tuple(row)


def test_pymysql_token_over_tls(hoopy_factory: Start, keys: tuple[Path, Path]) -> None:
    key, jwks = keys
    hoopy = hoopy_factory(**token_config(jwks))
    conn = hoopy.connect("anything", mint(key), ssl={"ca": hoopy.tls_cert})
    user, answer = who(conn)
    assert user.startswith("app@") and answer == 42
    conn.close()
    assert "agent-7 (token from idp, roles developers) from" in hoopy.stderr_text()


def test_pymysql_token_over_unix_socket(hoopy_factory: Start, keys: tuple[Path, Path]) -> None:
    key, jwks = keys
    hoopy = hoopy_factory(**token_config(jwks))
    conn = pymysql.connect(
        unix_socket=hoopy.unix_socket["app"], user="x", password=mint(key), ssl_disabled=True
    )
    assert who(conn)[1] == 42
    conn.close()


def test_mariadb_cli_token_over_tls(hoopy_factory: Start, keys: tuple[Path, Path]) -> None:
    key, jwks = keys
    hoopy = hoopy_factory(**token_config(jwks))
    host, port = hoopy.tcp["app"]
    result = subprocess.run(
        [
            "mariadb",
            "--no-defaults",
            "-h",
            host,
            "-P",
            str(port),
            "-u",
            "ci",
            f"--password={mint(key)}",
            f"--ssl-ca={hoopy.tls_cert}",
            "--ssl-verify-server-cert",
            "--batch",
            "--skip-column-names",
            "-e",
            "SELECT 6 * 7",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "42"), result.stderr


def test_plain_tcp_refuses_the_token_and_says_why(
    hoopy_factory: Start, keys: tuple[Path, Path]
) -> None:
    key, jwks = keys
    hoopy = hoopy_factory(**token_config(jwks))
    token = mint(key)
    with pytest.raises(pymysql.err.OperationalError) as info:
        hoopy.connect("x", token, ssl_disabled=True)
    assert info.value.args[0] == 1045
    assert "token logins need an encrypted connection" in info.value.args[1]
    host, port = hoopy.tcp["app"]
    result = subprocess.run(
        [
            "mariadb",
            "--no-defaults",
            "-h",
            host,
            "-P",
            str(port),
            "-u",
            "x",
            f"--password={token}",
            "--skip-ssl",
            "-e",
            "SELECT 1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "token logins need an encrypted connection" in result.stderr
    assert token not in hoopy.stderr_text()


def test_cleartext_plugin_on_plain_tcp_needs_the_loopback_opt_in(
    hoopy_factory: Start, keys: tuple[Path, Path]
) -> None:
    key, jwks = keys
    token = mint(key)
    argv = [
        "mariadb",
        "--no-defaults",
        "--skip-ssl",
        "--default-auth=mysql_clear_password",
        "-u",
        "x",
        f"--password={token}",
        "--batch",
        "--skip-column-names",
        "-e",
        "SELECT 6 * 7",
    ]
    refused = hoopy_factory(**token_config(jwks))
    host, port = refused.tcp["app"]
    result = subprocess.run(
        [*argv, "-h", host, "-P", str(port)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "refuses a token sent in clear" in result.stderr
    config = token_config(jwks)
    config["listeners"] = [
        {
            "name": "app",
            "target": "app",
            "tcp": "127.0.0.1:0",
            "tls": False,
            "allow_cleartext_password": True,
        }
    ]
    allowed = hoopy_factory(**config)
    host, port = allowed.tcp["app"]
    result = subprocess.run(
        [*argv, "-h", host, "-P", str(port)], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout.strip()) == (0, "42"), result.stderr


def test_reconnect_with_the_same_token_takes_the_fast_path(
    hoopy_factory: Start, keys: tuple[Path, Path]
) -> None:
    key, jwks = keys
    hoopy = hoopy_factory(**token_config(jwks))
    token = mint(key)
    hoopy.connect("agent", token, ssl={"ca": hoopy.tls_cert}).close()
    # The scramble proves knowledge of the token without sending it: fine over plain TCP.
    conn = hoopy.connect("agent", token, ssl_disabled=True)
    assert who(conn)[1] == 42
    conn.close()
    with pytest.raises(pymysql.err.OperationalError):  # another user name has no cache entry
        hoopy.connect("someone-else", token, ssl_disabled=True)


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda key, other: mint(key, ttl=-5), "expired"),
        (lambda key, other: mint(other), "key id"),
        (
            lambda key, other: mint_token(key, issuer=ISSUER, audience="someone-else", subject="a"),
            "audience",
        ),
        (
            lambda key, other: mint_token(
                key, issuer="https://evil.test", audience=AUDIENCE, subject="a"
            ),
            "issuer",
        ),
        (lambda key, other: "not.a.token", "malformed"),
        (lambda key, other: mint(key, roles=["nobody"]), "no role grants target 'app'"),
        (
            lambda key, other: mint(key, roles=[], repository="acme/app", ref="refs/heads/dev"),
            "no role grants target 'app'",
        ),
    ],
)
def test_rejected_tokens_get_1045_with_the_reason(
    hoopy_factory: Start, keys: tuple[Path, Path], tmp_path: Path, make_token: Any, reason: str
) -> None:
    key, jwks = keys
    other_key, _ = create_signing_key(tmp_path / "other")
    hoopy = hoopy_factory(**token_config(jwks))
    token = make_token(key, other_key)
    with pytest.raises(pymysql.err.OperationalError) as info:
        hoopy.connect("x", token, ssl={"ca": hoopy.tls_cert})
    assert info.value.args[0] == 1045
    assert reason in info.value.args[1]
    assert token not in info.value.args[1] and token not in hoopy.stderr_text()


def test_claims_grant_a_role(hoopy_factory: Start, keys: tuple[Path, Path]) -> None:
    key, jwks = keys
    hoopy = hoopy_factory(**token_config(jwks))
    token = mint(key, "repo:acme/app", roles=[], repository="acme/app", ref="refs/heads/main")
    conn = hoopy.connect("ci", token, ssl={"ca": hoopy.tls_cert})
    assert who(conn)[1] == 42
    conn.close()


def test_large_tokens_work(hoopy_factory: Start, keys: tuple[Path, Path]) -> None:
    key, jwks = keys
    hoopy = hoopy_factory(**token_config(jwks))
    token = mint(key, padding="p" * 16_000)
    assert len(token) > 16_000
    conn = hoopy.connect("x", token, ssl={"ca": hoopy.tls_cert})
    assert who(conn)[1] == 42
    conn.close()


def test_session_ends_after_its_token_expires(
    hoopy_factory: Start, keys: tuple[Path, Path]
) -> None:
    key, jwks = keys
    hoopy = hoopy_factory(**token_config(jwks))
    conn = hoopy.connect("x", mint(key, ttl=2), ssl={"ca": hoopy.tls_cert})
    assert who(conn)[1] == 42
    time.sleep(2.2)
    with pytest.raises(pymysql.err.OperationalError) as info:
        who(conn)
    assert info.value.args[0] == 1045 and "token has expired" in info.value.args[1]


@pytest.mark.parametrize(
    ("issuer_options", "ttl", "reason"),
    [
        # Expired 5 s ago, within a 60 s leeway: before, it logged in and then had its first
        # command refused. Now login and commands share one rule: good while now < exp.
        ({"leeway": 60}, -5, "Access denied: token has expired"),
        ({}, 2 * 86400, "max_token_lifetime, 86400 s"),
        ({"max_token_lifetime": 600}, 900, "max_token_lifetime, 600 s"),
    ],
)
def test_pymysql_token_expiry_and_lifetime_are_checked_at_login(
    hoopy_factory: Start,
    keys: tuple[Path, Path],
    issuer_options: dict[str, Any],
    ttl: float,
    reason: str,
) -> None:
    key, jwks = keys
    config = token_config(jwks)
    config["issuers"]["idp"].update(issuer_options)
    hoopy = hoopy_factory(**config)
    with pytest.raises(pymysql.err.OperationalError) as info:
        hoopy.connect("x", mint(key, ttl=ttl), ssl={"ca": hoopy.tls_cert})
    assert info.value.args[0] == 1045 and reason in info.value.args[1], info.value.args
    assert "session's token has expired" not in info.value.args[1]
    assert "token from idp" not in hoopy.stderr_text()  # no session was started


def test_hoopy_token_cli_mints_a_working_token(hoopy_factory: Start, tmp_path: Path) -> None:
    import sys

    hoopy_cli = [sys.executable, "-m", "hoopy", "token"]
    init = subprocess.run(
        [*hoopy_cli, "init", "--dir", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 'issuer = "hoopy-dev"' in init.stdout
    minted = subprocess.run(
        [
            *hoopy_cli,
            "mint",
            "--sub",
            "laptop",
            "-g",
            "developers",
            "--ttl",
            "10m",
            "--key",
            str(tmp_path / "k" / "dev-signing-key.jwk"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    config = token_config(tmp_path / "k" / "dev-jwks.json")
    config["issuers"] = {
        "dev": {
            "issuer": "hoopy-dev",
            "audience": "hoopy",
            "jwks_file": str(tmp_path / "k" / "dev-jwks.json"),
        }
    }
    hoopy = hoopy_factory(**config)
    conn = hoopy.connect("laptop", minted.stdout.strip(), ssl={"ca": hoopy.tls_cert})
    assert who(conn)[1] == 42
    conn.close()


class JWKSServer:
    """A loopback HTTP server publishing a JWKS that the test can rotate, counting fetches."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.body = b'{"keys": []}'
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, *jwks_files: Path) -> None:
        import json

        keys = [k for f in jwks_files for k in json.loads(f.read_text())["keys"]]
        self.body = json.dumps({"keys": keys}).encode()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_jwks_url_is_cached_and_follows_key_rotation(hoopy_factory: Start, tmp_path: Path) -> None:
    old_key, old_jwks = create_signing_key(tmp_path / "old", kid="2026-old")
    new_key, new_jwks = create_signing_key(tmp_path / "new", kid="2026-new")
    jwks = JWKSServer()
    try:
        jwks.publish(old_jwks)
        config = token_config(old_jwks)
        issuer = config["issuers"]["idp"]
        del issuer["jwks_file"]
        issuer.update(jwks_url=jwks.url, jwks_min_refresh_interval=0.5)
        hoopy = hoopy_factory(**config)
        tls = {"ssl": {"ca": hoopy.tls_cert}}
        hoopy.connect("a", mint(old_key), **tls).close()
        hoopy.connect("b", mint(old_key), **tls).close()
        assert jwks.fetches == 1  # the second login used the cached keys
        # The IdP rotates: a token signed by a key id hoopy has not seen yet.
        jwks.publish(old_jwks, new_jwks)
        time.sleep(0.6)
        conn = hoopy.connect("c", mint(new_key), **tls)
        assert who(conn)[1] == 42
        conn.close()
        assert jwks.fetches == 2
        # A key id the IdP does not publish: one refresh at most, then refused.
        rogue_key, _ = create_signing_key(tmp_path / "rogue", kid="rogue")
        time.sleep(0.6)
        for _ in range(3):
            with pytest.raises(pymysql.err.OperationalError) as info:
                hoopy.connect("d", mint(rogue_key), **tls)
            assert info.value.args[0] == 1045 and "key id" in info.value.args[1]
        assert jwks.fetches == 3  # the rate limit held the other two back
    finally:
        jwks.close()
