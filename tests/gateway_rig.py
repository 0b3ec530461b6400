"""Run hoopy as a real subprocess for end-to-end tests.

Interface relied on (see ``hoopy serve --help``)::

    python -m hoopy serve --config PATH --ready-file PATH

runs in the foreground and, once every listener is bound, writes the ready
file atomically as JSON::

    {"pid": 123,
     "listeners": [{"name": "app", "target": "app", "tcp": ["127.0.0.1", 41234],
                    "unix_socket": "/tmp/x.sock" | null, "tls": true}],
     "tls_cert": "/path/cert.pem" | null}
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pymysql
import pytest

from tests.rig import MariaDBServer, spawn

REPO_ROOT = Path(__file__).resolve().parent.parent

# Accounts and names shared by conftest.py and the tests.
TEST_DB = "hoopy_test"
APP_USER = "app"  # hoopy's vaulted upstream credentials
APP_PASSWORD = "app-secret"
ALICE_USER = "alice"  # a real MariaDB user, for passthrough mode
ALICE_PASSWORD = "alice-pw"
NODE_DIR = Path(__file__).resolve().parent / "node"  # the Node mysql2 scripts


def require_node_mysql2() -> Path:
    """tests/node with mysql2 installed (``npm ci`` if scripts/test's bootstrap has not run);
    skips the test where node or npm is missing."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not on PATH: the Node mysql2 client cannot run")
    if not (NODE_DIR / "node_modules" / "mysql2").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return NODE_DIR


DEV_USER = "dev"  # a gateway user (login = "gateway_users")
DEV_PASSWORD = "dev-pw"
DB_PASSWORD_ENV = "HOOPY_TEST_DB_PASSWORD"
DEV_PASSWORD_ENV = "HOOPY_TEST_DEV_PASSWORD"

DEFAULT_ENV = {DB_PASSWORD_ENV: APP_PASSWORD, DEV_PASSWORD_ENV: DEV_PASSWORD}


