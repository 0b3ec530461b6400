"""Helpers that drive real client programs (the ``mariadb`` CLI, ``sysbench``) for the
gateway integration tests, plus small pymysql conveniences.

Everything here is plain ``subprocess``: the clients run exactly as a user would run them,
with ``--no-defaults`` so no option file on the machine changes their behaviour.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pymysql
import pytest

from tests.gateway_rig import (
    APP_PASSWORD,
    APP_USER,
    DEV_PASSWORD,
    DEV_USER,
    TEST_DB,
    HoopyProcess,
)
from tests.rig import MariaDBServer

MARIADB_CLI = shutil.which("mariadb") or "/usr/bin/mariadb"
SYSBENCH = shutil.which("sysbench") or "/usr/bin/sysbench"

# "Query OK, 1 row affected (0.001 sec)" / "3 rows in set (0.000 sec)": the only
# part of the CLI's -vvv output that legitimately differs between two runs.
_TIMING = re.compile(rb"\((?:\d+ min )?\d+\.\d+ sec\)")


def require_binary(path: str) -> None:
    if not shutil.which(path):
        pytest.skip(f"{path} is not installed")


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom a client connects: TCP (host, port) or a unix socket."""

    user: str
    password: str
    host: str | None = None
    port: int | None = None
    socket: str | None = None

    def cli_args(self) -> list[str]:
        args = [f"--user={self.user}", f"--password={self.password}"]
        if self.socket is not None:
            args += [f"--socket={self.socket}", "--protocol=socket"]
        else:
            args += [f"--host={self.host}", f"--port={self.port}", "--protocol=tcp"]
        return args


def hoopy_endpoint(
    hoopy: HoopyProcess,
    user: str = DEV_USER,
    password: str = DEV_PASSWORD,
    *,
    unix: bool = False,
    listener: str = "app",
) -> Endpoint:
    if unix:
        sock = hoopy.unix_socket[listener]
        assert sock, "listener has no unix socket"
        return Endpoint(user, password, socket=sock)
    host, port = hoopy.tcp[listener]
    return Endpoint(user, password, host=host, port=port)


def direct_endpoint(
    mariadb: MariaDBServer, user: str = APP_USER, password: str = APP_PASSWORD
) -> Endpoint:
    return Endpoint(user, password, host=mariadb.host, port=mariadb.port)


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def normalized_stdout(self) -> bytes:
        return normalize(self.stdout)

    @property
    def normalized_stderr(self) -> bytes:
        return normalize(self.stderr)

    def text(self) -> str:
        return (self.stdout + self.stderr).decode("utf-8", "replace")

    def comparable(self) -> tuple[int, bytes, bytes]:
        return (self.returncode, self.normalized_stdout, self.normalized_stderr)


def normalize(output: bytes) -> bytes:
    """Blank out the timing the CLI prints after each statement."""
    return _TIMING.sub(b"(X sec)", output)


def run_mariadb(
    endpoint: Endpoint,
    *options: str,
    sql: str | bytes | None = None,
    database: str | None = TEST_DB,
    timeout: float = 60.0,
) -> CliResult:
    """Run ``mariadb --no-defaults <endpoint> <options> [database]`` with ``sql`` on stdin.

    The client character set is utf8mb4 (a later ``--default-character-set`` in
    ``options`` wins), so non-ASCII data prints the same whatever the locale.
    """
    argv = [
        MARIADB_CLI,
        "--no-defaults",
        *endpoint.cli_args(),
        "--default-character-set=utf8mb4",
        *options,
    ]
    if database is not None:
        argv.append(database)
    stdin = sql.encode() if isinstance(sql, str) else sql
    proc = subprocess.run(
        argv,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# Options under which the CLI prints everything the server says: column metadata,
# affected rows, info strings ("Records: 3  Duplicates: 0  Warnings: 0"), warnings.
VERBOSE = ("--batch", "--column-type-info", "--show-warnings", "-vvv")


def _lines(result: CliResult) -> list[str]:
    out = result.normalized_stdout.decode("utf-8", "replace").splitlines()
    err = result.normalized_stderr.decode("utf-8", "replace").splitlines()
    return [f"exit {result.returncode}", *out, "--- stderr ---", *err]


def assert_same_output(through: CliResult, direct: CliResult) -> None:
    """Exit code, stdout and stderr equal byte for byte (timings blanked)."""
    if through.comparable() != direct.comparable():
        import difflib

        diff = "\n".join(
            difflib.unified_diff(
                _lines(direct),
                _lines(through),
                "direct",
                "through hoopy",
                lineterm="",
                n=2,
            )
        )
        raise AssertionError(
            f"CLI output differs (exit {through.returncode} via hoopy, "
            f"{direct.returncode} direct):\n{diff[:6000]}"
        )


# --------------------------------------------------------------------------
# sysbench
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SysbenchReport:
    read: int
    write: int
    other: int
    total: int
    transactions: int
    queries: int
    ignored_errors: int
    reconnects: int
    events: int
    output: str


_SB_FIELDS = {
    "read": r"^\s*read:\s+(\d+)",
    "write": r"^\s*write:\s+(\d+)",
    "other": r"^\s*other:\s+(\d+)",
    "total": r"^\s*total:\s+(\d+)",
    "transactions": r"^\s*transactions:\s+(\d+)",
    "queries": r"^\s*queries:\s+(\d+)",
    "ignored_errors": r"^\s*ignored errors:\s+(\d+)",
    "reconnects": r"^\s*reconnects:\s+(\d+)",
    "events": r"^\s*total number of events:\s+(\d+)",
}


def parse_sysbench(output: str) -> SysbenchReport:
    values: dict[str, Any] = {}
    for name, pattern in _SB_FIELDS.items():
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise AssertionError(f"sysbench output has no {name!r} line:\n{output}")
        values[name] = int(match.group(1))
    return SysbenchReport(output=output, **values)


def run_sysbench(
    test: str,
    command: str,
    endpoint: Endpoint,
    database: str,
    *options: str,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    assert endpoint.host is not None and endpoint.port is not None
    argv = [
        SYSBENCH,
        test,
        f"--mysql-host={endpoint.host}",
        f"--mysql-port={endpoint.port}",
        f"--mysql-user={endpoint.user}",
        f"--mysql-password={endpoint.password}",
        f"--mysql-db={database}",
        "--mysql-ssl=off",
        "--db-driver=mysql",
        *options,
        command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


# --------------------------------------------------------------------------
# pymysql
# --------------------------------------------------------------------------


def query(
    conn: pymysql.connections.Connection, sql: str, args: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return [tuple(row) for row in cur.fetchall()]


def one(conn: pymysql.connections.Connection, sql: str, args: Sequence[Any] | None = None) -> Any:
    rows = query(conn, sql, args)
    assert len(rows) == 1, rows
    return rows[0]
