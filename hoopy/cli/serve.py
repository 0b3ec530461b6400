"""``hoopy serve`` and ``hoopy hash-password``: running the gateway (hoopy/gateway/server.py)."""

from __future__ import annotations

import getpass
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hoopy.cli.common import err, fail
from hoopy.config.loader import ConfigError, format_password_hash, load_config
from hoopy.config.model import Config, LoginMode


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command("hash-password")(hash_password)


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
    from hoopy.config.lint import serve_errors
    from hoopy.config.model import SecretUnavailable
    from hoopy.gateway.server import GatewayServer, run_gateway

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(str(exc))
    problems = serve_errors(cfg)
    if problems:
        fail("\n".join(str(p) for p in problems))
    logging.basicConfig(
        level=cfg.gateway.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    if cfg.gateway.workers > 1:
        from hoopy.gateway.workers import Supervisor

        try:
            status = Supervisor(cfg, ready_file, lambda info: _announce(cfg, info)).run()
        except (OSError, AuditUnavailable, StoreError) as exc:
            fail(f"cannot start: {exc}")
        if status:
            fail("cannot start: a worker did not start (its error is above)")
        return

    def announce(server: GatewayServer) -> None:
        _announce(cfg, server.ready_info())

    try:
        trio.run(lambda: run_gateway(cfg, ready_file=ready_file, on_ready=announce))
    except OSError as exc:
        fail(f"cannot start: {exc}")
    except (AuditUnavailable, SecretUnavailable, StoreError) as exc:
        fail(f"cannot start: {exc}")
    except KeyboardInterrupt:
        pass


def _announce(cfg: Config, info: dict[str, Any]) -> None:
    """What ``serve`` prints once listening: the certificate, each listener and how to
    connect (``info``: the ready file's content)."""
    from hoopy.gateway.tls import ServerCertificate

    if info.get("tls_cert"):
        cert = Path(info["tls_cert"])
        verb = "generated" if info.get("tls_cert_generated") else "using"
        fingerprint = ServerCertificate(cert, cert, False).fingerprint()
        err.print(f"TLS: {verb} self-signed certificate {cert}")
        err.print(f"     SHA-256 fingerprint {fingerprint}")
    for b in info["listeners"]:
        target = cfg.targets[b["target"]]
        where = []
        if b["tcp"]:
            where.append(f"{b['tcp'][0]}:{b['tcp'][1]}")
        if b["unix_socket"]:
            where.append(str(b["unix_socket"]))
        err.print(
            f"listener [bold]{b['name']}[/] on {' and '.join(where)}"
            f"{' (TLS offered)' if b['tls'] else ''} -> target [bold]{target.name}[/] "
            f"at {target.address()} ({target.login.value})",
            highlight=False,
        )
        user = (
            "YOUR_DB_USER"
            if target.login is LoginMode.PASSTHROUGH
            else (next(iter(cfg.users), "USER"))
        )
        if b["tcp"]:
            parts = ["mariadb", "-h", b["tcp"][0], "-P", str(b["tcp"][1]), "-u", user, "-p"]
            if b["tls"] and info.get("tls_cert"):
                parts += ["--ssl-ca", str(info["tls_cert"])]
        else:
            parts = ["mariadb", "-S", str(b["unix_socket"]), "-u", user, "-p"]
        err.print(f"  connect: {shlex.join(parts)}", soft_wrap=True)
    workers = info.get("workers")
    if workers:
        pids = ", ".join(str(w["pid"]) for w in workers)
        err.print(f"{len(workers)} workers (pids {pids}), each with its own audit chain")
    err.print("ready. Ctrl-C to stop.")


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
            fail("the passwords differ")
    if not password:
        fail("empty password")
    print(format_password_hash(password.encode("utf-8")))
