"""hoopy's own upstream login as a sans-IO exchange."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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
)
from hoopy.wire.messages import build_err, build_ok

NONCE = b"abcdefghijklmnopqrst"
OTHER_NONCE = b"ABCDEFGHIJKLMNOPQRST"


def machine(plugin: bytes, *, secure: bool) -> UpstreamLogin:
    return UpstreamLogin(
        plugin=plugin,
        nonce=NONCE,
        password=b"s3cret",
        secure=secure,
        capabilities=CLIENT_PROTOCOL_41,
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


def test_caching_sha2_full_auth_over_plain_tcp_uses_the_rsa_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    m = machine(b"caching_sha2_password", secure=False)
    assert m.receive(b"\x01\x04") == Send(b"\x02")  # request the public key
    step = m.receive(b"\x01" + pem)
    assert isinstance(step, Send)
    plain = key.decrypt(
        step.payload,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )
    assert bytes(b ^ NONCE[i % 20] for i, b in enumerate(plain)) == b"s3cret\x00"


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
