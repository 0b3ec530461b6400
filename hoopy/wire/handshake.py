"""Connection-phase packets: the server greeting, the client's handshake response, SSLRequest,
COM_CHANGE_USER, auth switch and auth more-data, and the password scrambles.

MySQL protocol docs, "Connection Phase" and "Protocol::HandshakeV10" /
"Protocol::HandshakeResponse41". hoopy parses the client's packets itself rather than with
mysql-mimic's compiled parser, which loops forever on a user name without a NUL terminator
(DESIGN.md): here every read is bounds-checked and a short or malformed packet raises
``ProtocolError``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from hoopy.wire.packets import ProtocolError, Reader, lenenc_int, lenenc_str

# Capability flags ("Capabilities Flags" in the protocol docs; mysql_com.h).
CLIENT_LONG_PASSWORD = 1 << 0  # MariaDB reads a clear bit as "server is MariaDB" (CLIENT_MYSQL)
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_NO_SCHEMA = 1 << 4
CLIENT_COMPRESS = 1 << 5
CLIENT_ODBC = 1 << 6
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_IGNORE_SPACE = 1 << 8
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_INTERACTIVE = 1 << 10
CLIENT_SSL = 1 << 11
CLIENT_IGNORE_SIGPIPE = 1 << 12
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_RESERVED = 1 << 14
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24
CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25
CLIENT_ZSTD_COMPRESSION_ALGORITHM = 1 << 26
CLIENT_QUERY_ATTRIBUTES = 1 << 27
MULTI_FACTOR_AUTHENTICATION = 1 << 28
CLIENT_CAPABILITY_EXTENSION = 1 << 29
CLIENT_SSL_VERIFY_SERVER_CERT = 1 << 30
CLIENT_REMEMBER_OPTIONS = 1 << 31

# What hoopy can relay faithfully. Left out on purpose: optional result-set metadata (changes
# the shape of every result set), multi-factor authentication, and the client-side-only bits
# 29-31. Compression (both algorithms) is not relayed either: hoopy offers it on the client
# leg itself and never upstream (wire/compress.py, COMPRESSION_CAPABILITIES).
RELAYABLE_CAPABILITIES = (
    CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_NO_SCHEMA
    | CLIENT_ODBC
    | CLIENT_LOCAL_FILES
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_RESERVED
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF
    | CLIENT_QUERY_ATTRIBUTES
)

# MariaDB's extended capabilities (the high 32 bits, sent in the greeting's and the handshake
# response's filler). Only extended metadata is relayed: it adds type details (json, inet6,
# uuid, geometry subtypes) to column definitions, which hoopy passes through unread. Progress
# reports (packets in the middle of a response), bulk execution and metadata caching change
# the shape of responses and are never offered.
MARIADB_CLIENT_PROGRESS = 1 << 0
MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 2
MARIADB_CLIENT_EXTENDED_METADATA = 1 << 3
MARIADB_CLIENT_CACHE_METADATA = 1 << 4
RELAYABLE_MARIADB_CAPABILITIES = MARIADB_CLIENT_EXTENDED_METADATA

# Capabilities hoopy needs from every client: 4.1 protocol, plugin auth and 20-byte scrambles.
# Every client library of the last fifteen years sends them.
REQUIRED_CLIENT_CAPABILITIES = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH

# Bits that describe one leg's transport or login, set by hoopy per leg rather than copied
# from the client: everything else the client chose is passed on unchanged so both legs
# speak exactly the same protocol dialect (DESIGN.md, fidelity rule 2).
LEG_CAPABILITIES = (
    CLIENT_SSL
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_SECURE_CONNECTION
    | CLIENT_CONNECT_ATTRS
    | CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
)

NATIVE_PASSWORD = b"mysql_native_password"
CACHING_SHA2_PASSWORD = b"caching_sha2_password"
CLEAR_PASSWORD = b"mysql_clear_password"

SCRAMBLE_LENGTH = 20
# "Protocol::HandshakeResponse41": the fixed part before the user name; an SSLRequest is
# exactly this long.
HANDSHAKE_RESPONSE_FIXED = 32

# Connection-phase headers ("Authentication Method Switch", "AuthMoreData").
AUTH_SWITCH_HEADER = 0xFE
AUTH_MORE_DATA_HEADER = 0x01
# caching_sha2_password's AuthMoreData status bytes.
FAST_AUTH_SUCCESS = 0x03
PERFORM_FULL_AUTHENTICATION = 0x04
REQUEST_PUBLIC_KEY = 0x02


@dataclass(frozen=True, slots=True)
class Greeting:
    """Protocol::HandshakeV10, the server's first packet."""

    server_version: bytes
    connection_id: int
    auth_data: bytes
    capabilities: int
    charset: int
    status: int
    auth_plugin: bytes
    # MariaDB puts its extended capabilities in the last four reserved bytes when it clears
    # CLIENT_LONG_PASSWORD ("MariaDB protocol differences").
    mariadb_capabilities: int = 0
    protocol_version: int = 10


