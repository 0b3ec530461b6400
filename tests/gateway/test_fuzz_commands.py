"""Hostile bytes after login: whatever a client sends, its session ends or answers, and the
gateway keeps serving everyone else."""

from __future__ import annotations

import random
import struct
from typing import Any

from tests.gateway.test_raw_protocol import BASE_CAPS, RawClient
from tests.gateway_rig import DEV_PASSWORD, TEST_DB

Start = Any

INTERESTING_FIRST_BYTES = [
    0x00,
    0x01,
    0x02,
    0x03,
    0x04,
    0x09,
    0x0A,
    0x0C,
    0x0E,
    0x11,
    0x12,
    0x16,
    0x17,
    0x18,
    0x19,
    0x1A,
    0x1B,
    0x1C,
    0x1F,
    0xFA,
    0xFE,
    0xFF,
]


def hostile_payloads(rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        first = rng.choice(INTERESTING_FIRST_BYTES)
        body = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 4, 9, 40, 300])))
        out.append(bytes((first,)) + body)
    return out


def test_random_commands_never_take_the_gateway_down(hoopy_factory: Start) -> None:
    hoopy = hoopy_factory(
        listeners=[{"name": "app", "target": "app", "tcp": "127.0.0.1:0", "tls": False}],
        gateway={"handshake_timeout": 5.0},
    )
    host, port = hoopy.tcp["app"]
    rng = random.Random(20261126)  # fixed: a failure must be reproducible
    bystander = RawClient(host, port, "dev", DEV_PASSWORD, TEST_DB, BASE_CAPS)
    for payload in hostile_payloads(rng, 60):
        client = RawClient(host, port, "dev", DEV_PASSWORD, TEST_DB, BASE_CAPS)
        client.sock.settimeout(5)
        try:
            client.send(payload)
            # Either some response arrives or the session is closed; never a hang past the
            # socket timeout for commands that expect an answer.
            client.sock.recv(65536)
        except TimeoutError:
            # Commands the server does not answer (COM_STMT_CLOSE, SEND_LONG_DATA) wait
            # silently, as they would directly.
            assert payload[0] in (0x18, 0x19), payload[:8].hex()
        except ConnectionError:
            pass
        finally:
            client.sock.close()
        # The gateway still serves: a fresh command on an old session answers.
        bystander.send(b"\x03SELECT 1")
        seq, first = bystander.read()
        assert (seq, first) == (1, b"\x01"), payload[:8].hex()
        while bystander.read()[1][0] not in (0xFE, 0x00):
            pass
        while True:  # rest of the result: row(s) and the terminator
            _, p = bystander.read()
            if p[0] == 0xFE and len(p) < 9:
                break
    bystander.close()
    assert hoopy.running


def test_oversized_length_headers_are_refused_without_allocating(hoopy_factory: Start) -> None:
    hoopy = hoopy_factory(
        listeners=[{"name": "app", "target": "app", "tcp": "127.0.0.1:0", "tls": False}],
        gateway={"max_statement_bytes": 1024},
    )
    host, port = hoopy.tcp["app"]
    client = RawClient(host, port, "dev", DEV_PASSWORD, TEST_DB, BASE_CAPS)
    # Claims a 16 MiB - 1 command, then 2 KiB of it: over the limit before it is complete.
    client.sock.sendall(struct.pack("<I", 0xFFFFFF)[:3] + b"\x00" + b"\x03" + b"x" * 2048)
    _, err = client.read()
    assert err[0] == 0xFF and struct.unpack("<H", err[1:3])[0] == 1153
    client.sock.close()
    fresh = RawClient(host, port, "dev", DEV_PASSWORD, TEST_DB, BASE_CAPS)
    fresh.close()
