"""TOML -> ``Config``. Every error names the file, the line and the key.

Unknown keys are errors too: a misspelt ``allow_local_infle = true`` silently doing nothing is
worse than refusing to start.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from hoopy.config.approvals import parse_approvals
from hoopy.config.fields import (
    ConfigError,
    Ctx,
    check_keys,
    did_you_mean,
    enum_value,
    get_value,
    is_loopback,
    log_level_value,
    name_ok,
    non_negative,
    non_negative_value,
    one_of,
    parse_hostport,
    positive,
    positive_value,
    resolve_path,
    secret_source,
    str_list,
)
from hoopy.config.guardrails import builtin_sets, parse_rule_sets, role_set_names, set_names
from hoopy.config.masking import exempt_targets, parse_masking_sets
from hoopy.config.masking import role_set_names as role_masking_names
from hoopy.config.masking import set_names as masking_names
from hoopy.config.model import (
    DEFAULT_MAX_SQL_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    AuditSettings,
    Config,
    GatewaySettings,
    GatewayUser,
    Listener,
    LoginMode,
    Role,
    Secret,
    SecretUnavailable,
    Target,
    UpstreamTLS,
)
from hoopy.identity.tokens import IssuerConfig
from hoopy.wire.handshake import caching_sha2_hash, native_password_hash

PASSWORD_HASH_PREFIX = "hoopy1"

__all__ = ["ConfigError", "build_config", "format_password_hash", "load_config"]


def format_password_hash(password: bytes) -> str:
    """The ``password_hash`` value for a gateway user (``hoopy hash-password`` prints it)."""
    return "$".join(
        (
            PASSWORD_HASH_PREFIX,
            native_password_hash(password).hex(),
            caching_sha2_hash(password).hex(),
        )
    )


def load_config(
    path: str | Path, *, read_secrets: bool = True, read_masking_keys: bool | None = None
) -> Config:
    """Load and check the config. ``read_secrets=False`` is for commands that do not serve
    (``hoopy sessions``, ``replay``...): they must work without the gateway's secrets.
    ``read_masking_keys`` (default: as ``read_secrets``) reads the masking sets' HMAC keys
    (``replay --execute`` masks with them)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return build_config(
        data, path, text, read_secrets=read_secrets, read_masking_keys=read_masking_keys
    )


