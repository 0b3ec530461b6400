"""Secrets hoopy writes are created new, with their mode from the start: a file left at a
temporary name (perhaps world-readable) never lends its mode to a key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hoopy.gateway.tls import GENERATED_CERT, GENERATED_KEY, ensure_server_certificate
from hoopy.identity.dev_tokens import KEY_FILE, create_signing_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_generated_tls_key_is_private_despite_a_leftover_temporary_file(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    for leftover in ("hoopy-key.tmp", "hoopy-cert.tmp"):  # the names hoopy used to use
        (state / leftover).write_bytes(b"left by someone else\n")
        (state / leftover).chmod(0o644)
    generated = ensure_server_certificate(state)
    assert generated.generated and generated.key == state / GENERATED_KEY
    assert mode(state / GENERATED_KEY) == 0o600
    assert (state / GENERATED_CERT).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert (state / "hoopy-key.tmp").read_bytes() == b"left by someone else\n"  # untouched
    assert not list(state.glob(".*.tmp")), "no temporary file of hoopy's own is left"


@pytest.mark.parametrize("force", [False, True])
def test_the_dev_signing_key_is_created_private(tmp_path: Path, force: bool) -> None:
    if force:
        (tmp_path / KEY_FILE).write_text("{}")
        (tmp_path / KEY_FILE).chmod(0o644)
    key, _ = create_signing_key(tmp_path, force=force)
    assert mode(key) == 0o600
