"""TOML -> ``Config``. Every error names the file, the line and the key.

Unknown keys are errors too: a misspelt ``allow_local_infle = true`` silently doing nothing is
worse than refusing to start.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hoopy.config.model import (
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
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem, located: ``file:line: key: what is wrong``."""


def format_password_hash(password: bytes) -> str:
    """The ``password_hash`` value for a gateway user (``hoopy hash-password`` prints it)."""
    return "$".join(
        (
            PASSWORD_HASH_PREFIX,
            native_password_hash(password).hex(),
            caching_sha2_hash(password).hex(),
        )
    )


class _Ctx:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, keys: tuple[str | int, ...]) -> int | None:
        """Best-effort line of a dotted key: its table header, then the key inside it."""
        names = [k for k in keys if isinstance(k, str)]
        if not names:
            return None
        table, key = names[:-1], names[-1]
        start = 0
        if table:
            header = re.compile(
                r"^\s*\[\[?\s*" + r"\s*\.\s*".join(re.escape(t) for t in table) + r"\s*\]\]?\s*$"
            )
            found = next((i for i, ln in enumerate(self.lines) if header.match(ln)), None)
            if found is None:
                return None
            start = found + 1
        key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(start, len(self.lines)):
            if table and self.lines[i].lstrip().startswith("["):
                break
            if key_re.match(self.lines[i]):
                return i + 1
        return start if table else None

    def error(self, keys: tuple[str | int, ...], message: str) -> ConfigError:
        line = self.line_of(keys)
        where = f"{self.path}:{line}" if line else str(self.path)
        dotted = ".".join(str(k) for k in keys)
        return ConfigError(f"{where}: {dotted}: {message}")


def _get(
    ctx: _Ctx,
    table: dict[str, Any],
    keys: tuple[str | int, ...],
    key: str,
    kind: type[T] | tuple[type, ...],
    default: Any = ...,
) -> Any:
    if key not in table:
        if default is ...:
            raise ctx.error((*keys, key), "is required")
        return default
    value = table[key]
    # TOML integers are acceptable where a float is asked for; booleans are never numbers.
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (
        isinstance(value, bool)
        and kind is not bool
        and not (isinstance(kind, tuple) and bool in kind)
    ):
        raise ctx.error((*keys, key), f"must be {_kind_name(kind)}, not a boolean")
    if not isinstance(value, kind):
        raise ctx.error((*keys, key), f"must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _check_keys(
    ctx: _Ctx, table: dict[str, Any], keys: tuple[str | int, ...], allowed: set[str]
) -> None:
    for key in table:
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            raise ctx.error((*keys, key), f"unknown key (expected one of: {hint})")


def _enum(
    ctx: _Ctx, keys: tuple[str | int, ...], value: str, kind: Callable[[str], T], choices: list[str]
) -> T:
    try:
        return kind(value)
    except ValueError:
        raise ctx.error(keys, f"must be one of {', '.join(choices)}, got {value!r}") from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _secret(ctx: _Ctx, table: dict[str, Any], keys: tuple[str | int, ...], base: Path) -> Secret:
    env = _get(ctx, table, keys, "password_env", str, None)
    file = _get(ctx, table, keys, "password_file", str, None)
    if "password" in table:
        raise ctx.error(
            (*keys, "password"),
            "passwords are never written in the config: use password_env or password_file",
        )
    if env and file:
        raise ctx.error((*keys, "password_file"), "set password_env or password_file, not both")
    return Secret(env=env, file=_path(base, file) if file else None)