def build_config(
    data: dict[str, Any],
    path: Path,
    text: str = "",
    *,
    read_secrets: bool = True,
    read_masking_keys: bool | None = None,
) -> Config:
    ctx = Ctx(path, text, read_secrets=read_secrets, read_masking_keys=read_masking_keys)
    base = path.parent.resolve()
    check_keys(
        ctx,
        data,
        (),
        {
            "gateway",
            "listeners",
            "targets",
            "users",
            "roles",
            "issuers",
            "audit",
            "guardrails",
            "approvals",
            "masking",
        },
    )
    g: dict[str, Any] = {}
    state_dir = resolve_path(base, ".hoopy")
    with ctx.entry():
        g = get_value(ctx, data, (), "gateway", dict, {})
        state_dir = resolve_path(base, get_value(ctx, g, ("gateway",), "state_dir", str, ".hoopy"))
    approvals = None
    with ctx.entry("approvals", "approvals"):
        approvals = parse_approvals(ctx, data, base, state_dir)
    rule_sets = dict(builtin_sets())
    with ctx.entry():
        rule_sets.update(
            parse_rule_sets(
                ctx,
                get_value(ctx, data, (), "guardrails", dict, {}),
                approvals=approvals.defaults if approvals is not None else None,
            )
        )
    masking_sets: dict[str, Any] = {}
    with ctx.entry():
        masking_sets = parse_masking_sets(ctx, get_value(ctx, data, (), "masking", dict, {}), base)

    for old_key in ("max_failed_logins", "failed_login_window"):
        if old_key in g:
            ctx.report(
                ("gateway", old_key),
                "no longer exists: failed logins now delay further attempts of the same user "
                "from the same address instead of blocking the address (set "
                "login_delay_after_failures, login_delay, login_delay_max; "
                "docs/configuration.md)",
            )
            g = {k: v for k, v in g.items() if k != old_key}  # not "unknown" as well
    check_keys(
        ctx,
        g,
        ("gateway",),
        {
            "state_dir",
            "max_connections",
            "handshake_timeout",
            "idle_timeout",
            "shutdown_grace",
            "max_statement_bytes",
            "log_level",
            "login_delay_after_failures",
            "login_delay",
            "login_delay_max",
            "login_failures_forget_after",
            "max_pending_logins",
            "max_pending_logins_per_address",
            "on_token_expiry",
            "workers",
        },
    )
    gk: tuple[str | int, ...] = ("gateway",)
    gateway = GatewaySettings(state_dir=state_dir)
    with ctx.entry():
        gateway = GatewaySettings(
            state_dir=state_dir,
            max_connections=positive_value(ctx, g, gk, "max_connections", int, 1024),
            handshake_timeout=positive_value(ctx, g, gk, "handshake_timeout", float, 10.0),
            idle_timeout=non_negative_value(ctx, g, gk, "idle_timeout", float, 28800.0),
            shutdown_grace=non_negative_value(ctx, g, gk, "shutdown_grace", float, 30.0),
            max_statement_bytes=positive_value(
                ctx, g, gk, "max_statement_bytes", int, 64 * 1024 * 1024
            ),
            log_level=enum_value(
                ctx,
                (*gk, "log_level"),
                get_value(ctx, g, gk, "log_level", str, "info"),
                log_level_value,
                ["debug", "info", "warning", "error"],
            ),
            login_delay_after_failures=positive_value(
                ctx, g, gk, "login_delay_after_failures", int, 3
            ),
            login_delay=positive_value(ctx, g, gk, "login_delay", float, 1.0),
            login_delay_max=positive_value(ctx, g, gk, "login_delay_max", float, 30.0),
            login_failures_forget_after=positive_value(
                ctx, g, gk, "login_failures_forget_after", float, 3600.0
            ),
            max_pending_logins=positive_value(ctx, g, gk, "max_pending_logins", int, 64),
            max_pending_logins_per_address=positive_value(
                ctx, g, gk, "max_pending_logins_per_address", int, 32
            ),
            on_token_expiry=enum_value(
                ctx,
                (*gk, "on_token_expiry"),
                get_value(ctx, g, gk, "on_token_expiry", str, "close"),
                one_of("close", "ignore"),
                ["close", "ignore"],
            ),
            workers=_workers(ctx, g, gk),
        )

    targets: dict[str, Target] = {}
    for name, t in get_value(ctx, data, (), "targets", dict, {}).items():
        with ctx.entry("target", name):
            keys: tuple[str | int, ...] = ("targets", name)
            if not isinstance(t, dict):
                raise ctx.error(keys, "must be a table")
            name_ok(ctx, keys, name)
            check_keys(
                ctx,
                t,
                keys,
                {
                    "host",
                    "port",
                    "unix_socket",
                    "user",
                    "password_env",
                    "password_file",
                    "password",
                    "login",
                    "database",
                    "connect_timeout",
                    "tls",
                    "tls_ca",
                    "server_public_key",
                    "allow_local_infile",
                    "guardrails",
                    "masking",
                },
            )
            host = get_value(ctx, t, keys, "host", str, "127.0.0.1")
            sock = get_value(ctx, t, keys, "unix_socket", str, None)
            tls = enum_value(
                ctx,
                (*keys, "tls"),
                get_value(ctx, t, keys, "tls", str, default_upstream_tls(host, sock).value),
                UpstreamTLS,
                [m.value for m in UpstreamTLS],
            )
            tls_ca = get_value(ctx, t, keys, "tls_ca", str, None)
            if tls in (UpstreamTLS.VERIFY_CA, UpstreamTLS.VERIFY_IDENTITY) and not tls_ca:
                raise ctx.error(
                    (*keys, "tls"), f"{tls.value} needs tls_ca (the CA file to verify with)"
                )
            port = get_value(ctx, t, keys, "port", int, 3306)
            if not 0 < port < 65536:
                raise ctx.error((*keys, "port"), "must be between 1 and 65535")
            targets[name] = Target(
                name=name,
                host=host,
                port=port,
                unix_socket=resolve_path(base, sock) if sock else None,
                user=get_value(ctx, t, keys, "user", str, ""),
                password=secret_source(ctx, t, keys, base),
                login=enum_value(
                    ctx,
                    (*keys, "login"),
                    get_value(ctx, t, keys, "login", str),
                    LoginMode,
                    [m.value for m in LoginMode],
                ),
                database=get_value(ctx, t, keys, "database", str, None),
                connect_timeout=positive_value(ctx, t, keys, "connect_timeout", float, 5.0),
                tls=tls,
                tls_ca=resolve_path(base, tls_ca) if tls_ca else None,
                server_public_key=_server_public_key(ctx, t, keys, base),
                allow_local_infile=get_value(ctx, t, keys, "allow_local_infile", bool, False),
                guardrails=set_names(ctx, t, keys, rule_sets),
                masking=masking_names(ctx, t, keys, masking_sets),
            )
            if targets[name].login is not LoginMode.PASSTHROUGH and not targets[name].user:
                raise ctx.error(
                    (*keys, "user"), "gateway_users targets need the account hoopy logs in with"
                )

    listeners: list[Listener] = []
    seen: set[str] = set()
    for i, lst in enumerate(get_value(ctx, data, (), "listeners", list, [])):
        with ctx.entry("listener", str(i)):
            keys = ("listeners", i)
            lk: tuple[str | int, ...] = keys
            if not isinstance(lst, dict):
                raise ctx.error(keys, "must be a table ([[listeners]])")
            check_keys(
                ctx,
                lst,
                lk,
                {
                    "name",
                    "target",
                    "tcp",
                    "unix_socket",
                    "tls",
                    "tls_cert",
                    "tls_key",
                    "allow_cleartext_password",
                },
            )
            target = get_value(ctx, lst, lk, "target", str)
            if target not in targets and not ctx.is_broken("target", target):
                hint = (
                    did_you_mean(target, ctx.known("target", targets))
                    or f" (define [targets.{target}])"
                )
                raise ctx.error((*lk, "target"), f"no target named {target!r}{hint}")
            name = get_value(ctx, lst, lk, "name", str, target)
            if name in seen:
                raise ctx.error((*lk, "name"), f"two listeners are named {name!r}")
            seen.add(name)
            tcp_s = get_value(ctx, lst, lk, "tcp", str, "127.0.0.1:3307")
            sock = get_value(ctx, lst, lk, "unix_socket", str, None)
            cert = get_value(ctx, lst, lk, "tls_cert", str, None)
            key = get_value(ctx, lst, lk, "tls_key", str, None)
            if bool(cert) != bool(key):
                raise ctx.error((*lk, "tls_cert"), "set both tls_cert and tls_key, or neither")
            tcp = parse_hostport(ctx, (*lk, "tcp"), tcp_s) if tcp_s else None
            if tcp is None and not sock:
                raise ctx.error((*lk, "tcp"), "a listener needs tcp or unix_socket")
            cleartext = get_value(ctx, lst, lk, "allow_cleartext_password", bool, False)
            if cleartext and (tcp is None or not is_loopback(tcp[0])):
                raise ctx.error(
                    (*lk, "allow_cleartext_password"),
                    "is only allowed on a loopback tcp address (127.0.0.1, ::1, localhost): "
                    "elsewhere a token would cross the network in clear",
                )
            listeners.append(
                Listener(
                    name=name,
                    target=target,
                    tcp=tcp,
                    unix_socket=resolve_path(base, sock) if sock else None,
                    tls=get_value(ctx, lst, lk, "tls", bool, True),
                    tls_cert=resolve_path(base, cert) if cert else None,
                    tls_key=resolve_path(base, key) if key else None,
                    allow_cleartext_password=cleartext,
                )
            )
    if not listeners and not ctx.broken.get("listener"):
        ctx.report(("listeners",), "at least one [[listeners]] entry is required")

    users: dict[str, GatewayUser] = {}
    for name, u in get_value(ctx, data, (), "users", dict, {}).items():
        with ctx.entry("user", name):
            keys = ("users", name)
            if not isinstance(u, dict):
                raise ctx.error(keys, "must be a table")
            check_keys(
                ctx,
                u,
                keys,
                {"password_hash", "password_env", "password_file", "password", "groups"},
            )
            users[name] = GatewayUser(
                name=name,
                groups=tuple(
                    str_list(ctx, keys, "groups", get_value(ctx, u, keys, "groups", list, []))
                ),
                **_user_hashes(ctx, u, keys, base),
            )

    issuers = _issuers(ctx, get_value(ctx, data, (), "issuers", dict, {}), base)

    roles: dict[str, Role] = {}
    for name, r in get_value(ctx, data, (), "roles", dict, {}).items():
        with ctx.entry("role", name):
            keys = ("roles", name)
            if not isinstance(r, dict):
                raise ctx.error(keys, "must be a table")
            check_keys(
                ctx,
                r,
                keys,
                {
                    "groups",
                    "targets",
                    "claims",
                    "issuers",
                    "guardrails",
                    "masking",
                    "masking_exempt",
                },
            )
            role_targets = tuple(
                str_list(ctx, keys, "targets", get_value(ctx, r, keys, "targets", list))
            )
            for t_name in role_targets:
                if t_name not in targets and t_name != "*" and not ctx.is_broken("target", t_name):
                    hint = did_you_mean(t_name, ctx.known("target", targets))
                    raise ctx.error((*keys, "targets"), f"no target named {t_name!r}{hint}")
            if "*" in role_targets:
                role_targets = tuple(targets)
            claims: list[tuple[str, tuple[str, ...]]] = []
            for claim, patterns in get_value(ctx, r, keys, "claims", dict, {}).items():
                pattern_list = [patterns] if isinstance(patterns, str) else patterns
                if not isinstance(pattern_list, list) or not all(
                    isinstance(p, str) for p in pattern_list
                ):
                    raise ctx.error(
                        (*keys, "claims"), f"{claim}: must be a string or list of strings"
                    )
                claims.append((claim, tuple(pattern_list)))
            role_issuers = tuple(
                str_list(ctx, keys, "issuers", get_value(ctx, r, keys, "issuers", list, []))
            )
            for issuer in role_issuers:
                if issuer not in issuers and not ctx.is_broken("issuer", issuer):
                    hint = did_you_mean(issuer, ctx.known("issuer", issuers))
                    raise ctx.error((*keys, "issuers"), f"no issuer named {issuer!r}{hint}")
            role_groups = tuple(
                str_list(ctx, keys, "groups", get_value(ctx, r, keys, "groups", list, []))
            )
            if not (role_groups or claims or role_issuers):
                raise ctx.error(keys, "a role needs groups, claims or issuers to match on")
            roles[name] = Role(
                name=name,
                groups=role_groups,
                targets=role_targets,
                claims=tuple(claims),
                issuers=role_issuers,
                guardrails=role_set_names(ctx, r, keys, rule_sets, role_targets),
                masking=role_masking_names(ctx, r, keys, masking_sets, role_targets),
                masking_exempt=exempt_targets(ctx, r, keys, role_targets),
            )

    if (
        any(t.login is LoginMode.TOKENS for t in targets.values())
        and not issuers
        and not ctx.broken.get("issuer")
    ):
        ctx.report(("issuers",), 'targets with login = "tokens" need at least one [issuers.NAME]')

    audit = None
    with ctx.entry():
        audit = _audit(ctx, data, base, gateway.state_dir)
    if approvals is not None and approvals.listener is not None:
        ak: tuple[str | int, ...] = ("approvals", "listener")
        if not issuers and not ctx.broken.get("issuer"):
            ctx.report(
                (*ak, "tcp"),
                "remote approvers authenticate with tokens: configure an [issuers.NAME] first",
            )
        for name in approvals.listener.issuers:
            if name not in issuers and not ctx.is_broken("issuer", name):
                hint = (
                    did_you_mean(name, ctx.known("issuer", issuers))
                    or f" (known: {', '.join(issuers)})"
                )
                ctx.report((*ak, "issuers"), f"no issuer named {name!r}{hint}")

    ctx.raise_errors()
    return Config(
        audit=audit,
        path=path,
        gateway=gateway,
        listeners=tuple(listeners),
        targets=targets,
        users=users,
        roles=roles,
        issuers=issuers,
        guardrails=rule_sets,
        approvals=approvals,
        masking=masking_sets,
    )