def parse_greeting(payload: bytes) -> Greeting:
    r = Reader(payload)
    protocol_version = r.uint(1)
    if protocol_version != 10:
        raise ProtocolError(f"unsupported server protocol version {protocol_version}")
    server_version = r.null_str()
    connection_id = r.uint(4)
    auth1 = r.fixed(8)
    r.uint(1)  # filler
    capabilities = r.uint(2)
    charset = status = auth_len = 0
    mariadb_caps = 0
    auth2 = b""
    plugin = b""
    if r.remaining():
        charset = r.uint(1)
        status = r.uint(2)
        capabilities |= r.uint(2) << 16
        auth_len = r.uint(1)
        reserved = r.fixed(10)
        if not capabilities & CLIENT_LONG_PASSWORD:
            mariadb_caps = int.from_bytes(reserved[6:], "little")
        if capabilities & CLIENT_SECURE_CONNECTION:
            auth2 = r.fixed(min(max(13, auth_len - 8), r.remaining()))
        if capabilities & CLIENT_PLUGIN_AUTH:
            # MySQL 5.5.7-5.5.9 sent the plugin name without its NUL.
            rest = r.rest()
            plugin = rest.split(b"\x00", 1)[0]
    auth_data = auth1 + auth2.rstrip(b"\x00")[:12] if auth2 else auth1
    return Greeting(
        server_version=server_version,
        connection_id=connection_id,
        auth_data=auth_data,
        capabilities=capabilities,
        charset=charset,
        status=status,
        auth_plugin=plugin,
        mariadb_capabilities=mariadb_caps,
        protocol_version=protocol_version,
    )


def build_greeting(g: Greeting) -> bytes:
    auth2 = g.auth_data[8:] + b"\x00"
    reserved = bytes(6) + g.mariadb_capabilities.to_bytes(4, "little")
    parts = [
        bytes((g.protocol_version,)),
        g.server_version + b"\x00",
        g.connection_id.to_bytes(4, "little"),
        g.auth_data[:8].ljust(8, b"\x00"),
        b"\x00",
        (g.capabilities & 0xFFFF).to_bytes(2, "little"),
        bytes((g.charset,)),
        g.status.to_bytes(2, "little"),
        ((g.capabilities >> 16) & 0xFFFF).to_bytes(2, "little"),
        bytes((len(g.auth_data) + 1 if g.capabilities & CLIENT_PLUGIN_AUTH else 0,)),
        reserved,
        auth2.ljust(13, b"\x00"),
    ]
    if g.capabilities & CLIENT_PLUGIN_AUTH:
        parts.append(g.auth_plugin + b"\x00")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class SSLRequest:
    capabilities: int
    max_packet_size: int
    charset: int
    mariadb_capabilities: int = 0


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """Protocol::HandshakeResponse41. ``connect_attrs`` keeps raw pairs, in order."""

    capabilities: int
    max_packet_size: int
    charset: int
    username: bytes
    auth_response: bytes
    database: bytes | None = None
    auth_plugin: bytes | None = None
    connect_attrs: tuple[tuple[bytes, bytes], ...] = field(default_factory=tuple)
    zstd_level: int | None = None
    mariadb_capabilities: int = 0

    def attrs_dict(self) -> dict[str, str]:
        return {
            k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
            for k, v in self.connect_attrs
        }


