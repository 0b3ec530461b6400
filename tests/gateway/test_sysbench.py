"""sysbench through hoopy: real concurrent OLTP load, server-side prepared statements on.

sysbench logs in as the gateway user ``dev`` over plain TCP (``--mysql-ssl=off``); hoopy logs
into MariaDB as ``app``. The counters sysbench reports are checked against the shape of each
workload, and MariaDB's own ``Com_stmt_*`` counters show whether the statements really ran as
server-side prepared statements through hoopy.
"""

from __future__ import annotations

import pytest

from tests.conftest import HoopyFactory
from tests.gateway.clients import (
    SYSBENCH,
    SysbenchReport,
    hoopy_endpoint,
    parse_sysbench,
    require_binary,
    run_sysbench,
)
from tests.gateway_rig import HoopyProcess
from tests.rig import MariaDBServer

N_TABLES, TABLE_SIZE = 4, 10000
TABLES = (f"--tables={N_TABLES}", f"--table-size={TABLE_SIZE}")
# Only InnoDB deadlocks / lock wait timeouts may be retried: 4 threads writing the same rows
# hit a few of those connected directly too (MariaDB's own verdict, not a transport error).
# 4 x 10,000 rows keeps them rare (2 x 1,000 rows made the bound below flaky).
# Any other error (lost connection, unknown statement handler, bad packet) is FATAL and
# fails the run.
RETRYABLE = "--mysql-ignore-errors=1213,1205"
RUN = ("--threads=4", "--time=3", "--report-interval=0", RETRYABLE)


@pytest.fixture(autouse=True)
def _sysbench_installed() -> None:
    require_binary(SYSBENCH)


def _global_status(mariadb: MariaDBServer) -> dict[str, int]:
    rows = mariadb.admin_sql(
        "SHOW GLOBAL STATUS WHERE Variable_name IN "
        "('Com_stmt_prepare', 'Com_stmt_execute', 'Com_stmt_close', 'Aborted_clients')"
    )
    return {name: int(value) for name, value in rows}


def _table_rows(mariadb: MariaDBServer, db: str) -> list[int]:
    return [
        int(mariadb.admin_sql(f"SELECT COUNT(*) FROM `{db}`.sbtest{i}")[0][0])
        for i in range(1, N_TABLES + 1)
    ]


def _run(
    mariadb: MariaDBServer, hoopy: HoopyProcess, db: str, test: str, *options: str
) -> tuple[SysbenchReport, dict[str, int]]:
    endpoint = hoopy_endpoint(hoopy)
    prepared = run_sysbench(test, "prepare", endpoint, db, *TABLES)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert _table_rows(mariadb, db) == [TABLE_SIZE] * N_TABLES

    before = _global_status(mariadb)
    ran = run_sysbench(test, "run", endpoint, db, *TABLES, *RUN, *options)
    after = _global_status(mariadb)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "FATAL" not in ran.stdout + ran.stderr, ran.stdout + ran.stderr
    report = parse_sysbench(ran.stdout)
    # "0 errors": nothing failed but the odd deadlock retry, which happens directly too.
    assert report.ignored_errors <= max(5, report.transactions // 100), report.output
    assert report.reconnects == 0, report.output
    assert report.events == report.transactions
    assert report.queries == report.total == report.read + report.write + report.other

    cleaned = run_sysbench(test, "cleanup", endpoint, db, *TABLES)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not mariadb.admin_sql(f"SHOW TABLES FROM `{db}`")
    delta = {name: after[name] - before[name] for name in after}
    return report, delta


def test_oltp_read_write_server_side_prepared(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    hoopy = hoopy_factory()
    report, delta = _run(mariadb, hoopy, fresh_db, "oltp_read_write", "--db-ps-mode=auto")
    # A sane rate for 4 threads on loopback, even on a slow machine.
    assert report.transactions >= 100, report.output
    # oltp_read_write: 10 point selects + 4 range selects, 2 updates + delete + insert,
    # BEGIN + COMMIT per transaction (a transaction in flight at the deadline may be
    # counted partly, per thread).
    txn = report.transactions
    assert 14 * txn <= report.read <= 14 * (txn + 4), report.output
    assert 4 * txn <= report.write <= 4 * (txn + 4), report.output
    assert 2 * txn <= report.other <= 2 * (txn + 4), report.output
    # Every read and write ran as a server-side prepared statement (binary protocol):
    # MariaDB executed at least that many COM_STMT_EXECUTEs, from a handful of PREPAREs
    # (per thread: 9 statement kinds per table, plus BEGIN and COMMIT).
    assert delta["Com_stmt_execute"] >= report.read + report.write, (delta, report.output)
    assert 0 < delta["Com_stmt_prepare"] <= 4 * (9 * N_TABLES + 2), delta
    assert delta["Aborted_clients"] == 0, delta


def test_oltp_read_write_text_protocol(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    hoopy = hoopy_factory()
    report, delta = _run(mariadb, hoopy, fresh_db, "oltp_read_write", "--db-ps-mode=disable")
    assert report.transactions >= 100, report.output
    txn = report.transactions
    assert 14 * txn <= report.read <= 14 * (txn + 4), report.output
    assert 4 * txn <= report.write <= 4 * (txn + 4), report.output
    # No prepared statements at all: plain COM_QUERY.
    assert delta["Com_stmt_execute"] == 0, delta
    assert delta["Com_stmt_prepare"] == 0, delta
    assert delta["Aborted_clients"] == 0, delta


def test_oltp_point_select(
    mariadb: MariaDBServer, hoopy_factory: HoopyFactory, fresh_db: str
) -> None:
    hoopy = hoopy_factory()
    report, delta = _run(mariadb, hoopy, fresh_db, "oltp_point_select", "--db-ps-mode=auto")
    assert report.transactions >= 500, report.output
    # One point select per transaction, nothing else.
    assert report.read == report.transactions == report.queries, report.output
    assert report.write == report.other == 0, report.output
    assert delta["Com_stmt_execute"] >= report.read, (delta, report.output)
    assert delta["Aborted_clients"] == 0, delta