def _parse_hostport(ctx: _Ctx, keys: tuple[str | int, ...], value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ctx.error(keys, f"must look like HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return build_config(data, path, text)


def build_config(data: dict[str, Any], path: Path, text: str = "") -> Config:
    ctx = _Ctx(path, text)
    base = path.parent.resolve()
    _check_keys(ctx, data, (), {"gateway", "listeners", "targets", "users", "roles", "issuers"})

    g = _get(ctx, data, (), "gateway", dict, {})
    _check_keys(
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
            "max_failed_logins",
            "failed_login_window",
            "on_token_expiry",
        },
    )
    gk: tuple[str | int, ...] = ("gateway",)
    gateway = GatewaySettings(
        state_dir=_path(base, _get(ctx, g, gk, "state_dir", str, ".hoopy")),
        max_connections=_positive(
            ctx, gk, "max_connections", _get(ctx, g, gk, "max_connections", int, 1024)
        ),
        handshake_timeout=_positive(
            ctx, gk, "handshake_timeout", _get(ctx, g, gk, "handshake_timeout", float, 10.0)
        ),
        idle_timeout=_non_negative(
            ctx, gk, "idle_timeout", _get(ctx, g, gk, "idle_timeout", float, 28800.0)
        ),
        shutdown_grace=_non_negative(
            ctx, gk, "shutdown_grace", _get(ctx, g, gk, "shutdown_grace", float, 30.0)
        ),
        max_statement_bytes=_positive(
            ctx,
            gk,
            "max_statement_bytes",
            _get(ctx, g, gk, "max_statement_bytes", int, 64 * 1024 * 1024),
        ),
        log_level=_enum(
            ctx,
            (*gk, "log_level"),
            _get(ctx, g, gk, "log_level", str, "info"),
            _log_level,
            ["debug", "info", "warning", "error"],
        ),
        max_failed_logins=_positive(
            ctx, gk, "max_failed_logins", _get(ctx, g, gk, "max_failed_logins", int, 20)
        ),
        failed_login_window=_positive(
            ctx, gk, "failed_login_window", _get(ctx, g, gk, "failed_login_window", float, 60.0)
        ),
        on_token_expiry=_enum(
            ctx,
            (*gk, "on_token_expiry"),
            _get(ctx, g, gk, "on_token_expiry", str, "close"),
            _one_of("close", "ignore"),
            ["close", "ignore"],
        ),
    )

    targets: dict[str, Target] = {}
    for name, t in _get(ctx, data, (), "targets", dict, {}).items():
        keys: tuple[str | int, ...] = ("targets", name)
        if not isinstance(t, dict):
            raise ctx.error(keys, "must be a table")
        _name_ok(ctx, keys, name)
        _check_keys(
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
                "allow_local_infile",
            },
        )
        tls = _enum(
            ctx,
            (*keys, "tls"),
            _get(ctx, t, keys, "tls", str, "preferred"),
            UpstreamTLS,
            [m.value for m in UpstreamTLS],
        )
        tls_ca = _get(ctx, t, keys, "tls_ca", str, None)
        if tls in (UpstreamTLS.VERIFY_CA, UpstreamTLS.VERIFY_IDENTITY) and not tls_ca:
            raise ctx.error(
                (*keys, "tls"), f"{tls.value} needs tls_ca (the CA file to verify with)"
            )
        port = _get(ctx, t, keys, "port", int, 3306)
        if not 0 < port < 65536:
            raise ctx.error((*keys, "port"), "must be between 1 and 65535")
        sock = _get(ctx, t, keys, "unix_socket", str, None)
        targets[name] = Target(
            name=name,
            host=_get(ctx, t, keys, "host", str, "127.0.0.1"),
            port=port,
            unix_socket=_path(base, sock) if sock else None,
            user=_get(ctx, t, keys, "user", str, ""),
            password=_secret(ctx, t, keys, base),
            login=_enum(
                ctx,
                (*keys, "login"),
                _get(ctx, t, keys, "login", str),
                LoginMode,
                [m.value for m in LoginMode],
            ),
            database=_get(ctx, t, keys, "database", str, None),
            connect_timeout=_positive(
                ctx, keys, "connect_timeout", _get(ctx, t, keys, "connect_timeout", float, 5.0)
            ),
            tls=tls,
            tls_ca=_path(base, tls_ca) if tls_ca else None,
            allow_local_infile=_get(ctx, t, keys, "allow_local_infile", bool, False),
        )
        if targets[name].login is not LoginMode.PASSTHROUGH and not targets[name].user:
            raise ctx.error(
                (*keys, "user"), "gateway_users targets need the account hoopy logs in with"
            )

    listeners: list[Listener] = []
    seen: set[str] = set()
    for i, lst in enumerate(_get(ctx, data, (), "listeners", list, [])):
        keys = ("listeners", i)
        if not isinstance(lst, dict):
            raise ctx.error(keys, "must be a table ([[listeners]])")
        _check_keys(
            ctx,
            lst,
            ("listeners",),
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
        target = _get(ctx, lst, ("listeners",), "target", str)
        if target not in targets:
            raise ctx.error(
                ("listeners", "target"), f"no target named {target!r} (define [targets.{target}])"
            )
        name = _get(ctx, lst, ("listeners",), "name", str, target)
        if name in seen:
            raise ctx.error(("listeners", "name"), f"two listeners are named {name!r}")
        seen.add(name)
        tcp_s = _get(ctx, lst, ("listeners",), "tcp", str, "127.0.0.1:3307")
        sock = _get(ctx, lst, ("listeners",), "unix_socket", str, None)
        cert = _get(ctx, lst, ("listeners",), "tls_cert", str, None)
        key = _get(ctx, lst, ("listeners",), "tls_key", str, None)
        if bool(cert) != bool(key):
            raise ctx.error(("listeners", "tls_cert"), "set both tls_cert and tls_key, or neither")
        tcp = _parse_hostport(ctx, ("listeners", "tcp"), tcp_s) if tcp_s else None
        if tcp is None and not sock:
            raise ctx.error(("listeners", "tcp"), "a listener needs tcp or unix_socket")
        cleartext = _get(ctx, lst, ("listeners",), "allow_cleartext_password", bool, False)
        if cleartext and (tcp is None or not _is_loopback(tcp[0])):
            raise ctx.error(
                ("listeners", "allow_cleartext_password"),
                "is only allowed on a loopback tcp address (127.0.0.1, ::1, localhost): "
                "elsewhere a token would cross the network in clear",
            )
        listeners.append(
            Listener(
                name=name,
                target=target,
                tcp=tcp,
                unix_socket=_path(base, sock) if sock else None,
                tls=_get(ctx, lst, ("listeners",), "tls", bool, True),
                tls_cert=_path(base, cert) if cert else None,
                tls_key=_path(base, key) if key else None,
                allow_cleartext_password=cleartext,
            )
        )
    if not listeners:
        raise ctx.error(("listeners",), "at least one [[listeners]] entry is required")

    users: dict[str, GatewayUser] = {}
    for name, u in _get(ctx, data, (), "users", dict, {}).items():
        keys = ("users", name)
        if not isinstance(u, dict):
            raise ctx.error(keys, "must be a table")
        _check_keys(
            ctx, u, keys, {"password_hash", "password_env", "password_file", "password", "groups"}
        )
        users[name] = GatewayUser(
            name=name,
            groups=tuple(_str_list(ctx, keys, "groups", _get(ctx, u, keys, "groups", list, []))),
            **_user_hashes(ctx, u, keys, base),
        )

    issuers = _issuers(ctx, _get(ctx, data, (), "issuers", dict, {}), base)

    roles: dict[str, Role] = {}
    for name, r in _get(ctx, data, (), "roles", dict, {}).items():
        keys = ("roles", name)
        if not isinstance(r, dict):
            raise ctx.error(keys, "must be a table")
        _check_keys(ctx, r, keys, {"groups", "targets", "claims", "issuers"})
        role_targets = tuple(_str_list(ctx, keys, "targets", _get(ctx, r, keys, "targets", list)))
        for t_name in role_targets:
            if t_name not in targets and t_name != "*":
                raise ctx.error((*keys, "targets"), f"no target named {t_name!r}")
        if "*" in role_targets:
            role_targets = tuple(targets)
        claims: list[tuple[str, tuple[str, ...]]] = []
        for claim, patterns in _get(ctx, r, keys, "claims", dict, {}).items():
            pattern_list = [patterns] if isinstance(patterns, str) else patterns
            if not isinstance(pattern_list, list) or not all(
                isinstance(p, str) for p in pattern_list
            ):
                raise ctx.error((*keys, "claims"), f"{claim}: must be a string or list of strings")
            claims.append((claim, tuple(pattern_list)))
        role_issuers = tuple(
            _str_list(ctx, keys, "issuers", _get(ctx, r, keys, "issuers", list, []))
        )
        for issuer in role_issuers:
            if issuer not in issuers:
                raise ctx.error((*keys, "issuers"), f"no issuer named {issuer!r}")
        role_groups = tuple(_str_list(ctx, keys, "groups", _get(ctx, r, keys, "groups", list, [])))
        if not (role_groups or claims or role_issuers):
            raise ctx.error(keys, "a role needs groups, claims or issuers to match on")
        roles[name] = Role(
            name=name,
            groups=role_groups,
            targets=role_targets,
            claims=tuple(claims),
            issuers=role_issuers,
        )

    if any(t.login is LoginMode.TOKENS for t in targets.values()) and not issuers:
        raise ctx.error(
            ("issuers",), 'targets with login = "tokens" need at least one [issuers.NAME]'
        )

    return Config(
        path=path,
        gateway=gateway,
        listeners=tuple(listeners),
        targets=targets,
        users=users,
        roles=roles,
        issuers=issuers,
    )


def _issuers(ctx: _Ctx, table: dict[str, Any], base: Path) -> dict[str, IssuerConfig]:
    issuers: dict[str, IssuerConfig] = {}
    for name, i in table.items():
        keys: tuple[str | int, ...] = ("issuers", name)
        if not isinstance(i, dict):
            raise ctx.error(keys, "must be a table")
        _name_ok(ctx, keys, name)
        _check_keys(
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
            },
        )
        audience = _get(ctx, i, keys, "audience", (str, list))
        audiences = (
            [audience] if isinstance(audience, str) else _str_list(ctx, keys, "audience", audience)
        )
        jwks_file = _get(ctx, i, keys, "jwks_file", str, None)
        jwks_url = _get(ctx, i, keys, "jwks_url", str, None)
        if bool(jwks_file) == bool(jwks_url):
            raise ctx.error(keys, "set exactly one of jwks_file and jwks_url")
        if jwks_url and not jwks_url.startswith(("https://", "http://127.", "http://localhost")):
            raise ctx.error((*keys, "jwks_url"), "must be https:// (plain http only for loopback)")
        options: dict[str, Any] = {}
        if "algorithms" in i:
            options["algorithms"] = tuple(
                _str_list(ctx, keys, "algorithms", _get(ctx, i, keys, "algorithms", list))
            )
        if "leeway" in i:
            options["leeway"] = _non_negative(
                ctx, keys, "leeway", _get(ctx, i, keys, "leeway", float)
            )
        for key in ("subject_claim", "groups_claim"):
            if key in i:
                options[key] = _get(ctx, i, keys, key, str)
        for key in ("jwks_min_refresh_interval", "jwks_max_age"):
            if key in i:
                options[key] = _non_negative(ctx, keys, key, _get(ctx, i, keys, key, float))
        if "required_claims" in i:
            options["required_claims"] = tuple(
                _str_list(ctx, keys, "required_claims", _get(ctx, i, keys, "required_claims", list))
            )
        try:
            issuers[name] = IssuerConfig(
                name=name,
                issuer=_get(ctx, i, keys, "issuer", str),
                audience=tuple(audiences),
                jwks_file=_path(base, jwks_file) if jwks_file else None,
                jwks_url=jwks_url,
                **options,
            )
        except ValueError as exc:
            raise ctx.error(keys, str(exc)) from None
    return issuers


