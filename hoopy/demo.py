"""``hoopy demo``: the whole product on a laptop, in one command and one temporary directory.

A throwaway MariaDB (``mariadbd``, started with an init file that creates database ``demo``
with a ``customers`` table of personal data and hoopy's account), a local token issuer
(``hoopy token`` keys), a config with the default guardrails, a review rule whose approvals
are retried, masking of the customers' emails and cards, and the gateway itself, in this
process. Once it serves, it prints copy-paste commands: an audited query with masked
columns, a ``DELETE`` without ``WHERE`` the guardrails refuse, an ``UPDATE`` held for
approval and approved, and ``hoopy replay`` of the session. Ctrl-C (or SIGTERM) stops the
gateway and MariaDB and removes the directory.

Resource handling: ``Demo`` is a context manager; everything it starts or writes is under
``workdir`` and is stopped and removed on exit, whatever ended it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import tomli_w

from hoopy.identity.dev_tokens import create_signing_key, mint_token

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/mysql/bin")
MISSING_SERVER = (
    "hoopy demo needs a MariaDB server binary (mariadbd) and none was found on PATH or in "
    "/usr/sbin: install it with `sudo apt-get install mariadb-server mariadb-client` (Debian, "
    "Ubuntu), or run scripts/demo, which installs it when run as root"
)
ISSUER = "hoopy-demo"
AUDIENCE = "hoopy"
AGENT = "agent"  # the demo token's subject and the user name its commands log in as
CUSTOMERS = [
    ("Ada Lovelace", "ada@example.com", "4111 1111 1111 1111"),
    ("Alan Turing", "alan@example.com", "5500 0000 0000 0004"),
    ("Grace Hopper", "grace@example.com", "3400 0000 0000 009"),
    ("Edsger Dijkstra", "edsger@example.com", "6011 0000 0000 0004"),
]


class DemoError(Exception):
    """The demo cannot start: the message says why and what to do."""


def find_binary(*names: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS])
    for name in names:
        found = shutil.which(name, path=search)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass
class Demo:
    """The throwaway database and the demo's config, token and commands (see the module
    docstring). ``start()`` starts MariaDB and writes the config; the caller runs the
    gateway on ``config_path`` with ``environ`` set."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hoopy-demo-")))
    listen_port: int = 0  # 0: a free one
    db_port: int = 0
    db_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    mask_key: str = field(default_factory=lambda: secrets.token_hex(32))
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def config_path(self) -> Path:
        return self.workdir / "hoopy.toml"

    @property
    def socket_path(self) -> Path:
        return self.workdir / "hoopy.sock"

    @property
    def environ(self) -> dict[str, str]:
        return {"HOOPY_DEMO_DB_PASSWORD": self.db_password, "HOOPY_DEMO_MASK_KEY": self.mask_key}

    def __enter__(self) -> Demo:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the database -------------------------------------------------------------------

    def start(self, *, timeout: float = 60.0) -> None:
        mariadbd = find_binary("mariadbd", "mysqld")
        install_db = find_binary("mariadb-install-db", "mysql_install_db")
        if mariadbd is None or install_db is None:
            raise DemoError(MISSING_SERVER)
        self.workdir.chmod(0o700)
        datadir = self.workdir / "mariadb"
        user = ["--user=root"] if os.geteuid() == 0 else []
        log = self.workdir / "mariadb.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [install_db, "--no-defaults", f"--datadir={datadir}", "--skip-test-db",
                 "--auth-root-authentication-method=socket", *user],
                stdout=out, stderr=subprocess.STDOUT, timeout=120,
            )  # fmt: skip
        if done.returncode != 0:
            raise DemoError(f"mariadb-install-db failed:\n{_tail(log)}")
        init = self.workdir / "init.sql"
        init.write_text(self._init_sql())
        init.chmod(0o600)
        self.db_port = self.db_port or _free_port()
        self.proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={datadir}",
             f"--socket={self.workdir / 'mariadb.sock'}", f"--port={self.db_port}",
             "--bind-address=127.0.0.1", f"--log-error={log}", f"--init-file={init}",
             f"--pid-file={self.workdir / 'mariadb.pid'}", "--skip-name-resolve",
             "--innodb-buffer-pool-size=32M", "--innodb-use-native-aio=0", "--skip-log-bin",
             *user],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops it in order
        )  # fmt: skip
        self._wait_for_database(log, timeout)
        init.unlink()  # it holds the account's password: read once, at start-up
        self._write_config()

    def _init_sql(self) -> str:
        rows = ", ".join(
            f"({_sql_string(n)}, {_sql_string(e)}, {_sql_string(c)})" for n, e, c in CUSTOMERS
        )
        password = _sql_string(self.db_password)
        return "\n".join(
            [
                "CREATE DATABASE demo;",
                "CREATE TABLE demo.customers (id INT AUTO_INCREMENT PRIMARY KEY, "
                "name VARCHAR(100) NOT NULL, email VARCHAR(255) NOT NULL, "
                "card VARCHAR(32) NOT NULL);",
                f"INSERT INTO demo.customers (name, email, card) VALUES {rows};",
                f"CREATE USER 'hoopy'@'127.0.0.1' IDENTIFIED BY {password};",
                "GRANT ALL ON demo.* TO 'hoopy'@'127.0.0.1';",
                "",
            ]
        )

    def _wait_for_database(self, log: Path, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"mariadbd exited during start-up:\n{_tail(log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.db_port), timeout=2) as s:
                    if s.recv(5)[4:5] == b"\x0a":  # a handshake greeting: protocol 10
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise DemoError(f"mariadbd did not accept connections within {timeout:.0f}s:\n{_tail(log)}")

    # --- the gateway's side -------------------------------------------------------------

    def _write_config(self) -> None:
        keys = self.workdir / "keys"
        signing_key, jwks = create_signing_key(keys)
        self.token = mint_token(
            signing_key, issuer=ISSUER, audience=AUDIENCE, subject=AGENT, groups=["agents"],
            ttl=12 * 3600,
        )  # fmt: skip
        self.listen_port = self.listen_port or _free_port()
        config: dict[str, Any] = {
            "gateway": {"state_dir": str(self.workdir / "state"), "shutdown_grace": 2.0},
            "listeners": [
                {
                    "name": "demo",
                    "target": "demo",
                    "tcp": f"127.0.0.1:{self.listen_port}",
                    "unix_socket": str(self.socket_path),
                }
            ],
            "targets": {
                "demo": {
                    "host": "127.0.0.1",
                    "port": self.db_port,
                    "login": "tokens",
                    "user": "hoopy",
                    "password_env": "HOOPY_DEMO_DB_PASSWORD",
                    "database": "demo",
                    "guardrails": ["default", "demo"],
                    "masking": ["pii"],
                }
            },
            "issuers": {"demo": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(jwks)}},
            "roles": {"agents": {"groups": ["agents"], "issuers": ["demo"], "targets": ["demo"]}},
            "guardrails": {
                "demo": {
                    "rules": [
                        {
                            "name": "card-changes",
                            "kinds": ["update"],
                            "tables": ["customers"],
                            "action": "review",
                            "message": "changing customers needs a second pair of eyes",
                            "approval": {"mode": "retry"},
                        }
                    ]
                }
            },
            "masking": {
                "pii": {
                    "hmac_key_env": "HOOPY_DEMO_MASK_KEY",
                    "rules": [
                        {"name": "emails", "columns": ["customers.email"], "strategy": "hmac"},
                        {
                            "name": "cards",
                            "columns": ["customers.card"],
                            "strategy": "keep_last",
                            "keep": 4,
                        },
                    ],
                }
            },
            "approvals": {"mode": "retry"},
        }
        self.config_path.write_text(tomli_w.dumps(config))
        self.config_path.chmod(0o600)

    def commands(self) -> list[tuple[str, str]]:
        """(what it shows, the shell command) for the banner, in order."""
        hoopy = shlex.join(hoopy_command())
        cfg = shlex.quote(str(self.config_path))
        client = (
            f'mariadb -S {shlex.quote(str(self.socket_path))} -u {AGENT} -p"$HOOPY_DEMO_TOKEN" demo'
        )
        update = "UPDATE customers SET card = '4000 0000 0000 0002' WHERE id = 1"
        return [
            ("the agent's token (signed by the demo's issuer, group agents): its password",
             f"export HOOPY_DEMO_TOKEN={shlex.quote(self.token)}"),
            ("an audited query; email and card come back masked",
             f"{client} -e 'SELECT * FROM customers'"),
            ("refused by the default guardrails: DELETE without WHERE",
             f"{client} -e 'DELETE FROM customers'"),
            ("held for approval (it prints the approval id)", f'{client} -e "{update}"'),
            ("approve it (ID from the line above), then run the UPDATE again",
             f"{hoopy} approvals approve ID -c {cfg}"),
            ("the sessions recorded, then one of them replayed", f"{hoopy} sessions -c {cfg}"),
            ("", f"{hoopy} replay SESSION -c {cfg}"),
        ]  # fmt: skip

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def hoopy_command() -> list[str]:
    console = Path(sys.executable).parent / "hoopy"
    return [str(console)] if console.exists() else [sys.executable, "-m", "hoopy"]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