def parse_handshake_response(payload: bytes) -> HandshakeResponse | SSLRequest:
    r = Reader(payload)
    capabilities = r.uint(4)
    if not capabilities & CLIENT_PROTOCOL_41:
        raise ProtocolError("client does not speak the 4.1 protocol (CLIENT_PROTOCOL_41)")
    max_packet_size = r.uint(4)
    charset = r.uint(1)
    filler = r.fixed(23)
    mariadb_caps = int.from_bytes(filler[19:], "little")
    if not r.remaining():
        return SSLRequest(capabilities, max_packet_size, charset, mariadb_caps)
    username = r.null_str()
    if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth_response = r.lenenc_str()
    elif capabilities & CLIENT_SECURE_CONNECTION:
        auth_response = r.fixed(r.uint(1))
    else:
        auth_response = r.null_str()
    database = None
    if capabilities & CLIENT_CONNECT_WITH_DB and r.remaining():
        database = r.null_str()
    plugin = None
    if capabilities & CLIENT_PLUGIN_AUTH and r.remaining():
        plugin = r.null_str()
    attrs: tuple[tuple[bytes, bytes], ...] = ()
    if capabilities & CLIENT_CONNECT_ATTRS and r.remaining():
        attrs = _read_attrs(r)
    zstd = None
    if capabilities & CLIENT_ZSTD_COMPRESSION_ALGORITHM and r.remaining():
        zstd = r.uint(1)
    return HandshakeResponse(
        capabilities=capabilities,
        max_packet_size=max_packet_size,
        charset=charset,
        username=username,
        auth_response=auth_response,
        database=database,
        auth_plugin=plugin,
        connect_attrs=attrs,
        zstd_level=zstd,
        mariadb_capabilities=mariadb_caps,
    )


def _read_attrs(r: Reader) -> tuple[tuple[bytes, bytes], ...]:
    total = r.lenenc_int()
    end = r.pos + total
    if end > len(r.data):
        raise ProtocolError("connection attributes overrun the packet")
    sub = Reader(r.data[:end], r.pos)
    pairs = []
    while sub.remaining():
        pairs.append((sub.lenenc_str(), sub.lenenc_str()))
    r.pos = end
    return tuple(pairs)


def _fixed_prefix(capabilities: int, max_packet_size: int, charset: int, mariadb: int) -> bytes:
    return (
        capabilities.to_bytes(4, "little")
        + max_packet_size.to_bytes(4, "little")
        + bytes((charset,))
        + bytes(19)
        + mariadb.to_bytes(4, "little")
    )


def build_ssl_request(req: SSLRequest) -> bytes:
    return _fixed_prefix(
        req.capabilities, req.max_packet_size, req.charset, req.mariadb_capabilities
    )


def build_handshake_response(resp: HandshakeResponse) -> bytes:
    caps = resp.capabilities
    parts = [
        _fixed_prefix(caps, resp.max_packet_size, resp.charset, resp.mariadb_capabilities),
        resp.username + b"\x00",
    ]
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        parts.append(lenenc_str(resp.auth_response))
    elif caps & CLIENT_SECURE_CONNECTION:
        if len(resp.auth_response) > 255:
            raise ValueError("auth response too long without CLIENT_PLUGIN_AUTH_LENENC")
        parts.append(bytes((len(resp.auth_response),)) + resp.auth_response)
    else:
        parts.append(resp.auth_response + b"\x00")
    if caps & CLIENT_CONNECT_WITH_DB:
        parts.append((resp.database or b"") + b"\x00")
    if caps & CLIENT_PLUGIN_AUTH:
        parts.append((resp.auth_plugin or b"") + b"\x00")
    if caps & CLIENT_CONNECT_ATTRS:
        body = b"".join(lenenc_str(k) + lenenc_str(v) for k, v in resp.connect_attrs)
        parts.append(lenenc_int(len(body)) + body)
    if caps & CLIENT_ZSTD_COMPRESSION_ALGORITHM:
        parts.append(bytes((resp.zstd_level or 0,)))
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ChangeUser:
    """COM_CHANGE_USER (0x11) payload, without the command byte."""

    username: bytes
    auth_response: bytes
    database: bytes
    charset: int | None = None
    auth_plugin: bytes | None = None
    connect_attrs: tuple[tuple[bytes, bytes], ...] = ()