def default_config(
    mariadb: MariaDBServer, workdir: Path, *, login: str = "gateway_users"
) -> dict[str, Any]:
    """The baseline config: one listener ``app`` -> target ``app`` -> the rig's MariaDB."""
    return {
        "gateway": {
            "state_dir": str(workdir / "state"),
            "handshake_timeout": 10.0,
            "max_connections": 1000,
        },
        "listeners": [
            {
                "name": "app",
                "target": "app",
                "tcp": "127.0.0.1:0",
                "unix_socket": str(workdir / "hoopy.sock"),
                "tls": True,
            }
        ],
        "targets": {
            "app": {
                "host": mariadb.host,
                "port": mariadb.port,
                "login": login,
                "user": APP_USER,
                "password_env": DB_PASSWORD_ENV,
                "database": TEST_DB,
                "tls": "off",
                "allow_local_infile": False,
            }
        },
        "users": {DEV_USER: {"password_env": DEV_PASSWORD_ENV, "groups": ["developers"]}},
        "roles": {"developers": {"groups": ["developers"], "targets": ["app"]}},
    }


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``overrides`` into a copy of ``base``.

    Dicts merge, anything else (lists included) replaces, and a value of
    ``None`` deletes the key (TOML has no null).
    """
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_toml(path: Path, config: Mapping[str, Any]) -> None:
    import tomli_w

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(tomli_w.dumps(dict(config)))
    os.replace(tmp, path)


class HoopyStartError(RuntimeError):
    pass


class HoopyProcess:
    """``hoopy serve`` as a subprocess, with its own short temp dir.

    After ``start()``: ``ready`` (the parsed ready file), ``pid``,
    ``tcp[name] -> (host, port)``, ``unix_socket[name] -> path | None``,
    ``tls[name] -> bool`` for each listener, and ``tls_cert``.
    stdout/stderr go to files in the work dir; ``stderr_text()`` reads them
    (also after ``stop()``, which removes the dir).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        workdir: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
        tree: Path = REPO_ROOT,
    ) -> None:
        """``tree``: the checkout whose hoopy runs (``bench.ab`` compares two)."""
        self.config = dict(config)
        self.tree = tree
        # Short path: the listener's unix socket lives here (107-byte limit).
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="hoopy-gw-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "hoopy.toml"
        self.ready_path = self.workdir / "ready.json"
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.env = {**os.environ, **DEFAULT_ENV, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.ready_timeout = ready_timeout
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}
        self.tcp: dict[str, tuple[str, int]] = {}
        self.unix_socket: dict[str, str | None] = {}
        self.tls: dict[str, bool] = {}
        self.tls_cert: str | None = None
        self._saved_stdout = ""
        self._saved_stderr = ""
        self._removed = False

    @property
    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "hoopy",
            "serve",
            "--config",
            str(self.config_path),
            "--ready-file",
            str(self.ready_path),
            *self.extra_args,
        ]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> HoopyProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> HoopyProcess:
        if self.proc is not None:
            raise RuntimeError("HoopyProcess already started")
        write_toml(self.config_path, self.config)
        self.ready_path.unlink(missing_ok=True)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = spawn(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.tree,
            )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.ready_path.exists():
                try:
                    ready = json.loads(self.ready_path.read_text())
                except (OSError, ValueError):
                    ready = None  # not atomic after all? try again
                if isinstance(ready, dict):
                    self._load_ready(ready)
                    return self
            rc = self.proc.poll()
            if rc is not None:
                raise HoopyStartError(
                    f"hoopy exited with {rc} before becoming ready\n"
                    f"argv: {self.argv}\nconfig:\n{self.config_path.read_text()}\n"
                    f"stderr:\n{self.stderr_text()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise HoopyStartError(
                    f"hoopy not ready within {self.ready_timeout:.0f}s\n"
                    f"argv: {self.argv}\nstderr:\n{self.stderr_text()}"
                )
            time.sleep(0.02)

    def _load_ready(self, ready: dict[str, Any]) -> None:
        self.ready = ready
        for listener in ready.get("listeners", []):
            name = listener["name"]
            tcp = listener.get("tcp")
            if tcp:
                self.tcp[name] = (str(tcp[0]), int(tcp[1]))
            self.unix_socket[name] = listener.get("unix_socket")
            self.tls[name] = bool(listener.get("tls"))
        self.tls_cert = ready.get("tls_cert")

    def address(self, listener: str = "app") -> tuple[str, int]:
        return self.tcp[listener]

    def connect(
        self,
        user: str = DEV_USER,
        password: str = DEV_PASSWORD,
        *,
        listener: str = "app",
        **kw: Any,
    ) -> pymysql.connections.Connection:
        """pymysql through the listener's TCP port (pass ``unix_socket=`` or ``ssl=`` in kw)."""
        host, port = self.tcp[listener]
        params: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "autocommit": True,
            "connect_timeout": 10,
            "read_timeout": 30,
        }
        params.update(kw)
        return pymysql.connect(**params)

    def connect_connector(
        self,
        database: str,
        user: str = DEV_USER,
        password: str = DEV_PASSWORD,
        *,
        listener: str = "app",
        **kw: Any,
    ) -> Any:
        """mysql-connector (pure Python, no TLS unless kw says) through the listener's port."""
        import mysql.connector

        host, port = self.tcp[listener]
        params: dict[str, Any] = {"use_pure": True, "ssl_disabled": True, **kw}
        return mysql.connector.connect(
            host=host, port=port, user=user, password=password, database=database, **params
        )

    def send_signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait ``timeout`` s, then SIGKILL. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        """stop() and remove the work dir (output stays readable via *_text())."""
        self.stop()
        if not self._removed:
            self._saved_stdout = self._read(self.stdout_path)
            self._saved_stderr = self._read(self.stderr_path)
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._removed = True

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_text(self) -> str:
        return self._saved_stderr if self._removed else self._read(self.stderr_path)

    def stdout_text(self) -> str:
        return self._saved_stdout if self._removed else self._read(self.stdout_path)
