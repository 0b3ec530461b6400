"""``hoopy init``: a commented starter config for one target (config/starter.py), asking for
what a user must decide (or taking it from flags), written only where nothing is, and linted
before it is reported written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hoopy.cli.common import err, fail, out


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the config.")
    ] = Path("hoopy.toml"),
    host: Annotated[str | None, typer.Option(help="The database's host.")] = None,
    port: Annotated[int | None, typer.Option(help="The database's port.")] = None,
    database: Annotated[str | None, typer.Option(help="The default database.")] = None,
    login: Annotated[
        str | None,
        typer.Option(help="How clients log in: tokens, gateway_users or passthrough."),
    ] = None,
    user: Annotated[str | None, typer.Option(help="hoopy's own account on the database.")] = None,
    password_env: Annotated[
        str | None, typer.Option(help="The environment variable holding that password.")
    ] = None,
    listen: Annotated[str | None, typer.Option(help="Where clients connect: HOST:PORT.")] = None,
    issuer: Annotated[
        str | None, typer.Option(help="Token issuer: dev (hoopy token) or github (Actions OIDC).")
    ] = None,
    github_owner: Annotated[
        str | None, typer.Option(help="For --issuer github: the organisation or user.")
    ] = None,
    masking: Annotated[
        bool, typer.Option("--masking/--no-masking", help="Start with an example masking set.")
    ] = True,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Ask nothing: defaults for what no flag says.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a commented starter config for one database."""
    from hoopy.config.lint import lint
    from hoopy.config.starter import LOGINS, StarterChoices, starter_config

    if output.exists() and not force:
        fail(f"{output} exists; pass --force to replace it, or --output for another file")
    ask = not yes
    d = StarterChoices()

    def choose(value: str | None, question: str, default: str) -> str:
        if value is not None:
            return value
        return str(typer.prompt(question, default=default)) if ask else default

    login_ = choose(login, f"How do clients log in ({', '.join(LOGINS)})?", d.login)
    if login_ not in LOGINS:
        fail(f"--login must be one of {', '.join(LOGINS)}, not {login_!r}")
    issuer_ = d.issuer
    owner = github_owner or ""
    if login_ == "tokens":
        issuer_ = choose(issuer, "Who signs the tokens (dev, github)?", d.issuer)
        if issuer_ not in ("dev", "github"):
            fail(f"--issuer must be dev or github, not {issuer_!r}")
        if issuer_ == "github":
            owner = choose(github_owner, "GitHub organisation or user", "YOUR-ORG")
    host_ = choose(host, "Database host", d.host)
    port_text = str(port) if port is not None else choose(None, "Database port", str(d.port))
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        fail(f"the database port must be a number from 1 to 65535, not {port_text!r}")
    database_ = choose(database, "Default database (empty: none)", "") or None
    account = user or d.user
    if user is None and login_ != "passthrough":
        account = choose(None, "hoopy's account on the database", d.user)
    listen_ = choose(listen, "Where clients connect (HOST:PORT)", d.listen)
    choices = StarterChoices(
        host=host_,
        port=int(port_text),
        database=database_,
        login=login_,
        user=account,
        password_env=password_env or d.password_env,
        listen=listen_,
        issuer=issuer_,
        github_owner=owner,
        masking=masking,
    )
    text = starter_config(choices)
    # Linted before it takes the file's name: answers that make a broken config (a listen
    # address that is not HOST:PORT) leave nothing behind.
    draft = output.with_name(f".{output.name}.init")
    try:
        draft.write_text(text)
        draft.chmod(0o600)
        report = lint(draft)
        if report.errors:
            for f in report.errors:
                err.print(f"[bold red]error:[/] {escape(str(f).replace(str(draft), str(output)))}")
            fail("nothing was written: fix the answers above and run hoopy init again")
        draft.replace(output)
    finally:
        draft.unlink(missing_ok=True)
    out.print(f"wrote {escape(str(output))}")
    steps = []
    if choices.login != "passthrough" and choices.password_env not in os.environ:
        steps.append(f"export {choices.password_env}=...   # {choices.user}'s database password")
    if choices.login == "tokens" and choices.issuer == "dev":
        steps.append(f"hoopy token init --dir {output.parent / '.hoopy'}")
    steps.append(f"hoopy lint-config {output}")
    steps.append(f"hoopy serve --config {output}")
    out.print("next:\n" + "\n".join(f"  {escape(s)}" for s in steps))
