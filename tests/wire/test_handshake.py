"""Connection-phase packets: round trips, real-world samples and hostile input."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymysql import _auth as pymysql_auth

from hoopy.wire.handshake import (
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    ChangeUser,
    Greeting,
    HandshakeResponse,
    SSLRequest,
    build_change_user,
    build_greeting,
    build_handshake_response,
    build_ssl_request,
    caching_sha2_hash,
    caching_sha2_scramble,
    native_password_hash,
    native_password_scramble,
    parse_auth_switch,
    parse_change_user,
    parse_greeting,
    parse_handshake_response,
    verify_caching_sha2_scramble,
    verify_native_scramble,
)
from hoopy.wire.packets import ProtocolError

# A MariaDB 10.11 greeting as captured on the wire (payload only).
MARIADB_GREETING = (
    b"\n5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x06\x00\x00\x00"
    b"Xw:5T|D\\\x00\xfe\xff-\x02\x00\xff\x81\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00"
    b"L9cH<1,u1tO?\x00mysql_native_password\x00"
)

nonces = st.binary(min_size=20, max_size=20).filter(lambda b: b"\x00" not in b)


def test_parse_real_mariadb_greeting() -> None:
    g = parse_greeting(MARIADB_GREETING)
    assert g.server_version == b"5.5.5-10.11.19-MariaDB-0+deb12u1"
    assert g.connection_id == 6
    assert g.auth_data == b"Xw:5T|D\\L9cH<1,u1tO?"
    assert g.auth_plugin == b"mysql_native_password"
    # MariaDB clears CLIENT_LONG_PASSWORD and puts extended capabilities in the filler.
    assert g.mariadb_capabilities == 0x1D
    assert build_greeting(g) == MARIADB_GREETING


@given(
    version=st.binary(max_size=60).filter(lambda b: b"\x00" not in b),
    conn_id=st.integers(0, 2**32 - 1),
    nonce=nonces,
    caps=st.integers(0, 2**32 - 1),
    charset=st.integers(0, 255),
    status=st.integers(0, 0xFFFF),
    plugin=st.sampled_from([b"mysql_native_password", b"caching_sha2_password", b"x"]),
    mariadb=st.integers(0, 2**32 - 1),
)
def test_greeting_round_trip(
    version: bytes,
    conn_id: int,
    nonce: bytes,
    caps: int,
    charset: int,
    status: int,
    plugin: bytes,
    mariadb: int,
) -> None:
    caps |= CLIENT_PLUGIN_AUTH | CLIENT_SECURE_CONNECTION | CLIENT_PROTOCOL_41
    g = Greeting(
        version,
        conn_id,
        nonce,
        caps,
        charset,
        status,
        plugin,
        mariadb_capabilities=mariadb if not caps & 1 else 0,
    )
    assert parse_greeting(build_greeting(g)) == g


attr_text = st.binary(max_size=40)


@given(
    caps=st.integers(0, 2**32 - 1),
    user=st.binary(max_size=40).filter(lambda b: b"\x00" not in b),
    auth=st.binary(max_size=300),
    db=st.one_of(st.none(), st.binary(max_size=30).filter(lambda b: b"\x00" not in b)),
    plugin=st.sampled_from([b"mysql_native_password", b"caching_sha2_password"]),
    attrs=st.lists(st.tuples(attr_text, attr_text), max_size=5),
)
def test_handshake_response_round_trip(
    caps: int,
    user: bytes,
    auth: bytes,
    db: bytes | None,
    plugin: bytes,
    attrs: list[tuple[bytes, bytes]],
) -> None:
    caps |= CLIENT_PROTOCOL_41 | CLIENT_PLUGIN_AUTH | CLIENT_SECURE_CONNECTION
    caps |= CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_CONNECT_ATTRS
    caps &= ~(1 << 26)  # no zstd level byte
    if db is not None:
        caps |= CLIENT_CONNECT_WITH_DB
    else:
        caps &= ~CLIENT_CONNECT_WITH_DB
    resp = HandshakeResponse(
        capabilities=caps,
        max_packet_size=1 << 24,
        charset=45,
        username=user,
        auth_response=auth,
        database=db,
        auth_plugin=plugin,
        connect_attrs=tuple(attrs),
    )
    assert parse_handshake_response(build_handshake_response(resp)) == resp


def test_ssl_request_is_recognised() -> None:
    req = SSLRequest(CLIENT_PROTOCOL_41 | CLIENT_SSL, 1 << 24, 33)
    assert parse_handshake_response(build_ssl_request(req)) == req


def _response_prefix(caps: int) -> bytes:
    return caps.to_bytes(4, "little") + (1 << 24).to_bytes(4, "little") + b"\x21" + bytes(23)


def test_user_name_without_nul_is_refused_quickly() -> None:
    # mysql-mimic's compiled parser spins forever on this packet (DESIGN.md).
    caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
    hostile = _response_prefix(caps) + b"A" * 100_000
    started = time.monotonic()
    with pytest.raises(ProtocolError, match="NUL"):
        parse_handshake_response(hostile)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x02",
        (1 << 9).to_bytes(4, "little") + b"\x00",  # truncated fixed part
        _response_prefix((1 << 9) | (1 << 15)) + b"u\x00\x50short",  # auth length overruns
        _response_prefix((1 << 9) | (1 << 21)) + b"u\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xff",
        _response_prefix((1 << 9) | (1 << 15) | (1 << 20)) + b"u\x00\x00\x05ab",  # attrs overrun
        _response_prefix(0) + b"u\x00",  # no CLIENT_PROTOCOL_41
    ],
)
def test_malformed_handshake_responses_raise_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_handshake_response(payload)


@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_raise_protocol_error(payload: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_handshake_response(payload)
    with contextlib.suppress(ProtocolError):
        parse_greeting(payload)


@given(st.binary(min_size=1, max_size=40), nonces)
def test_scrambles_match_pymysql_and_verify(password: bytes, nonce: bytes) -> None:
    native = native_password_scramble(password, nonce)
    assert native == pymysql_auth.scramble_native_password(password, nonce)
    assert verify_native_scramble(native_password_hash(password), native, nonce)
    assert not verify_native_scramble(native_password_hash(password + b"x"), native, nonce)
    sha2 = caching_sha2_scramble(password, nonce)
    assert sha2 == pymysql_auth.scramble_caching_sha2(password, nonce)
    assert verify_caching_sha2_scramble(caching_sha2_hash(password), sha2, nonce)
    assert not verify_caching_sha2_scramble(caching_sha2_hash(b"other"), sha2, nonce)


def test_empty_scramble_never_verifies() -> None:
    assert not verify_native_scramble(native_password_hash(b"pw"), b"", b"n" * 20)
    assert not verify_caching_sha2_scramble(caching_sha2_hash(b"pw"), b"", b"n" * 20)


@given(
    user=st.binary(max_size=30).filter(lambda b: b"\x00" not in b),
    auth=st.binary(max_size=255),
    db=st.binary(max_size=30).filter(lambda b: b"\x00" not in b),
    attrs=st.lists(st.tuples(attr_text, attr_text), max_size=3),
)
def test_change_user_round_trip_with_long_auth_data(
    user: bytes, auth: bytes, db: bytes, attrs: list[tuple[bytes, bytes]]
) -> None:
    caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS
    cu = ChangeUser(user, auth, db, 45, b"mysql_native_password", tuple(attrs))
    assert parse_change_user(build_change_user(cu, caps), caps) == cu


def test_auth_switch_parsing() -> None:
    switch = parse_auth_switch(b"\xfemysql_native_password\x00abcdefghijklmnopqrst\x00")
    assert switch.plugin == b"mysql_native_password"
    assert switch.data == b"abcdefghijklmnopqrst"
    assert parse_auth_switch(b"\xfe").plugin == b"mysql_old_password"
