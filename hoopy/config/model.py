"""The configuration as typed, frozen dataclasses. ``hoopy.config.loader`` builds them from TOML;
``docs/configuration.md`` documents every key."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from hoopy.approvals.policy import ApprovalPolicy
from hoopy.identity.tokens import IssuerConfig
from hoopy.policy.masking import MaskingSet
from hoopy.policy.rules import RuleSet


class LoginMode(enum.Enum):
    """How clients of a target log in (DESIGN.md, "Login modes")."""

    PASSTHROUGH = "passthrough"  # the database's own accounts; hoopy relays the exchange
    GATEWAY_USERS = "gateway_users"  # static users from this file; hoopy logs in upstream
    TOKENS = "tokens"  # OIDC/JWT tokens as the password; hoopy logs in upstream


class UpstreamTLS(enum.Enum):
    OFF = "off"
    PREFERRED = "preferred"  # TLS when the server offers it, unverified
    REQUIRED = "required"  # TLS or fail, unverified (like the mysql client's REQUIRED)
    VERIFY_CA = "verify-ca"  # TLS, server certificate checked against tls_ca
    VERIFY_IDENTITY = "verify-identity"  # and the host name checked too


@dataclass(frozen=True, slots=True)
class Secret:
    """Where a secret comes from. The value itself is never stored in the config object."""

    env: str | None = None
    file: Path | None = None

    def describe(self) -> str:
        if self.env:
            return f"environment variable {self.env}"
        if self.file:
            return f"file {self.file}"
        return "nowhere (empty)"

    def read(self) -> bytes:
        """Read the secret now. Raises ``SecretUnavailable`` with a message naming the source."""
        import os

        if self.env:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretUnavailable(f"environment variable {self.env} is not set")
            return value.encode("utf-8")
        if self.file:
            try:
                return self.file.read_bytes().rstrip(b"\r\n")
            except OSError as exc:
                raise SecretUnavailable(f"cannot read {self.file}: {exc.strerror}") from None
        return b""


class SecretUnavailable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    host: str
    port: int
    user: str
    password: Secret
    login: LoginMode
    unix_socket: Path | None = None
    database: str | None = None
    connect_timeout: float = 5.0
    # The loader's default is "required" for a host off loopback, "preferred" on loopback
    # (docs/security.md, "hoopy to the target"); this fallback is the strict one.
    tls: UpstreamTLS = UpstreamTLS.REQUIRED
    tls_ca: Path | None = None
    # The target's RSA public key (PEM) for caching_sha2_password full authentication over
    # an unencrypted leg; without it hoopy refuses to send its password there.
    server_public_key: Path | None = None
    allow_local_infile: bool = False
    # Guardrail sets applied to every session on this target (docs/guardrails.md).
    guardrails: tuple[str, ...] = ()
    # Masking sets applied to every session on this target (docs/masking.md).
    masking: tuple[str, ...] = ()

    def address(self) -> str:
        return str(self.unix_socket) if self.unix_socket else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    target: str
    tcp: tuple[str, int] | None
    unix_socket: Path | None = None
    tls: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # mysql_clear_password over plain TCP (tokens only), allowed only on loopback listeners.
    allow_cleartext_password: bool = False


@dataclass(frozen=True, slots=True)
class GatewayUser:
    """A static user (login mode ``gateway_users``): for laptops and CI without an IdP.

    Only the two password verifiers are kept: SHA1(SHA1(pw)) for mysql_native_password and
    SHA256(SHA256(pw)) for the caching_sha2_password fast path, the same values a MySQL
    server keeps for these plugins.
    """

    name: str
    native_hash: bytes
    sha2_hash: bytes
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Role:
    """Grants ``targets`` to principals meeting every condition set: one of ``groups``, an
    issuer among ``issuers``, and for each ``(claim path, globs)`` a claim matching a glob."""

    name: str
    groups: tuple[str, ...]
    targets: tuple[str, ...]
    claims: tuple[tuple[str, tuple[str, ...]], ...] = ()
    issuers: tuple[str, ...] = ()
    # Guardrail sets the role's members get, per target (docs/guardrails.md).
    guardrails: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Masking sets the role's members get, per target, and the targets on which its members
    # see values unmasked whatever the other sets say (docs/masking.md).
    masking: dict[str, tuple[str, ...]] = field(default_factory=dict)
    masking_exempt: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    state_dir: Path
    max_connections: int = 1024
    # A client must finish logging in within this (MySQL's connect_timeout defaults to 10 s).
    handshake_timeout: float = 10.0
    # A session idle this long is closed (MySQL's wait_timeout default, 8 hours).
    idle_timeout: float = 28800.0
    # On SIGINT/SIGTERM, sessions get this long to finish before they are cut.
    shutdown_grace: float = 30.0
    # The largest client command hoopy buffers (it must see a statement whole to audit it).
    # MySQL 8's max_allowed_packet default is 64 MiB.
    max_statement_bytes: int = 64 * 1024 * 1024
    log_level: str = "info"
    # Failed logins in a row for one (user, client address) before that pair's next attempts
    # are answered only after a delay: ``login_delay`` seconds, doubling with each further
    # failure up to ``login_delay_max``; a success resets it, and so do
    # ``login_failures_forget_after`` seconds without a failure (gateway/throttle.py; MySQL's
    # connection_control defaults to 3 failures and 1 s).
    login_delay_after_failures: int = 3
    login_delay: float = 1.0
    login_delay_max: float = 30.0
    login_failures_forget_after: float = 3600.0
    # Passthrough logins in flight (each holds an upstream connection before the client has
    # authenticated), in all and per client address (gateway/admission.py).
    max_pending_logins: int = 64
    max_pending_logins_per_address: int = 32
    # When a token expires during a session: "close" lets the running statement finish, then
    # answers the next command with an error and closes; "ignore" keeps the session.
    on_token_expiry: str = "close"
    # Gateway processes accepting on the same listeners (``"auto"``: one per CPU core), each
    # with its own audit chain (hoopy/gateway/workers.py). 1: one process, no supervisor.
    workers: int = 1


# 16 KiB keeps typical JSON/text parameters whole without letting a BLOB bloat the log.
DEFAULT_MAX_VALUE_BYTES = 16 * 1024
# A statement's recorded text is cut here: its encoding, hash and write happen in the event
# loop and in chain order, so every other session's audit append waits for them.
DEFAULT_MAX_SQL_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """``[audit]``: where and how statements are recorded (docs/audit-format.md)."""

    directory: Path
    durability: str = "os"  # "os": written before forwarding; "strict": also fsync'ed
    fsync_interval: float = 1.0  # os mode: background fsync period
    rotate_bytes: int = 256 * 1024 * 1024
    rotate_daily: bool = True
    key: Secret | None = None  # HMAC signing key source
    # Redact literals and parameters that look like these (hoopy/audit/redact.py: the groups
    # "secrets" and "personal", or single kinds); credentials in account statements are
    # always redacted.
    redact: tuple[str, ...] = ("secrets",)
    # Longer parameter values are recorded cut, with their length (not re-runnable); longer
    # literals in SQL text as '<redacted:oversize>'.
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    # Longer statement text is recorded cut, with ``sql_truncated`` (not re-runnable).
    max_sql_bytes: int = DEFAULT_MAX_SQL_BYTES
    # After a failed write, the log is reopened at most this often (seconds): how soon the
    # gateway serves again once the disk does.
    reopen_interval: float = 1.0
    # The head state (hoopy/audit/head.py): None means ``<directory>.head``.
    head_file: Path | None = None


@dataclass(frozen=True, slots=True)
class AdminListener:
    """``[approvals.listener]``: the admin API over TCP+TLS, for approvers on other hosts
    (they authenticate with a token from one of ``issuers``)."""

    tcp: tuple[str, int]
    tls_cert: Path | None = None  # with tls_key; neither: the gateway's own certificate
    tls_key: Path | None = None
    issuers: tuple[str, ...] = ()  # empty: every configured issuer


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    url: str
    secret: Secret | None = None  # signs each body: X-Hoopy-Signature: sha256=HMAC
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class ApprovalSettings:
    """``[approvals]``: where requests are decided (docs/approvals.md)."""

    socket: Path  # the local admin socket; default <state_dir>/admin.sock
    socket_mode: int = 0o600  # who may connect: file permissions decide
    directory: Path | None = None  # the store; default <state_dir>/approvals
    # What a review rule without its own ``approval`` table gets.
    defaults: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    listener: AdminListener | None = None
    webhook: WebhookSettings | None = None


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    gateway: GatewaySettings
    listeners: tuple[Listener, ...]
    targets: dict[str, Target] = field(default_factory=dict)
    users: dict[str, GatewayUser] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    issuers: dict[str, IssuerConfig] = field(default_factory=dict)
    audit: AuditSettings | None = None
    # Guardrail rule sets by name, the built-in "default" included (hoopy.config.guardrails).
    guardrails: dict[str, RuleSet] = field(default_factory=dict)
    # None: ``[approvals] enabled = false`` (review verdicts are then refused).
    approvals: ApprovalSettings | None = None
    # Masking sets by name (hoopy.config.masking).
    masking: dict[str, MaskingSet] = field(default_factory=dict)
