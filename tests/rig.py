"""A throwaway, real MariaDB server for tests and the demo.

Plain Python (no pytest, no trio) so that both ``tests/conftest.py`` and
``scripts/demo`` use the same start-up logic::

    with MariaDBServer() as db:           # TLS on by default
        conn = db.admin_connect()         # root over the unix socket
        ...

Run ``python -m tests.rig`` from the repo root to get a server for manual
poking; it prints how to connect and runs until Ctrl-C.

Everything lives in one temporary directory (data, socket, logs, TLS
material) that ``close()`` removes. The server runs in its own session
(so a terminal Ctrl-C does not hit it directly) and, on Linux, gets
SIGKILL if the Python thread that started it dies, so a crashed or
killed test run does not leave a ``mariadbd`` behind.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pymysql

# Where Debian puts the server binaries; not on a non-root PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/mysql/bin")


def find_binary(*names: str) -> str:
    """Return the first of ``names`` found on PATH or in the sbin dirs."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS])
    for name in names:
        found = shutil.which(name, path=search)
        if found:
            return found
    raise FileNotFoundError(
        f"none of {', '.join(names)} found on PATH or in {', '.join(_EXTRA_BIN_DIRS)}; "
        "install mariadb-server (scripts/test does this when run as root)"
    )


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGKILL the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen in a new session that dies with us (Linux).

    PDEATHSIG fires when the spawning *thread* exits, so it is only set when
    spawning from the main thread (a trio.to_thread worker would otherwise
    take the child down with it when the worker idles out).
    """
    preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
    return subprocess.Popen(list(argv), start_new_session=True, preexec_fn=preexec, **kwargs)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: a private CA and a server certificate signed by it."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


def generate_tls_files(
    directory: Path,
    *,
    common_name: str = "hoopy-test-mariadb",
    hostnames: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1", "::1"),
    days: int = 30,
) -> TLSFiles:
    """Write ``ca.pem``, ``ca-key.pem``, ``server-cert.pem``, ``server-key.pem``.

    RSA-2048 / SHA-256 with SKI/AKI, so it passes OpenSSL 3 security
    level 2 and Python's VERIFY_X509_STRICT. The server certificate's
    SAN covers localhost, 127.0.0.1 and ::1, so hostname checking works
    against the rig's address.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)
    not_after = now + datetime.timedelta(days=days)

    def write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    san: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TLSFiles(
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        cert=directory / "server-cert.pem",
        key=directory / "server-key.pem",
    )
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    write_key(files.ca_key, ca_key)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(files.key, key)
    return files


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


class MariaDBStartError(RuntimeError):
    pass


# Small and fast: nothing here needs durability.
_SERVER_TUNING = (
    "--skip-name-resolve",
    "--max-allowed-packet=64M",
    "--max-connections=1000",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    # io_setup() can fail in containers (aio-max-nr); simulated AIO is fine here.
    "--innodb-use-native-aio=0",
    "--innodb-buffer-pool-dump-at-shutdown=0",
    "--innodb-buffer-pool-load-at-startup=0",
    "--skip-log-bin",
)