def parse_change_user(payload: bytes, capabilities: int) -> ChangeUser:
    """Parse a COM_CHANGE_USER payload (first byte 0x11 included).

    The auth response is length-prefixed by one byte with CLIENT_SECURE_CONNECTION; unlike
    mysql-mimic's parser this reads it by its length, so long auth data works.
    """
    r = Reader(payload, 1)
    username = r.null_str()
    auth = r.fixed(r.uint(1)) if capabilities & CLIENT_SECURE_CONNECTION else r.null_str()
    database = r.null_str() if r.remaining() else b""
    charset = plugin = None
    attrs: tuple[tuple[bytes, bytes], ...] = ()
    if r.remaining() >= 2:
        charset = r.uint(2)
        if capabilities & CLIENT_PLUGIN_AUTH and r.remaining():
            plugin = r.null_str()
        if capabilities & CLIENT_CONNECT_ATTRS and r.remaining():
            attrs = _read_attrs(r)
    return ChangeUser(username, auth, database, charset, plugin, attrs)


def build_change_user(cu: ChangeUser, capabilities: int) -> bytes:
    parts = [b"\x11", cu.username + b"\x00"]
    if capabilities & CLIENT_SECURE_CONNECTION:
        parts.append(bytes((len(cu.auth_response),)) + cu.auth_response)
    else:
        parts.append(cu.auth_response + b"\x00")
    parts.append(cu.database + b"\x00")
    if cu.charset is not None:
        parts.append(cu.charset.to_bytes(2, "little"))
        if capabilities & CLIENT_PLUGIN_AUTH:
            parts.append((cu.auth_plugin or b"") + b"\x00")
        if capabilities & CLIENT_CONNECT_ATTRS:
            body = b"".join(lenenc_str(k) + lenenc_str(v) for k, v in cu.connect_attrs)
            parts.append(lenenc_int(len(body)) + body)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class AuthSwitch:
    plugin: bytes
    data: bytes


def parse_auth_switch(payload: bytes) -> AuthSwitch:
    r = Reader(payload, 1)
    if not r.remaining():
        # "Old Authentication Method Switch": a bare 0xFE asks for mysql_old_password.
        return AuthSwitch(b"mysql_old_password", b"")
    plugin = r.null_str()
    return AuthSwitch(plugin, r.rest().rstrip(b"\x00"))


def build_auth_switch(plugin: bytes, data: bytes) -> bytes:
    return b"\xfe" + plugin + b"\x00" + data


# --- scrambles ---------------------------------------------------------------------------


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def native_password_scramble(password: bytes, nonce: bytes) -> bytes:
    """SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))); empty password -> empty."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    return _xor(stage1, hashlib.sha1(nonce[:SCRAMBLE_LENGTH] + stage2).digest())


def native_password_hash(password: bytes) -> bytes:
    """What a server stores for mysql_native_password: SHA1(SHA1(password))."""
    return hashlib.sha1(hashlib.sha1(password).digest()).digest()


def verify_native_scramble(stored: bytes, scramble: bytes, nonce: bytes) -> bool:
    if len(scramble) != 20 or len(stored) != 20:
        return False
    candidate = _xor(scramble, hashlib.sha1(nonce[:SCRAMBLE_LENGTH] + stored).digest())
    return hashlib.sha1(candidate).digest() == stored


def caching_sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    """XOR(SHA256(password), SHA256(SHA256(SHA256(password)) + nonce))."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + nonce[:SCRAMBLE_LENGTH]).digest())


def caching_sha2_hash(password: bytes) -> bytes:
    """SHA256(SHA256(password)): what verifies a caching_sha2 fast-path scramble."""
    return hashlib.sha256(hashlib.sha256(password).digest()).digest()


def verify_caching_sha2_scramble(stored: bytes, scramble: bytes, nonce: bytes) -> bool:
    if len(scramble) != 32 or len(stored) != 32:
        return False
    candidate = _xor(scramble, hashlib.sha256(stored + nonce[:SCRAMBLE_LENGTH]).digest())
    return hashlib.sha256(candidate).digest() == stored


def with_capabilities(resp: HandshakeResponse, capabilities: int) -> HandshakeResponse:
    return replace(resp, capabilities=capabilities)
