"""Typed field readers for the TOML config: each error is located (``file:line: key: why``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hoopy.config.model import Secret

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem, located: ``file:line: key: what is wrong``."""


class Ctx:
    def __init__(
        self,
        path: Path,
        text: str,
        *,
        read_secrets: bool = True,
        read_masking_keys: bool | None = None,
    ) -> None:
        self.path = path
        self.lines = text.splitlines()
        # False for commands that only read the config (audit queries): gateway users'
        # passwords are then neither read nor required, and their hashes stay empty.
        self.read_secrets = read_secrets
        # The masking sets' HMAC keys (``hoopy replay --execute`` masks as the gateway did,
        # without the gateway users' passwords); by default as the other secrets.
        self.read_masking_keys = read_secrets if read_masking_keys is None else read_masking_keys

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


def get_value(
    ctx: Ctx,
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
        raise ctx.error((*keys, key), f"must be {kind_name(kind)}, not a boolean")
    if not isinstance(value, kind):
        raise ctx.error((*keys, key), f"must be {kind_name(kind)}, got {type(value).__name__}")
    return value


def kind_name(kind: type | tuple[type, ...]) -> str:
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


def check_keys(
    ctx: Ctx, table: dict[str, Any], keys: tuple[str | int, ...], allowed: set[str]
) -> None:
    for key in table:
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            raise ctx.error((*keys, key), f"unknown key (expected one of: {hint})")


def enum_value(
    ctx: Ctx, keys: tuple[str | int, ...], value: str, kind: Callable[[str], T], choices: list[str]
) -> T:
    try:
        return kind(value)
    except ValueError:
        raise ctx.error(keys, f"must be one of {', '.join(choices)}, got {value!r}") from None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def secret_source(
    ctx: Ctx, table: dict[str, Any], keys: tuple[str | int, ...], base: Path
) -> Secret:
    env = get_value(ctx, table, keys, "password_env", str, None)
    file = get_value(ctx, table, keys, "password_file", str, None)
    if "password" in table:
        raise ctx.error(
            (*keys, "password"),
            "passwords are never written in the config: use password_env or password_file",
        )
    if env and file:
        raise ctx.error((*keys, "password_file"), "set password_env or password_file, not both")
    return Secret(env=env, file=resolve_path(base, file) if file else None)


def parse_hostport(ctx: Ctx, keys: tuple[str | int, ...], value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ctx.error(keys, f"must look like HOST:PORT, got {value!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def str_list(ctx: Ctx, keys: tuple[str | int, ...], key: str, value: list[Any]) -> list[str]:
    if not all(isinstance(v, str) for v in value):
        raise ctx.error((*keys, key), "must be a list of strings")
    return value


def name_ok(ctx: Ctx, keys: tuple[str | int, ...], name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ctx.error(keys, "names use letters, digits, '_', '-' and '.' (at most 64)")


def positive(ctx: Ctx, keys: tuple[str | int, ...], key: str, value: T) -> T:
    if not value > 0:  # type: ignore[operator]
        raise ctx.error((*keys, key), "must be greater than zero")
    return value


def positive_value(
    ctx: Ctx,
    table: dict[str, Any],
    keys: tuple[str | int, ...],
    key: str,
    kind: type[T],
    default: T,
) -> T:
    """``table[key]`` (or ``default``), of ``kind`` and greater than zero."""
    value: T = get_value(ctx, table, keys, key, kind, default)
    return positive(ctx, keys, key, value)


def non_negative(ctx: Ctx, keys: tuple[str | int, ...], key: str, value: T) -> T:
    if value < 0:  # type: ignore[operator]
        raise ctx.error((*keys, key), "must not be negative")
    return value


def non_negative_value(
    ctx: Ctx,
    table: dict[str, Any],
    keys: tuple[str | int, ...],
    key: str,
    kind: type[T],
    default: T,
) -> T:
    """``table[key]`` (or ``default``), of ``kind`` and not negative."""
    value: T = get_value(ctx, table, keys, key, kind, default)
    return non_negative(ctx, keys, key, value)


def one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(value)
        return value

    return check


log_level_value = one_of("debug", "info", "warning", "error")


def set_names(
    ctx: Ctx,
    table: dict[str, Any],
    keys: tuple[str | int, ...],
    key: str,
    sets: Any,
    what: str,
) -> tuple[str, ...]:
    """A ``key = [...]`` list (or one string) naming sets of ``sets`` (``what``: "rule set",
    "masking set", for the error)."""
    value = get_value(ctx, table, keys, key, (list, str), [])
    items = [value] if isinstance(value, str) else value
    names = tuple(str_list(ctx, keys, key, items))
    for n in names:
        if n not in sets:
            known = ", ".join(sorted(sets)) or "none are defined"
            raise ctx.error((*keys, key), f"no {what} named {n!r} (known: {known})")
    return names


def role_set_names(
    ctx: Ctx,
    table: dict[str, Any],
    keys: tuple[str | int, ...],
    key: str,
    sets: Any,
    what: str,
    targets: tuple[str, ...],
) -> dict[str, tuple[str, ...]]:
    """A role's ``key``: a list (for each of its targets) or a table target -> list."""
    value = table.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        out = {}
        for target, names in value.items():
            if target not in targets:
                raise ctx.error((*keys, key, target), "is not one of this role's targets")
            out[target] = set_names(ctx, {key: names}, (*keys, key), key, sets, what)
        return out
    names_for_all = set_names(ctx, table, keys, key, sets, what)
    return {t: names_for_all for t in targets}
