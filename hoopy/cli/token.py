"""``hoopy token init|mint``: local signing keys and tokens (hoopy/identity/dev_tokens.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hoopy.cli.common import err, fail

token_app = typer.Typer(
    help="Local signing keys and tokens, for laptops and CI without an identity provider.",
    no_args_is_help=True,
)

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
        fail(f"{exc.filename or exc} exists; pass --force to replace it")
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
            fail(f"--claim {item!r}: use KEY=VALUE")
        extra[name] = value
    if not key.exists():
        fail(f"{key} does not exist: run `hoopy token init` first")
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


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