def run(
    *,
    port: int = 0,
    ready_file: Path | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Run the demo in the foreground until Ctrl-C or SIGTERM; 0 when stopped so."""
    import trio

    from hoopy.config.loader import load_config
    from hoopy.gateway.server import GatewayServer, run_gateway

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with Demo(listen_port=port) as demo:
            say("starting a throwaway MariaDB ...")
            demo.start()
            os.environ.update(demo.environ)
            config = load_config(demo.config_path)

            def ready(server: GatewayServer) -> None:
                lines = ["", "hoopy demo is running. Ctrl-C stops it and removes everything.", ""]
                for what, command in demo.commands():
                    if what:
                        lines.append(f"# {what}")
                    lines.append(command)
                lines += ["", f"config: {demo.config_path}", ""]
                say("\n".join(lines))
                if ready_file is not None:
                    info = {
                        "config": str(demo.config_path),
                        "workdir": str(demo.workdir),
                        "socket": str(demo.socket_path),
                        "tcp": ["127.0.0.1", demo.listen_port],
                        "token": demo.token,
                        "commands": [c for _, c in demo.commands()],
                        "mariadbd_pid": demo.proc.pid if demo.proc else None,
                    }
                    ready_file.write_text(json.dumps(info))

            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the way a demo ends
                trio.run(lambda: run_gateway(config, on_ready=ready))
            say("stopping: the gateway, then MariaDB; removing the demo's files ...")
        return 0
    finally:
        for name in ("HOOPY_DEMO_DB_PASSWORD", "HOOPY_DEMO_MASK_KEY"):
            os.environ.pop(name, None)
        signal.signal(signal.SIGTERM, previous)
