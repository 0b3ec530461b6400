"""The ``hoopy`` command line."""

from __future__ import annotations

import getpass
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hoopy import __version__
from hoopy.config.loader import ConfigError, format_password_hash, load_config
from hoopy.config.model import LoginMode

app = typer.Typer(
    name="hoopy",
    help="A MySQL gateway for autonomous agents.",
    no_args_is_help=True,
    add_completion=False,
)
# No emoji codes (a fingerprint contains ":ab:"), no highlighting, no wrapping: output is
# pasted into terminals and parsed by scripts.
err = Console(stderr=True, emoji=False, soft_wrap=True)
out = Console(emoji=False, soft_wrap=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        print(f"hoopy {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="The TOML config file.")] = Path(
        "hoopy.toml"
    ),
    ready_file: Annotated[
        Path | None,
        typer.Option(
            help="Write bound addresses as JSON here once listening (for scripts and tests)."
        ),
    ] = None,
) -> None:
    """Start the gateway in front of the configured targets."""
    import trio

    from hoopy.approvals.store import StoreError
    from hoopy.audit.writer import AuditUnavailable
    from hoopy.config.model import SecretUnavailable
    from hoopy.gateway.server import GatewayServer, run_gateway

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _fail(str(exc))
        return
    logging.basicConfig(
        level=cfg.gateway.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    def announce(server: GatewayServer) -> None:
        if server.certificate is not None:
            verb = "generated" if server.certificate.generated else "using"
            err.print(f"TLS: {verb} self-signed certificate {server.certificate.cert}")
            err.print(f"     SHA-256 fingerprint {server.certificate.fingerprint()}")
        for b in server.bound:
            target = cfg.targets[b.config.target]
            where = []
            if b.tcp:
                where.append(f"{b.tcp[0]}:{b.tcp[1]}")
            if b.unix_socket:
                where.append(str(b.unix_socket))
            err.print(
                f"listener [bold]{b.config.name}[/] on {' and '.join(where)}"
                f"{' (TLS offered)' if b.tls_context else ''} -> target [bold]{target.name}[/] "
                f"at {target.address()} ({target.login.value})",
                highlight=False,
            )
            user = (
                "YOUR_DB_USER"
                if target.login is LoginMode.PASSTHROUGH
                else (next(iter(cfg.users), "USER"))
            )
            if b.tcp:
                parts = ["mariadb", "-h", b.tcp[0], "-P", str(b.tcp[1]), "-u", user, "-p"]
                if b.tls_context and server.certificate is not None:
                    parts += ["--ssl-ca", str(server.certificate.cert)]
            else:
                parts = ["mariadb", "-S", str(b.unix_socket), "-u", user, "-p"]
            err.print(f"  connect: {shlex.join(parts)}", soft_wrap=True)
        err.print("ready. Ctrl-C to stop.")

    try:
        trio.run(lambda: run_gateway(cfg, ready_file=ready_file, on_ready=announce))
    except OSError as exc:
        _fail(f"cannot start: {exc}")
    except (AuditUnavailable, SecretUnavailable, StoreError) as exc:
        _fail(f"cannot start: {exc}")
    except KeyboardInterrupt:
        pass


@app.command("hash-password")
def hash_password(
    password_stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Print a password_hash for a gateway user (its `users.NAME` table in the config)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            _fail("the passwords differ")
    if not password:
        _fail("empty password")
    print(format_password_hash(password.encode("utf-8")))


token_app = typer.Typer(
    help="Local signing keys and tokens, for laptops and CI without an identity provider.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")

DEV_ISSUER = "hoopy-dev"
DEV_AUDIENCE = "hoopy"


@token_app.command("init")
def token_init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write the key and JWKS.")
    ] = Path(".hoopy"),
    force: Annotated[bool, typer.Option(help="Replace an existing key.")] = False,
) -> None:
    """Create a signing key (0600) and its public JWKS, and print the config to trust it."""
    from hoopy.identity.dev_tokens import create_signing_key

    try:
        key, jwks = create_signing_key(directory, force=force)
    except FileExistsError as exc:
        _fail(f"{exc.filename or exc} exists; pass --force to replace it")
        return
    err.print(f"signing key: {key} (keep it secret)")
    err.print(f"public keys: {jwks}")
    print(
        f'[issuers.dev]\nissuer = "{DEV_ISSUER}"\naudience = "{DEV_AUDIENCE}"\n'
        f'jwks_file = "{jwks.resolve()}"'
    )


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 900, 15m, 1h or 2d") from None


@token_app.command("mint")
def token_mint(
    subject: Annotated[str, typer.Option("--sub", help="The token's subject (who).")],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="A group (repeatable).")
    ] = None,
    claim: Annotated[
        list[str] | None, typer.Option("--claim", help="An extra claim KEY=VALUE (repeatable).")
    ] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds, or 15m, 1h, 2d.")] = "1h",
    key: Annotated[Path, typer.Option(help="The signing key from `hoopy token init`.")] = Path(
        ".hoopy/dev-signing-key.jwk"
    ),
    issuer: Annotated[str, typer.Option(help="The iss claim.")] = DEV_ISSUER,
    audience: Annotated[str, typer.Option(help="The aud claim.")] = DEV_AUDIENCE,
) -> None:
    """Print a signed token to use as the MySQL password."""
    from hoopy.identity.dev_tokens import mint_token

    extra: dict[str, str] = {}
    for item in claim or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            _fail(f"--claim {item!r}: use KEY=VALUE")
        extra[name] = value
    if not key.exists():
        _fail(f"{key} does not exist: run `hoopy token init` first")
    print(
        mint_token(
            key,
            issuer=issuer,
            audience=audience,
            subject=subject,
            groups=group or [],
            claims=extra,
            ttl=_duration(ttl),
        )
    )


from hoopy import cli_audit  # noqa: E402  (registers sessions, audit, replay on app)

cli_audit.register(app)

from hoopy import cli_approvals  # noqa: E402  (registers approvals on app)

cli_approvals.register(app)


def main() -> None:
    app()
