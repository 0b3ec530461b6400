"""hoopy's upstream client against a caching_sha2_password server.

MariaDB has no caching_sha2_password, so the server here is a second hoopy, whose front door
announces caching_sha2_password: hoopy A's target is hoopy B's listener, B's target MariaDB.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway_rig import DEV_PASSWORD_ENV

Start = Any


@pytest.mark.parametrize("tls", ["off", "verify-identity"])
def test_pymysql_through_two_gateways_caching_sha2_upstream(hoopy_factory: Start, tls: str) -> None:
    inner = hoopy_factory()
    host, port = inner.tcp["app"]
    target: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": "dev",
        "password_env": DEV_PASSWORD_ENV,
        "tls": tls,
    }
    if tls != "off":
        target["tls_ca"] = inner.tls_cert
    outer = hoopy_factory(targets={"app": target})
    conn = outer.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER(), VERSION()")
        user, version = cur.fetchone()
        assert user.startswith("app@")
        assert "MariaDB" in version
    conn.close()
    # The inner gateway saw the outer one log in as the gateway user 'dev'.
    assert "dev (gateway_user, roles developers)" in inner.stderr_text()


def test_pymysql_wrong_upstream_password_is_an_operator_error(hoopy_factory: Start) -> None:
    inner = hoopy_factory()
    host, port = inner.tcp["app"]
    outer = hoopy_factory(
        targets={
            "app": {
                "host": host,
                "port": port,
                "user": "dev",
                "tls": "off",
                "password_env": "WRONG_PW",
            }
        },
        env={"WRONG_PW": "not-the-password"},
    )
    import pymysql

    with pytest.raises(pymysql.err.OperationalError) as info:
        outer.connect()
    assert info.value.args[0] == 1045
    assert "refused hoopy's login" in info.value.args[1]
