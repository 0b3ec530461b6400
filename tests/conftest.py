"""Shared fixtures: one real MariaDB per session, hoopy as a subprocess per test."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.gateway_rig import (
    ALICE_PASSWORD,
    ALICE_USER,
    APP_PASSWORD,
    APP_USER,
    TEST_DB,
    HoopyProcess,
    deep_merge,
    default_config,
)
from tests.rig import MariaDBServer

# The suite runs in parallel processes on machines as small as 2 cores (scripts/test), next to
# MariaDB servers and gateways: a property test's wall time says nothing about the code, so
# no per-example deadline and no "input generation is slow" check (the inputs' size is still
# checked). Speed is measured in bench/, not here.
settings.register_profile("hoopy", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("hoopy")

_USER_HOSTS = ("%", "localhost")  # localhost: unix-socket logins


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """A real MariaDB (TLS on, ``ca_path`` set) with ``hoopy_test``, ``app`` and ``alice``."""
    server = MariaDBServer(tls=True)
    try:
        server.start()
        server.admin_sql(f"CREATE DATABASE {TEST_DB}")
        server.create_user(
            APP_USER,
            APP_PASSWORD,
            hosts=_USER_HOSTS,
            grants=[f"ALL ON {TEST_DB}.*", "PROCESS ON *.*"],
        )
        server.create_user(
            ALICE_USER, ALICE_PASSWORD, hosts=_USER_HOSTS, grants=[f"ALL ON {TEST_DB}.*"]
        )
        yield server
    finally:
        server.close()


@pytest.fixture
def database_factory(mariadb: MariaDBServer) -> Iterator[Callable[[], str]]:
    """``make() -> name``: new empty databases ``hoopy_t_<hex>`` on which app and alice have
    ALL, dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"hoopy_t_{secrets.token_hex(4)}"
        grants: list[str | tuple[str, Any]] = [f"CREATE DATABASE `{name}`"]
        for user in (APP_USER, ALICE_USER):
            for host in _USER_HOSTS:
                grants.append((f"GRANT ALL ON `{name}`.* TO %s@%s", (user, host)))
        mariadb.admin_sql(*grants)
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            cleanup: list[str | tuple[str, Any]] = [f"DROP DATABASE IF EXISTS `{name}`"]
            for user in (APP_USER, ALICE_USER):
                for host in _USER_HOSTS:
                    cleanup.append((f"REVOKE ALL ON `{name}`.* FROM %s@%s", (user, host)))
            mariadb.admin_sql(*cleanup)


@pytest.fixture
def fresh_db(database_factory: Callable[[], str]) -> str:
    """A new empty database on which app and alice have ALL (see ``database_factory``).

    Connections through hoopy land in ``hoopy_test`` by default; use ``USE <fresh_db>``,
    ``database=`` or fully qualified names.
    """
    return database_factory()


HoopyFactory = Callable[..., HoopyProcess]


@pytest.fixture
def hoopy_factory(mariadb: MariaDBServer) -> Iterator[HoopyFactory]:
    """``start(login="gateway_users", *, env=None, **overrides) -> HoopyProcess``.

    ``overrides`` are deep-merged into ``default_config()`` per top-level
    section (dicts merge, lists replace, ``None`` deletes a key), e.g.::

        hoopy = start(targets={"app": {"tls": "verify-ca", "tls_ca": mariadb.ca_path}})
        hoopy = start("passthrough")
        conn = hoopy.connect()                      # dev / dev-pw over TCP
        conn = hoopy.connect("alice", "alice-pw")   # passthrough

    Every process started is stopped at teardown; its stderr is printed
    then, so pytest shows it for failing tests.
    """
    started: list[HoopyProcess] = []

    def start(
        login: str = "gateway_users", *, env: dict[str, str] | None = None, **overrides: Any
    ) -> HoopyProcess:
        workdir = Path(tempfile.mkdtemp(prefix="hoopy-gw-"))
        config = deep_merge(default_config(mariadb, workdir, login=login), overrides)
        proc = HoopyProcess(config, workdir=workdir, env=env)
        started.append(proc)
        return proc.start()

    try:
        yield start
    finally:
        for proc in started:
            proc.close()
            text = proc.stderr_text()
            if text:
                print(f"--- hoopy pid {proc.pid} stderr (exit {proc.returncode}) ---\n{text}")