# More would be a typo: each worker is a whole gateway process with its own audit chain.
MAX_WORKERS = 256


def _workers(ctx: Ctx, g: dict[str, Any], gk: tuple[str | int, ...]) -> int:
    """``[gateway] workers``: a whole number from 1 to MAX_WORKERS, or "auto" (the CPU cores
    this process may run on)."""
    value = g.get("workers", 1)
    if value == "auto":
        return max(1, min(MAX_WORKERS, available_cores()))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ctx.error(
            (*gk, "workers"),
            f'must be a whole number from 1 to {MAX_WORKERS}, or "auto" (got {value!r})',
        )
    return value


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_upstream_tls(host: str, unix_socket: str | None) -> UpstreamTLS:
    """A target's ``tls`` when the config names none.

    ``required`` off loopback: a gateway exists to hold credentials, and over an unencrypted
    leg anyone on the path can read every statement and result and, posing as the server,
    collect a scramble of hoopy's password for an offline dictionary attack. ``preferred`` on
    loopback and unix sockets, where that path is this machine and a laptop's MariaDB often
    has no TLS. MySQL 8 and MariaDB 11.4 enable TLS with a generated certificate out of the box.
    """
    if unix_socket or is_loopback(host):
        return UpstreamTLS.PREFERRED
    return UpstreamTLS.REQUIRED