def _user_hashes(
    ctx: _Ctx, u: dict[str, Any], keys: tuple[str | int, ...], base: Path
) -> dict[str, bytes]:
    hashed = _get(ctx, u, keys, "password_hash", str, None)
    secret = _secret(ctx, u, keys, base)
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
    try:
        password = secret.read()
    except SecretUnavailable as exc:
        raise ctx.error(keys, f"password: {exc}") from None
    if not password:
        raise ctx.error(keys, f"the password from {secret.describe()} is empty")
    return {"native_hash": native_password_hash(password), "sha2_hash": caching_sha2_hash(password)}


def _str_list(ctx: _Ctx, keys: tuple[str | int, ...], key: str, value: list[Any]) -> list[str]:
    if not all(isinstance(v, str) for v in value):
        raise ctx.error((*keys, key), "must be a list of strings")
    return value


def _name_ok(ctx: _Ctx, keys: tuple[str | int, ...], name: str) -> None:
    if not _NAME.match(name):
        raise ctx.error(keys, "names use letters, digits, '_', '-' and '.' (at most 64)")


def _positive(ctx: _Ctx, keys: tuple[str | int, ...], key: str, value: T) -> T:
    if not value > 0:  # type: ignore[operator]
        raise ctx.error((*keys, key), "must be greater than zero")
    return value


def _non_negative(ctx: _Ctx, keys: tuple[str | int, ...], key: str, value: T) -> T:
    if value < 0:  # type: ignore[operator]
        raise ctx.error((*keys, key), "must not be negative")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(value)
        return value

    return check


_log_level = _one_of("debug", "info", "warning", "error")
