"""hoopy's own upstream login as a sans-IO exchange."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given
from hypothesis import strategies as st

from hoopy.wire.handshake import (
    CLIENT_PROTOCOL_41,
    build_auth_switch,
    caching_sha2_scramble,
    native_password_scramble,
)
from hoopy.wire.login import (
    LoggedIn,
    LoginUnsupported,
    Refused,
    Send,
    UpstreamLogin,
    Wait,
    initial_auth_response,
    load_server_public_key,
)
from hoopy.wire.messages import build_err, build_ok
from hoopy.wire.packets import ProtocolError

NONCE = b"abcdefghijklmnopqrst"
OTHER_NONCE = b"ABCDEFGHIJKLMNOPQRST"


PASSWORD = b"s3cret"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def machine(
    plugin: bytes, *, secure: bool, pinned: bytes | None = None, password: bytes = PASSWORD
) -> UpstreamLogin:
    return UpstreamLogin(
        plugin=plugin,
        nonce=NONCE,
        password=password,
        secure=secure,
        capabilities=CLIENT_PROTOCOL_41,
        server_public_key=pinned,
    )


def test_initial_response_follows_the_server_plugin() -> None:
    assert initial_auth_response(b"caching_sha2_password", b"pw", NONCE) == (
        b"caching_sha2_password",
        caching_sha2_scramble(b"pw", NONCE),
    )
    # Unknown defaults (ed25519, parsec...) get native; the server then switches.
    assert initial_auth_response(b"client_ed25519", b"pw", NONCE) == (
        b"mysql_native_password",
        native_password_scramble(b"pw", NONCE),
    )


def test_ok_and_err_end_the_exchange() -> None:
    m = machine(b"mysql_native_password", secure=False)
    step = m.receive(build_ok(status=2))
    assert isinstance(step, LoggedIn) and step.ok.status == 2
    step = m.receive(build_err(1045, "28000", "Access denied"))
    assert isinstance(step, Refused) and step.error.code == 1045


def test_auth_switch_to_native_uses_the_new_nonce() -> None:
    m = machine(b"caching_sha2_password", secure=False)
    step = m.receive(build_auth_switch(b"mysql_native_password", OTHER_NONCE + b"\x00"))
    assert step == Send(native_password_scramble(b"s3cret", OTHER_NONCE))


def test_caching_sha2_fast_path() -> None:
    m = machine(b"caching_sha2_password", secure=False)
    assert isinstance(m.receive(b"\x01\x03"), Wait)
    assert isinstance(m.receive(build_ok()), LoggedIn)


def test_caching_sha2_full_auth_over_tls_sends_cleartext() -> None:
    m = machine(b"caching_sha2_password", secure=True)
    assert m.receive(b"\x01\x04") == Send(b"s3cret\x00")


def test_full_auth_over_plain_tcp_without_a_pinned_key_is_refused_not_asked() -> None:
    # Before: hoopy asked for the server's key (0x02) and encrypted its password to whatever
    # key came back, so an impostor that greets without TLS got the password.
    m = machine(b"caching_sha2_password", secure=False)
    with pytest.raises(LoginUnsupported) as info:
        m.receive(b"\x01\x04")
    assert "server_public_key" in str(info.value) and 'tls = "required"' in str(info.value)
    assert "s3cret" not in str(info.value)


def test_a_key_the_server_sends_unasked_is_refused() -> None:
    for m in (
        machine(b"caching_sha2_password", secure=False),
        machine(b"caching_sha2_password", secure=False, pinned=pem(_KEY)),
    ):
        with pytest.raises(LoginUnsupported, match="did not ask for"):
            m.receive(b"\x01" + pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))


def test_full_auth_over_plain_tcp_encrypts_to_the_pinned_key_without_asking() -> None:
    m = machine(b"caching_sha2_password", secure=False, pinned=pem(_KEY))
    step = m.receive(b"\x01\x04")
    assert isinstance(step, Send) and step.payload != b"\x02"
    plain = _KEY.decrypt(step.payload, _OAEP)
    assert bytes(b ^ NONCE[i % 20] for i, b in enumerate(plain)) == b"s3cret\x00"
    assert isinstance(m.receive(build_ok()), LoggedIn)


def test_tls_wins_over_the_pinned_key() -> None:
    m = machine(b"caching_sha2_password", secure=True, pinned=pem(_KEY))
    assert m.receive(b"\x01\x04") == Send(b"s3cret\x00")


def test_unusable_pinned_keys_are_explained() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for pinned, reason in ((b"not a key", "not a PEM public key"), (ec_pem, "not an RSA")):
        with pytest.raises(LoginUnsupported, match=reason):
            machine(b"caching_sha2_password", secure=False, pinned=pinned).receive(b"\x01\x04")
        with pytest.raises(ValueError, match=reason):
            load_server_public_key(pinned)
    # OAEP-SHA1 with a 2048-bit key carries at most 214 bytes (RFC 8017 section 7.1.1).
    m = machine(b"caching_sha2_password", secure=False, pinned=pem(_KEY), password=b"p" * 214)
    with pytest.raises(LoginUnsupported, match="too long") as info:
        m.receive(b"\x01\x04")
    assert "ppp" not in str(info.value)
    m = machine(b"caching_sha2_password", secure=False, pinned=pem(_KEY), password=b"p" * 213)
    assert isinstance(m.receive(b"\x01\x04"), Send)


@given(st.binary(max_size=600))
def test_no_server_answer_gets_the_password_over_plain_tcp(payload: bytes) -> None:
    # Whatever a server without TLS sends, hoopy answers with nothing derived from the
    # password except the scrambles the auth switches ask for.
    m = machine(b"caching_sha2_password", secure=False)
    try:
        step = m.receive(payload)
    except (LoginUnsupported, ProtocolError):
        return
    if isinstance(step, Send):
        assert payload[:1] == b"\xfe"  # an auth switch to a scramble-based plugin
        assert PASSWORD not in step.payload


def test_clear_password_only_over_a_secure_leg() -> None:
    with pytest.raises(LoginUnsupported, match="tls"):
        machine(b"mysql_native_password", secure=False).receive(
            build_auth_switch(b"mysql_clear_password", b"")
        )
    step = machine(b"mysql_native_password", secure=True).receive(
        build_auth_switch(b"mysql_clear_password", b"")
    )
    assert step == Send(b"s3cret\x00")


def test_unknown_plugin_switch_is_explained() -> None:
    with pytest.raises(LoginUnsupported, match="client_ed25519"):
        machine(b"mysql_native_password", secure=True).receive(
            build_auth_switch(b"client_ed25519", NONCE)
        )