class MariaDBServer:
    """One ``mariadbd`` in its own temp dir, on 127.0.0.1:<free port> + a unix socket.

    Attributes after ``start()``: ``host``, ``port``, ``unix_socket``,
    ``root_password``, ``ca_path`` (None when TLS is off), ``tls_files``,
    ``base_dir``, ``datadir``, ``error_log``.

    ``stop()`` stops the process but keeps the data (``start()`` again
    restarts on the same port when it is still free); ``close()`` stops and
    removes the temp dir. Also a context manager.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: bool = True,
        root_password: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60.0,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root_password = root_password or "root-" + secrets.token_hex(12)
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        # Keep the path short: unix socket paths are limited to 107 bytes.
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="hoopy-mdb-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.datadir = self.base_dir / "data"
        self.tmpdir = self.base_dir / "tmp"
        self.unix_socket = str(self.base_dir / "mysqld.sock")
        self.pid_file = self.base_dir / "mysqld.pid"
        self.error_log = self.base_dir / "mysqld.err"
        self.port = 0
        self.tls_files: TLSFiles | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._password_set = False
        self._closed = False
        self._is_root = hasattr(os, "geteuid") and os.geteuid() == 0
        if tls:
            self.enable_tls()
        atexit.register(self.close)

    # -- TLS ---------------------------------------------------------------

    def enable_tls(self) -> TLSFiles:
        """Generate a CA + server cert (once); takes effect at the next start()."""
        if self.tls_files is None:
            self.tls_files = generate_tls_files(self.base_dir / "tls")
        return self.tls_files

    def disable_tls(self) -> None:
        """Start without TLS from the next start() on."""
        self.tls_files = None

    @property
    def ca_path(self) -> str | None:
        return str(self.tls_files.ca_cert) if self.tls_files else None

    @property
    def tls_enabled(self) -> bool:
        return self.tls_files is not None

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> MariaDBServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _user_args(self) -> list[str]:
        # mariadbd refuses to run as root without --user=root; as non-root
        # --user only draws a warning, and mariadb-install-db rejects it.
        return ["--user=root"] if self._is_root else []

    def _install(self) -> None:
        install_db = find_binary("mariadb-install-db", "mysql_install_db")
        self.datadir.mkdir(parents=True, exist_ok=True)
        log = self.base_dir / "install-db.log"
        argv = [
            install_db,
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            f"--datadir={self.datadir}",
            "--skip-test-db",
            *self._user_args(),
            # passed on to the bootstrap mariadbd; innodb sizes must match start()
            *_SERVER_TUNING,
        ]
        with log.open("wb") as out:
            rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=120).returncode
        if rc != 0:
            raise MariaDBStartError(
                f"mariadb-install-db failed (exit {rc}):\n{tail(log)}\n{tail(self.error_log)}"
            )

    def _server_argv(self) -> list[str]:
        argv = [
            find_binary("mariadbd", "mysqld"),
            "--no-defaults",  # must be first
            f"--datadir={self.datadir}",
            f"--socket={self.unix_socket}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self.tmpdir}",
            *self._user_args(),
            *_SERVER_TUNING,
        ]
        if self.tls_files is not None:
            argv += [
                f"--ssl-ca={self.tls_files.ca_cert}",
                f"--ssl-cert={self.tls_files.cert}",
                f"--ssl-key={self.tls_files.key}",
            ]
        argv += self.extra_args
        return argv

    def start(self) -> MariaDBServer:
        """Start (installing the datadir on first use); returns once it accepts logins."""
        if self._closed:
            raise RuntimeError("MariaDBServer already closed")
        if self.running:
            return self
        if not (self.datadir / "mysql").is_dir():
            self._install()
        self.tmpdir.mkdir(exist_ok=True)
        last_error: MariaDBStartError | None = None
        for attempt in range(5):
            if not self.port or attempt > 0:
                self.port = free_tcp_port(self.host)
            try:
                self._start_once()
                break
            except MariaDBStartError as exc:
                last_error = exc
                if "already in use" not in str(exc) and "Bind on TCP/IP port" not in str(exc):
                    raise
        else:
            assert last_error is not None
            raise last_error
        if not self._password_set:
            self._secure()
        return self

    def _start_once(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.unix_socket)
        log_offset = self.error_log.stat().st_size if self.error_log.exists() else 0
        started = time.monotonic()
        self.proc = spawn(
            self._server_argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = started + self.startup_timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise MariaDBStartError(
                    f"mariadbd exited with {rc} during start-up; error log:\n"
                    + self._log_since(log_offset)
                )
            if os.path.exists(self.unix_socket):
                try:
                    self._connect_root(connect_timeout=2).close()
                    self.startup_seconds = time.monotonic() - started
                    return
                except (pymysql.err.OperationalError, OSError):
                    pass
            if time.monotonic() > deadline:
                self._kill()
                raise MariaDBStartError(
                    f"mariadbd did not accept connections within {self.startup_timeout:.0f}s; "
                    "error log:\n" + self._log_since(log_offset)
                )
            time.sleep(0.05)

    def _log_since(self, offset: int, lines: int = 40) -> str:
        try:
            with self.error_log.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.error_log}: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def _secure(self) -> None:
        """Set the root password on every root account; drop anonymous accounts."""
        conn = self._connect_root(password="")
        try:
            with conn.cursor() as cur:
                # Anonymous accounts (they shadow 'x'@'%' for socket logins) and
                # root@<hostname>, which --skip-name-resolve ignores and which
                # then cannot be ALTERed or DROPped by name.
                for table in ("global_priv", "proxies_priv"):
                    cur.execute(
                        f"DELETE FROM mysql.{table} WHERE User = '' OR (User = 'root' "
                        "AND Host NOT IN ('localhost', '127.0.0.1', '::1'))"
                    )
                cur.execute("FLUSH PRIVILEGES")
                cur.execute("SELECT Host FROM mysql.user WHERE User = 'root'")
                for (host,) in list(cur.fetchall()):
                    cur.execute("ALTER USER 'root'@%s IDENTIFIED BY %s", (host, self.root_password))
        finally:
            conn.close()
        self._password_set = True

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Keeps the datadir."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None
        return proc.returncode

    def restart(self) -> MariaDBServer:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its temp dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            if os.environ.get("HOOPY_KEEP_MARIADB"):
                print(f"HOOPY_KEEP_MARIADB set: leaving {self.base_dir}", file=sys.stderr)
            else:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            atexit.unregister(self.close)

    # -- connections ---------------------------------------------------------

    def _connect_root(
        self, password: str | None = None, **kw: Any
    ) -> pymysql.connections.Connection:
        if password is None:
            password = self.root_password if self._password_set else ""
        params: dict[str, Any] = {
            "unix_socket": self.unix_socket,
            "user": "root",
            "password": password,
            "autocommit": True,
            "charset": "utf8mb4",
        }
        params.update(kw)
        return pymysql.connect(**params)

    def admin_connect(self, **kw: Any) -> pymysql.connections.Connection:
        """A pymysql connection as root over the unix socket (autocommit on)."""
        return self._connect_root(**kw)

    def connect(self, user: str, password: str, **kw: Any) -> pymysql.connections.Connection:
        """A pymysql connection over TCP to 127.0.0.1:port (no TLS unless ``ssl=`` given)."""
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": user,
            "password": password,
            "autocommit": True,
            "charset": "utf8mb4",
            "connect_timeout": 10,
        }
        params.update(kw)
        return pymysql.connect(**params)

    def admin_sql(self, *statements: str | tuple[str, Sequence[Any]]) -> list[tuple[Any, ...]]:
        """Run statements as root; returns the rows of the last one.

        Each statement is SQL text or ``(sql, params)``.
        """
        rows: list[tuple[Any, ...]] = []
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                for stmt in statements:
                    if isinstance(stmt, tuple):
                        cur.execute(stmt[0], tuple(stmt[1]))
                    else:
                        cur.execute(stmt)
                    rows = list(cur.fetchall())
        finally:
            conn.close()
        return rows

    def create_user(
        self,
        user: str,
        password: str,
        *,
        hosts: Sequence[str] = ("%", "localhost"),
        grants: Sequence[str] = (),
    ) -> None:
        """CREATE OR REPLACE USER on each host and run ``GRANT <g> TO`` each.

        ``grants`` items look like ``"ALL ON hoopy_test.*"``. The ``localhost``
        account matters for unix-socket logins.
        """
        stmts: list[str | tuple[str, Sequence[Any]]] = []
        for host in hosts:
            stmts.append(("CREATE OR REPLACE USER %s@%s IDENTIFIED BY %s", (user, host, password)))
            for grant in grants:
                stmts.append((f"GRANT {grant} TO %s@%s", (user, host)))
        self.admin_sql(*stmts)

    def describe(self) -> str:
        lines = [
            f"MariaDB {self.host}:{self.port}  socket {self.unix_socket}",
            f"  root password: {self.root_password}",
            f"  datadir: {self.datadir}  error log: {self.error_log}",
        ]
        if self.ca_path:
            lines.append(f"  TLS CA: {self.ca_path}")
        return "\n".join(lines)


@contextlib.contextmanager
def running_mariadb(**kw: Any) -> Iterator[MariaDBServer]:
    server = MariaDBServer(**kw)
    try:
        server.start()
        yield server
    finally:
        server.close()


def wait_for_signal(on_tick: Callable[[], bool] | None = None) -> None:
    """Block until SIGINT/SIGTERM (or ``on_tick`` returns False)."""
    stop = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        while not stop:
            if on_tick is not None and not on_tick():
                return
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.rig", description="Run a throwaway MariaDB until Ctrl-C."
    )
    parser.add_argument("--no-tls", action="store_true", help="start without TLS")
    args = parser.parse_args(argv)
    with running_mariadb(tls=not args.no_tls) as server:
        print(server.describe())
        print(
            f"  mariadb -S {server.unix_socket} -uroot -p'{server.root_password}'\n"
            "Ctrl-C to stop and remove it.",
            flush=True,
        )
        wait_for_signal(lambda: server.running)
    return 0


if __name__ == "__main__":
    sys.exit(main())
