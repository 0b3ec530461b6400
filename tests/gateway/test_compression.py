"""Clients that compress (CLIENT_COMPRESS; zstd) see through hoopy what they see directly.

Compression is hoopy's own business on the client leg: the upstream leg is never compressed,
so the audit records the same statements and outcomes either way. Clients: mysql-connector
(pure Python; it switches to compression on its own ``compress=True`` whatever the server
offers, and hung through hoopy before), the ``mariadb`` CLI ``--compress`` and Node mysql2
``compress: true`` (both compress only when the greeting offers it), and a raw client for
zstd (MariaDB's clients and server have no zstd; MySQL 8 clients do) and hostile frames.
PyMySQL has no compression.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pytest
import zstandard
from mysql.connector.connection import MySQLConnection

from hoopy.audit.reader import iter_records
from hoopy.wire.handshake import CLIENT_COMPRESS, CLIENT_ZSTD_COMPRESSION_ALGORITHM
from tests.gateway.clients import (
    MARIADB_CLI,
    VERBOSE,
    assert_same_output,
    direct_endpoint,
    hoopy_endpoint,
    require_binary,
    run_mariadb,
)
from tests.gateway.fidelity import MODES, HoopyPool, Leg, Pair, hoopy_pool
from tests.gateway.test_raw_protocol import BASE_CAPS, RawClient, count_response
from tests.gateway_rig import (
    DEV_PASSWORD,
    DEV_USER,
    NODE_DIR,
    TEST_DB,
    HoopyProcess,
    require_node_mysql2,
)
from tests.rig import MariaDBServer

Start = Any

# More than 16 MiB in many rows (frames carrying many packets), and one value of 20 MiB
# (a logical packet of two wire packets, each spread over frames).
MANY_ROWS = "SELECT seq, REPEAT(CHAR(65 + seq % 26), 1000) AS v FROM seq_1_to_20000"
BIG_VALUE = "SELECT REPEAT('ab', 10485760) AS v"


def digest(rows: Any) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.fixture(scope="module")
def pool(mariadb: MariaDBServer) -> Iterator[HoopyPool]:
    yield from hoopy_pool(mariadb)


@pytest.fixture(params=MODES)
def pair(request: pytest.FixtureRequest, pool: HoopyPool, fresh_db: str) -> Pair:
    return pool.pair(request.param, fresh_db)


# --- mysql-connector ------------------------------------------------------------------------


def connector(leg: Leg | None = None, **kw: Any) -> MySQLConnection:
    params: dict[str, Any] = {
        "use_pure": True,
        "ssl_disabled": True,
        "charset": "utf8mb4",
        "connection_timeout": 10,
        # Before hoopy spoke the compressed protocol the first query hung: fail instead.
        "read_timeout": 60,
        "autocommit": True,
        "compress": True,
    }
    if leg is not None:
        params.update(
            host=leg.host,
            port=leg.port,
            user=leg.user,
            password=leg.password,
            database=leg.database,
        )
    params.update(kw)
    conn = mysql.connector.connect(**params)
    assert isinstance(conn, MySQLConnection)
    return conn


def connector_workload(conn: MySQLConnection) -> list[Any]:
    out: list[Any] = []
    cur = conn.cursor()
    cur.execute("SELECT 6*7, 'x', NULL, 1.5")
    out.append(cur.fetchall())
    cur.execute("SELECT seq, REPEAT('x', 100) FROM seq_1_to_2000")
    rows = cur.fetchall()
    out.append((len(rows), digest(rows)))
    cur.execute(BIG_VALUE)
    ((value,),) = cur.fetchall()
    out.append((len(value), hashlib.sha256(value.encode()).hexdigest()))
    cur.execute("CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)")
    prepared = conn.cursor(prepared=True)
    # A 20 MiB parameter: the client sends a command larger than a frame.
    blob = random.Random(7).randbytes(1024) * (20 * 1024)
    prepared.execute("INSERT INTO blobs VALUES (?, ?)", (1, blob))
    prepared.execute("INSERT INTO blobs VALUES (?, ?)", (2, b"small"))
    out.append(prepared.rowcount)
    prepared.execute(
        "SELECT id, LENGTH(b), SHA2(b, 256) FROM blobs WHERE id >= ? ORDER BY id", (1,)
    )
    out.append(prepared.fetchall())
    assert hashlib.sha256(blob).hexdigest() == out[-1][0][2]
    prepared.execute("SELECT b FROM blobs WHERE id = ?", (1,))
    rows = prepared.fetchall()
    # (Whatever the client makes of a 20 MiB binary-protocol row: the same on both legs.)
    out.append([(type(v).__name__, len(v), digest(v)) for row in rows for v in row])
    try:
        cur.execute("SELECT * FROM missing_table")
    except mysql.connector.Error as exc:
        out.append((exc.errno, exc.sqlstate, exc.msg))
    cur.execute("SELECT 1")
    out.append(cur.fetchall())
    return out


def test_mysql_connector_compressed_big_results_and_prepared_statements(pair: Pair) -> None:
    def run(leg: Leg) -> list[Any]:
        conn = connector(leg)
        try:
            # The client compresses on its own flag; check that it really does here.
            assert type(conn._socket._netbroker).__name__ == "NetworkBrokerCompressed"
            return connector_workload(conn)
        finally:
            conn.close()

    direct, through = pair.both(run, setup=("DROP TABLE IF EXISTS blobs",))
    assert through == direct
    assert through[2][0] == 20 * 1024 * 1024


def test_mysql_connector_compressed_result_of_many_rows_over_16_mib(pair: Pair) -> None:
    """Directly against MariaDB, mysql-connector's compressed reader fails on this result
    (struct.error: MariaDB's 16 KiB frames cut packet headers, and the client reads at most
    one more frame to complete a packet). hoopy frames at packet boundaries, so through hoopy
    it reads the same rows the direct leg gets without compression."""

    def run(leg: Leg) -> tuple[int, str]:
        conn = connector(leg, compress=leg.name != "direct")
        try:
            cur = conn.cursor()
            cur.execute(MANY_ROWS)
            rows = cur.fetchall()
            return len(rows), digest(rows)
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert through == direct and through[0] == 20000


def test_mysql_connector_c_extension_compressed(pair: Pair) -> None:
    try:
        import _mysql_connector  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"mysql-connector's C extension cannot load here: {exc}")

    def run(leg: Leg) -> list[Any]:
        conn = mysql.connector.connect(
            host=leg.host,
            port=leg.port,
            user=leg.user,
            password=leg.password,
            database=leg.database,
            use_pure=False,
            compress=True,
            ssl_disabled=True,
        )
        try:
            cur = conn.cursor()
            cur.execute(MANY_ROWS)
            rows = cur.fetchall()
            return [len(rows), digest(rows)]
        finally:
            conn.close()

    direct, through = pair.both(run)
    assert through == direct


# --- the mariadb CLI ------------------------------------------------------------------------

CLI_SCRIPT = f"""
SELECT 1, 'x', NULL, 1.5, REPEAT('long enough to compress ', 10);
CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100));
INSERT INTO t VALUES (1, 'a'), (2, REPEAT('b', 100));
SELECT * FROM t ORDER BY id;
SELECT * FROM missing_table;
SELECT SHA2(GROUP_CONCAT(v SEPARATOR ''), 256), COUNT(*) FROM ({MANY_ROWS}) AS s;
DROP TABLE t;
"""


def test_mariadb_cli_compress_prints_what_it_prints_directly(
    mariadb: MariaDBServer, hoopy_factory: Start, fresh_db: str
) -> None:
    require_binary(MARIADB_CLI)
    hoopy = hoopy_factory()
    options = ("--compress", "--force", *VERBOSE)
    direct = run_mariadb(direct_endpoint(mariadb), *options, sql=CLI_SCRIPT, database=fresh_db)
    through = run_mariadb(hoopy_endpoint(hoopy), *options, sql=CLI_SCRIPT, database=fresh_db)
    assert b"missing_table" in direct.stderr, direct.text()
    assert_same_output(through, direct)
    # The CLI compresses only when the greeting offers it: it really did through hoopy.
    status = run_mariadb(hoopy_endpoint(hoopy), "--compress", sql="status")
    assert b"Protocol:\t\tCompressed" in status.stdout, status.text()


def test_mariadb_cli_compress_over_tls_and_a_big_value(
    mariadb: MariaDBServer, hoopy_factory: Start
) -> None:
    require_binary(MARIADB_CLI)
    hoopy = hoopy_factory()
    assert hoopy.tls_cert is not None
    sql = f"SELECT SHA2({BIG_VALUE[7:-5]}, 256); {BIG_VALUE};"
    options = ("--compress", "--batch", "--skip-column-names", "--max-allowed-packet=64M")
    direct = run_mariadb(direct_endpoint(mariadb), *options, sql=sql)
    through = run_mariadb(hoopy_endpoint(hoopy), *options, f"--ssl-ca={hoopy.tls_cert}", sql=sql)
    assert direct.returncode == 0, direct.text()
    assert len(direct.stdout) > 20 * 1024 * 1024
    assert through.comparable() == direct.comparable()
    status = run_mariadb(
        hoopy_endpoint(hoopy), "--compress", f"--ssl-ca={hoopy.tls_cert}", sql="status"
    )
    assert b"Protocol:\t\tCompressed" in status.stdout, status.text()
    assert b"Cipher in use" in status.stdout, status.text()


# --- Node mysql2 ----------------------------------------------------------------------------


def run_node(leg: Leg) -> dict[str, Any]:
    require_node_mysql2()
    result = subprocess.run(
        [
            "node",
            str(NODE_DIR / "compress.js"),
            "--host",
            leg.host,
            "--port",
            str(leg.port),
            "--user",
            leg.user,
            "--password",
            leg.password,
            "--database",
            leg.database,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    assert out["ok"], out
    return out


def test_node_mysql2_compress(pair: Pair) -> None:
    direct, through = pair.both(run_node)
    # mysql2 keeps compression only when the greeting offers CLIENT_COMPRESS.
    assert direct["compressed"] and through["compressed"]
    assert through["results"] == direct["results"]


# --- the audit ------------------------------------------------------------------------------

# Fields that differ between any two sessions, compressed or not.
_VOLATILE = {"ts", "session", "prev", "hash", "duration_ms", "statement_id"}


def comparable_records(directory: Path, session: str) -> list[dict[str, Any]]:
    out = []
    for record in iter_records(directory):
        if record.get("session") != session or record["kind"] not in ("statement", "outcome"):
            continue
        out.append({k: v for k, v in record.items() if k not in _VOLATILE})
    return out


def test_audit_records_are_the_same_with_and_without_compression(
    hoopy_factory: Start, tmp_path: Path, database_factory: Any
) -> None:
    directory = tmp_path / "audit"
    hoopy: HoopyProcess = hoopy_factory(audit={"directory": str(directory)})
    host, port = hoopy.tcp["app"]
    for compress in (False, True):
        conn = connector(
            host=host,
            port=port,
            user=DEV_USER,
            password=DEV_PASSWORD,
            database=database_factory(),
            compress=compress,
        )
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        cur.execute("INSERT INTO t VALUES (1, %s), (2, 'b')", ("a" * 1000,))
        cur.execute(MANY_ROWS)
        cur.fetchall()
        prepared = conn.cursor(prepared=True)
        prepared.execute("SELECT v FROM t WHERE id = ?", (1,))
        prepared.fetchall()
        conn.close()
    hoopy.stop()
    starts = [r for r in iter_records(directory) if r["kind"] == "session_start"]
    assert len(starts) == 2
    sessions = [s["session"] for s in starts]
    plain, compressed = (comparable_records(directory, s) for s in sessions)
    assert len(plain) > 8
    assert compressed == plain
    # The session record tells which client leg compressed (CLIENT_COMPRESS, bit 5).
    plain_caps, compressed_caps = (s["client"]["capabilities"] for s in starts)
    assert not plain_caps & CLIENT_COMPRESS and compressed_caps & CLIENT_COMPRESS


# --- raw clients: zstd, and frames hoopy cannot read ----------------------------------------


class CompressingRawClient(RawClient):
    """The raw client of test_raw_protocol, speaking the compressed protocol after login
    with framing written out here (zlib or zstd from the libraries, not hoopy's codec)."""

    def __init__(self, host: str, port: int, algorithm: str, level: int = 3) -> None:
        self.algorithm = algorithm
        self.level = level
        self.compressed = False
        self.cseq = 0
        self.plain = b""
        bit = CLIENT_ZSTD_COMPRESSION_ALGORITHM if algorithm == "zstd" else CLIENT_COMPRESS
        super().__init__(host, port, DEV_USER, DEV_PASSWORD, TEST_DB, BASE_CAPS | bit)
        assert self.caps & bit  # hoopy offered it
        self.compressed = True

    def send(self, payload: bytes, seq: int = 0) -> None:
        if getattr(self, "compressed", False) is False:
            if seq == 1 and self.algorithm == "zstd":
                # The handshake response: its last byte is the zstd level (after the
                # connect attributes; build_handshake_response writes 0).
                payload = payload[:-1] + bytes((self.level,))
            super().send(payload, seq)
            return
        packet = struct.pack("<I", len(payload))[:3] + bytes((seq,)) + payload
        if seq == 0:
            self.cseq = 0  # a new command restarts the compressed sequence too
        self.send_frame(self.pack(packet), self.cseq, len(packet))

    def pack(self, data: bytes) -> bytes:
        if self.algorithm == "zstd":
            return zstandard.ZstdCompressor(level=self.level).compress(data)
        return zlib.compress(data)

    def send_frame(self, body: bytes, seq: int, size: int) -> None:
        self.sock.sendall(
            struct.pack("<I", len(body))[:3] + bytes((seq,)) + struct.pack("<I", size)[:3] + body
        )
        self.cseq = (seq + 1) & 0xFF

    def _recv(self) -> bytes:
        if not getattr(self, "compressed", False):
            return super()._recv()
        while len(self.plain) < 7 or len(self.plain) < 7 + int.from_bytes(self.plain[:3], "little"):
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.plain += data
        length = int.from_bytes(self.plain[:3], "little")
        self.cseq = (self.plain[3] + 1) & 0xFF
        size = int.from_bytes(self.plain[4:7], "little")
        body = self.plain[7 : 7 + length]
        self.plain = self.plain[7 + length :]
        if size == 0:
            return body
        if self.algorithm == "zstd":
            out = zstandard.ZstdDecompressor().decompress(body)
        else:
            out = zlib.decompress(body)
        assert len(out) == size
        return out


@pytest.fixture
def plain_hoopy(hoopy_factory: Start) -> HoopyProcess:
    proc: HoopyProcess = hoopy_factory(
        listeners=[{"name": "app", "target": "app", "tcp": "127.0.0.1:0", "tls": False}]
    )
    return proc


@pytest.mark.parametrize("algorithm", ["zlib", "zstd"])
def test_raw_compressed_client_reads_the_same_bytes_as_a_plain_one(
    plain_hoopy: HoopyProcess, algorithm: str
) -> None:
    host, port = plain_hoopy.tcp["app"]
    plain = RawClient(host, port, DEV_USER, DEV_PASSWORD, TEST_DB, BASE_CAPS)
    packed = CompressingRawClient(host, port, algorithm)
    for sql in ("SELECT 1, 'x'", MANY_ROWS, "SELECT * FROM missing_table", "DO 1"):
        payload = b"\x03" + sql.encode()
        assert count_response(packed, payload) == count_response(plain, payload)
    plain.close()
    packed.close()


def test_zstd_level_byte_does_not_reach_the_target(plain_hoopy: HoopyProcess) -> None:
    """The upstream leg is never compressed: the target sees no compression at all."""
    host, port = plain_hoopy.tcp["app"]
    client = CompressingRawClient(host, port, "zstd", level=19)
    rows = count_response(client, b"\x03SHOW SESSION STATUS LIKE 'Compression'")
    assert any(b"OFF" in p for _, p in rows), rows
    client.close()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (lambda c: c.send_frame(b"this is not zlib data", 0, 64), b"not a valid zlib stream"),
        (
            lambda c: c.send_frame(zlib.compress(b"\x01\x00\x00\x00\x0e"), 0, 9),
            b"not its declared 9",
        ),
        (
            lambda c: c.send_frame(zlib.compress(b"\x00" * 100_000), 0, 1000),
            b"more than its declared 1000",
        ),
    ],
    ids=["garbage", "short", "bomb"],
)
def test_a_frame_hoopy_cannot_read_gets_an_error_not_a_hang(
    plain_hoopy: HoopyProcess, frame: Any, reason: bytes
) -> None:
    host, port = plain_hoopy.tcp["app"]
    client = CompressingRawClient(host, port, "zlib")
    frame(client)
    _, payload = client.read()
    assert payload[0] == 0xFF and struct.unpack("<H", payload[1:3])[0] == 1157, payload
    assert payload[3:9] == b"#08S01" and reason in payload, payload
    client.sock.settimeout(5)
    assert client.sock.recv(1) == b""  # then hoopy closes the connection
    client.sock.close()