def _server_public_key(
    ctx: Ctx, t: dict[str, Any], keys: tuple[str | int, ...], base: Path
) -> Path | None:
    """The pinned RSA key, checked at start-up (and read again at each login: rotation)."""
    from hoopy.wire.login import load_server_public_key

    value = get_value(ctx, t, keys, "server_public_key", str, None)
    if value is None:
        return None
    path = resolve_path(base, value)
    if ctx.read_secrets:  # serving: a key that cannot be used must stop the start
        try:
            load_server_public_key(path.read_bytes())
        except OSError as exc:
            raise ctx.error(
                (*keys, "server_public_key"), f"cannot read {path}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise ctx.error((*keys, "server_public_key"), f"{path} {exc}") from None
    return path


def _audit(ctx: Ctx, data: dict[str, Any], base: Path, state_dir: Path) -> AuditSettings | None:
    """On unless ``enabled = false``: an unaudited gateway must be a deliberate choice."""
    keys: tuple[str | int, ...] = ("audit",)
    a = get_value(ctx, data, (), "audit", dict, {})
    check_keys(
        ctx,
        a,
        keys,
        {
            "enabled",
            "directory",
            "durability",
            "fsync_interval",
            "rotate_bytes",
            "rotate_daily",
            "key_env",
            "key_file",
            "redact",
            "max_value_bytes",
            "max_sql_bytes",
            "reopen_interval",
            "head_file",
        },
    )
    if not get_value(ctx, a, keys, "enabled", bool, True):
        return None
    directory = get_value(ctx, a, keys, "directory", str, "")
    key_env = get_value(ctx, a, keys, "key_env", str, None)
    key_file = get_value(ctx, a, keys, "key_file", str, None)
    head_file = get_value(ctx, a, keys, "head_file", str, None)
    if key_env and key_file:
        raise ctx.error((*keys, "key_file"), "set key_env or key_file, not both")
    return AuditSettings(
        directory=resolve_path(base, directory) if directory else state_dir / "audit",
        durability=enum_value(
            ctx,
            (*keys, "durability"),
            get_value(ctx, a, keys, "durability", str, "os"),
            one_of("os", "strict"),
            ["os", "strict"],
        ),
        fsync_interval=positive_value(ctx, a, keys, "fsync_interval", float, 1.0),
        rotate_bytes=positive_value(ctx, a, keys, "rotate_bytes", int, 256 * 1024 * 1024),
        rotate_daily=get_value(ctx, a, keys, "rotate_daily", bool, True),
        redact=_redaction_kinds(ctx, keys, a),
        max_value_bytes=positive_value(
            ctx, a, keys, "max_value_bytes", int, DEFAULT_MAX_VALUE_BYTES
        ),
        max_sql_bytes=positive_value(ctx, a, keys, "max_sql_bytes", int, DEFAULT_MAX_SQL_BYTES),
        reopen_interval=positive_value(ctx, a, keys, "reopen_interval", float, 1.0),
        key=Secret(env=key_env, file=resolve_path(base, key_file) if key_file else None)
        if key_env or key_file
        else None,
        head_file=resolve_path(base, head_file) if head_file else None,
    )


def _redaction_kinds(ctx: Ctx, keys: tuple[str | int, ...], a: dict[str, Any]) -> tuple[str, ...]:
    from hoopy.audit.redact import detectors_named

    kinds = tuple(
        str_list(ctx, keys, "redact", get_value(ctx, a, keys, "redact", list, ["secrets"]))
    )
    try:
        detectors_named(kinds)
    except ValueError as exc:
        raise ctx.error((*keys, "redact"), str(exc)) from None
    return kinds


def _issuers(ctx: Ctx, table: dict[str, Any], base: Path) -> dict[str, IssuerConfig]:
    issuers: dict[str, IssuerConfig] = {}
    for name, i in table.items():
        with ctx.entry("issuer", name):
            keys: tuple[str | int, ...] = ("issuers", name)
            if not isinstance(i, dict):
                raise ctx.error(keys, "must be a table")
            name_ok(ctx, keys, name)
            check_keys(
                ctx,
                i,
                keys,
                {
                    "issuer",
                    "audience",
                    "jwks_file",
                    "jwks_url",
                    "algorithms",
                    "leeway",
                    "subject_claim",
                    "groups_claim",
                    "required_claims",
                    "jwks_min_refresh_interval",
                    "jwks_max_age",
                    "max_token_lifetime",
                },
            )
            audience = get_value(ctx, i, keys, "audience", (str, list))
            audiences = (
                [audience]
                if isinstance(audience, str)
                else str_list(ctx, keys, "audience", audience)
            )
            jwks_file = get_value(ctx, i, keys, "jwks_file", str, None)
            jwks_url = get_value(ctx, i, keys, "jwks_url", str, None)
            if bool(jwks_file) == bool(jwks_url):
                raise ctx.error(keys, "set exactly one of jwks_file and jwks_url")
            if jwks_url and not jwks_url.startswith(
                ("https://", "http://127.", "http://localhost")
            ):
                raise ctx.error(
                    (*keys, "jwks_url"), "must be https:// (plain http only for loopback)"
                )
            options: dict[str, Any] = {}
            if "algorithms" in i:
                options["algorithms"] = tuple(
                    str_list(ctx, keys, "algorithms", get_value(ctx, i, keys, "algorithms", list))
                )
            if "leeway" in i:
                options["leeway"] = non_negative(
                    ctx, keys, "leeway", get_value(ctx, i, keys, "leeway", float)
                )
            for key in ("subject_claim", "groups_claim"):
                if key in i:
                    options[key] = get_value(ctx, i, keys, key, str)
            for key in ("jwks_min_refresh_interval", "jwks_max_age"):
                if key in i:
                    options[key] = non_negative(ctx, keys, key, get_value(ctx, i, keys, key, float))
            if "max_token_lifetime" in i:
                options["max_token_lifetime"] = positive(
                    ctx,
                    keys,
                    "max_token_lifetime",
                    get_value(ctx, i, keys, "max_token_lifetime", float),
                )
            if "required_claims" in i:
                options["required_claims"] = tuple(
                    str_list(
                        ctx,
                        keys,
                        "required_claims",
                        get_value(ctx, i, keys, "required_claims", list),
                    )
                )
            try:
                issuers[name] = IssuerConfig(
                    name=name,
                    issuer=get_value(ctx, i, keys, "issuer", str),
                    audience=tuple(audiences),
                    jwks_file=resolve_path(base, jwks_file) if jwks_file else None,
                    jwks_url=jwks_url,
                    **options,
                )
            except ValueError as exc:
                raise ctx.error(keys, str(exc)) from None
    return issuers


def _user_hashes(
    ctx: Ctx, u: dict[str, Any], keys: tuple[str | int, ...], base: Path
) -> dict[str, bytes]:
    hashed = get_value(ctx, u, keys, "password_hash", str, None)
    secret = secret_source(ctx, u, keys, base)
    if hashed and (secret.env or secret.file):
        raise ctx.error(
            (*keys, "password_hash"), "set password_hash or password_env/password_file, not several"
        )
    if hashed:
        parts = hashed.split("$")
        try:
            if len(parts) != 3 or parts[0] != PASSWORD_HASH_PREFIX:
                raise ValueError
            native, sha2 = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
            if len(native) != 20 or len(sha2) != 32:
                raise ValueError
        except ValueError:
            raise ctx.error(
                (*keys, "password_hash"),
                "is not a hoopy password hash (make one with `hoopy hash-password`)",
            ) from None
        return {"native_hash": native, "sha2_hash": sha2}
    if not (secret.env or secret.file):
        raise ctx.error(keys, "needs password_hash, password_env or password_file")
    if not ctx.read_secrets:
        return {"native_hash": b"", "sha2_hash": b""}
    try:
        password = secret.read()
    except SecretUnavailable as exc:
        raise ctx.error(keys, f"password: {exc}") from None
    if not password:
        raise ctx.error(keys, f"the password from {secret.describe()} is empty")
    return {"native_hash": native_password_hash(password), "sha2_hash": caching_sha2_hash(password)}
