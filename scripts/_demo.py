"""scripts/demo: hoopy in front of a throwaway MariaDB, in the foreground.

Starts a MariaDB (tests/rig.py) in a temp dir, creates database ``demo``
with a ``customers`` table and an upstream account ``hoopy`` (random
password, handed to hoopy in HOOPY_DEMO_DB_PASSWORD), writes a hoopy
config and runs ``hoopy serve``. Ctrl-C stops hoopy and MariaDB and
removes the temp dir. Extra arguments are passed to ``hoopy serve``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.gateway_rig import write_toml  # noqa: E402
from tests.rig import MariaDBServer  # noqa: E402

DEMO_USER = "demo"
CUSTOMERS = [
    ("Ada Lovelace", "ada@example.com", "4111 1111 1111 1111"),
    ("Alan Turing", "alan@example.com", "5500 0000 0000 0004"),
    ("Grace Hopper", "grace@example.com", "3400 0000 0000 009"),
    ("Edsger Dijkstra", "edsger@example.com", "6011 0000 0000 0004"),
]


def listen_address() -> str:
    port = int(os.environ.get("HOOPY_DEMO_PORT", "3307"))
    if port:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                print(f"port {port} is busy; letting hoopy pick one", file=sys.stderr)
                port = 0
    return f"127.0.0.1:{port}"


def prepare_database(server: MariaDBServer, db_password: str) -> None:
    server.admin_sql(
        "CREATE DATABASE demo",
        "CREATE TABLE demo.customers ("
        " id INT AUTO_INCREMENT PRIMARY KEY,"
        " name VARCHAR(100) NOT NULL,"
        " email VARCHAR(255) NOT NULL,"
        " card VARCHAR(32) NOT NULL)",
        *[
            ("INSERT INTO demo.customers (name, email, card) VALUES (%s, %s, %s)", row)
            for row in CUSTOMERS
        ],
    )
    server.create_user(
        "hoopy", db_password, hosts=("%", "127.0.0.1", "localhost"), grants=["ALL ON demo.*"]
    )


def demo_config(server: MariaDBServer, workdir: Path) -> dict[str, Any]:
    return {
        "gateway": {
            "state_dir": str(workdir / "state"),
            "handshake_timeout": 10.0,
            "max_connections": 100,
        },
        "listeners": [
            {
                "name": "demo",
                "target": "demo",
                "tcp": listen_address(),
                "unix_socket": str(workdir / "hoopy.sock"),
                "tls": True,
            }
        ],
        "targets": {
            "demo": {
                "host": server.host,
                "port": server.port,
                "login": "gateway_users",
                "user": "hoopy",
                "password_env": "HOOPY_DEMO_DB_PASSWORD",
                "database": "demo",
                "tls": "verify-ca",
                "tls_ca": server.ca_path,
                "allow_local_infile": False,
                "guardrails": ["default"],
            }
        },
        "users": {DEMO_USER: {"password_env": "HOOPY_DEMO_USER_PASSWORD", "groups": ["analysts"]}},
        "roles": {"analysts": {"groups": ["analysts"], "targets": ["demo"]}},
    }


def hoopy_command() -> list[str]:
    console = Path(sys.executable).parent / "hoopy"
    if console.exists():
        return [str(console)]
    return [sys.executable, "-m", "hoopy"]


def wait_ready(proc: subprocess.Popen[bytes], ready: Path, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return json.loads(ready.read_text())
        except (OSError, ValueError):
            time.sleep(0.1)
    return None


def print_banner(info: Any, server: MariaDBServer, config_path: Path, user_pw: str) -> None:
    lines = ["", "hoopy demo is running. Ctrl-C stops it and throws everything away."]
    for listener in (info or {}).get("listeners", []):
        if listener.get("tcp"):
            host, port = listener["tcp"]
            lines.append(
                f"  mariadb -h {host} -P {port} -u {DEMO_USER} -p{user_pw} demo"
                " -e 'SELECT * FROM customers'"
            )
            lines.append(
                f"  mariadb -h {host} -P {port} -u {DEMO_USER} -p{user_pw} demo"
                " -e 'DELETE FROM customers'   # denied by the default guardrails"
            )
        if listener.get("unix_socket"):
            lines.append(f"  mariadb -S {listener['unix_socket']} -u {DEMO_USER} -p{user_pw} demo")
    python = Path(sys.executable)
    lines += [
        "then see what was recorded (audit trail in the state directory):",
        f"  {python.parent / 'hoopy'} sessions -c {config_path}",
        f"  {python.parent / 'hoopy'} replay -c {config_path} SESSION_ID",
        f"  config:   {config_path}",
        f"  upstream: MariaDB {server.host}:{server.port} (database demo, account hoopy,"
        " password in HOOPY_DEMO_DB_PASSWORD), TLS verified against its own CA",
        "",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str]) -> int:
    user_pw = os.environ.get("HOOPY_DEMO_USER_PASSWORD", "demo")
    db_pw = secrets.token_urlsafe(18)
    proc: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Also when started with SIGINT ignored (e.g. `scripts/demo &` from a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server = MariaDBServer(tls=True)
    try:
        print("starting a throwaway MariaDB ...", file=sys.stderr, flush=True)
        server.start()
        prepare_database(server, db_pw)
        workdir = server.base_dir / "hoopy"
        workdir.mkdir()
        config_path = workdir / "hoopy.toml"
        ready_path = workdir / "ready.json"
        write_toml(config_path, demo_config(server, workdir))
        env = {
            **os.environ,
            "HOOPY_DEMO_DB_PASSWORD": db_pw,
            "HOOPY_DEMO_USER_PASSWORD": user_pw,
        }
        cmd = [
            *hoopy_command(),
            "serve",
            "--config",
            str(config_path),
            "--ready-file",
            str(ready_path),
            *argv,
        ]
        # Same process group: the terminal's Ctrl-C reaches hoopy directly.
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT)
        info = wait_ready(proc, ready_path)
        if info is not None:
            print_banner(info, server, config_path, user_pw)
        elif proc.poll() is None:
            print("hoopy has not written its ready file after 30 s", file=sys.stderr)
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.close()
        print("demo stopped; temp files removed.", file=sys.stderr)


if __name__ == "__main__":
    if shutil.which("mariadbd", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        print("mariadbd not found: run scripts/demo (it installs MariaDB)", file=sys.stderr)
        sys.exit(1)
    sys.exit(main(sys.argv[1:]))
