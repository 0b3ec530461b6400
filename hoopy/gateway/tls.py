"""TLS contexts for both legs, and the self-signed certificate made on first start."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from hoopy.config.model import Target, UpstreamTLS

GENERATED_CERT = "hoopy-cert.pem"
GENERATED_KEY = "hoopy-key.pem"
# Ten years: this certificate identifies a developer's gateway, it is pinned as its own CA by
# clients (--ssl-ca), and rotating it breaks them; a production deployment brings its own.
GENERATED_VALIDITY_DAYS = 3650


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    cert: Path
    key: Path
    generated: bool

    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the certificate, colon-separated like openssl prints it."""
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        digest = hashlib.sha256(der).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def ensure_server_certificate(state_dir: Path) -> ServerCertificate:
    """Return hoopy's generated certificate, creating it (key 0600) if it does not exist."""
    cert = state_dir / GENERATED_CERT
    key = state_dir / GENERATED_KEY
    if cert.exists() and key.exists():
        return ServerCertificate(cert, key, generated=False)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hoopy gateway (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    hostname = socket.gethostname()
    if hostname and hostname != "localhost":
        alt_names.append(x509.DNSName(hostname))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=GENERATED_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # Its own CA, so clients can pin it with --ssl-ca / ssl={'ca': ...}.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(private, hashes.SHA256())
    )
    key_bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_new_file(key, key_bytes, 0o600)
    write_new_file(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return ServerCertificate(cert, key, generated=True)


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically through a temporary file that is created new (``O_EXCL``,
    random name, ``mode`` from the start): a file left at a fixed temporary name, perhaps
    world-readable, would keep its own mode through ``O_CREAT`` and hand it to the key."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def upstream_context(target: Target) -> ssl.SSLContext:
    """Client-side context for the upstream leg, following the target's ``tls`` mode."""
    if target.tls in (UpstreamTLS.VERIFY_CA, UpstreamTLS.VERIFY_IDENTITY):
        ctx = ssl.create_default_context(cafile=str(target.tls_ca))
        ctx.check_hostname = target.tls is UpstreamTLS.VERIFY_IDENTITY
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        # preferred / required encrypt without verifying, as the mysql client's modes do.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
