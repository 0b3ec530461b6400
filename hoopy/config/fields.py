"""Typed field readers for the TOML config: each error is located (``file:line: key: why``)."""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hoopy.config.model import Secret

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

T = TypeVar("T")


@dataclass(frozen=True)
class Finding:
    """One problem in a config: where (file, line, dotted key), what, and how bad. Printed
    as ``file:line: key: message``, the same text by ``hoopy serve`` and ``lint-config``."""

    path: Path
    line: int | None
    key: str
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "file": str(self.path),
            "line": self.line,
            "key": self.key,
            "message": self.message,
        }


class ConfigError(Exception):
    """A configuration problem, located: ``file:line: key: what is wrong``; with every
    problem found (``findings``) when the whole file was checked."""

    def __init__(self, message: str, findings: tuple[Finding, ...] = ()) -> None:
        super().__init__(message)
        self.findings = findings


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
        # Every problem found so far (the whole file is read, each entry on its own), and
        # the names of entries that had one: references to them are not reported again.
        self.findings: list[Finding] = []
        self.broken: dict[str, set[str]] = {}

    @contextlib.contextmanager
    def entry(self, kind: str = "", name: str = "") -> Iterator[None]:
        """Read one entry (a target, a rule set...): its first error is recorded and the
        rest of the file is still read. ``kind``/``name`` mark it broken on error."""
        try:
            yield
        except ConfigError as exc:
            if not exc.findings:
                raise  # not a located finding of this file: a bug
            self.findings.extend(exc.findings)
            if kind:
                self.broken.setdefault(kind, set()).add(name)

    def is_broken(self, kind: str, name: str) -> bool:
        return name in self.broken.get(kind, ())

    def known(self, kind: str, names: Iterable[str]) -> list[str]:
        """``names`` and the broken entries of ``kind``: what a misspelt reference meant."""
        return [*names, *sorted(self.broken.get(kind, ()))]

    def report(self, keys: tuple[str | int, ...], message: str, severity: str = "error") -> None:
        """A problem that does not stop the entry being read (an unknown key)."""
        self.findings.append(self.finding(keys, message, severity))

    def raise_errors(self) -> None:
        """Raise every error found, in the order of the file (those without a line last)."""
        errors = tuple(
            sorted(
                (f for f in self.findings if f.severity == "error"),
                key=lambda f: f.line or 1 << 30,
            )
        )
        if errors:
            raise ConfigError("\n".join(str(f) for f in errors), errors)

    def finding(
        self, keys: tuple[str | int, ...], message: str, severity: str = "error"
    ) -> Finding:
        # Indexes of [[array]] entries give the line, not the text: "listeners.target".
        dotted = ".".join(k for k in keys if isinstance(k, str))
        return Finding(self.path, self.line_of(keys), dotted, message, severity)

    def line_of(self, keys: tuple[str | int, ...]) -> int | None:
        """Best-effort line of a dotted key: its table header (the Nth ``[[array]]`` entry
        for an index in ``keys``), then the key inside it."""
        names = [k for k in keys if isinstance(k, str)]
        if not names:
            return None
        index = next((k for k in keys if isinstance(k, int)), 0)
        if len(keys) == 2 and isinstance(keys[1], int):
            names = [*names, ""]  # the entry itself: its header's line
        table, key = names[:-1], names[-1]
        start = 0
        if table:
            header = re.compile(
                r"^\s*\[\[?\s*" + r"\s*\.\s*".join(re.escape(t) for t in table) + r"\s*\]\]?\s*$"
            )
            found_all = [i for i, ln in enumerate(self.lines) if header.match(ln)]
            if not found_all:
                # An inline table or array (``rules = [{...}]``): the line of its key.
                parent = tuple(k for k in keys if isinstance(k, str))[:-1]
                return self.line_of(parent) if parent else None
            found = found_all[min(index, len(found_all) - 1)]
            if not key:
                return found + 1
            start = found + 1
        key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(start, len(self.lines)):
            if table and self.lines[i].lstrip().startswith("["):
                break
            if key_re.match(self.lines[i]):
                return i + 1
        return start if table else None

    def error(self, keys: tuple[str | int, ...], message: str) -> ConfigError:
        found = self.finding(keys, message)
        return ConfigError(str(found), (found,))


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
    """Every unknown key is reported (with the closest known one); reading goes on."""
    for key in table:
        if key not in allowed:
            close = did_you_mean(key, allowed)
            hint = close or f" (expected one of: {', '.join(sorted(allowed))})"
            ctx.report((*keys, key), f"unknown key{hint}")


def enum_value(
    ctx: Ctx, keys: tuple[str | int, ...], value: str, kind: Callable[[str], T], choices: list[str]
) -> T:
    try:
        return kind(value)
    except ValueError:
        hint = did_you_mean(value, choices)
        raise ctx.error(keys, f"must be one of {', '.join(choices)}, got {value!r}{hint}") from None


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
        if n not in sets and not ctx.is_broken(what, n):
            known = ", ".join(sorted(sets)) or "none are defined"
            hint = did_you_mean(n, ctx.known(what, sets)) or f" (known: {known})"
            raise ctx.error((*keys, key), f"no {what} named {n!r}{hint}")
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


def test_cases(
    ctx: Ctx,
    table: dict[str, Any],
    keys: tuple[str | int, ...],
    fields: dict[str, type],
    required: frozenset[str],
) -> list[dict[str, Any]]:
    """A rule's ``tests``: a list of tables with these fields (``hoopy lint-config`` runs
    them; the gateway only checks their shape)."""
    cases: list[dict[str, Any]] = get_value(ctx, table, keys, "tests", list, [])
    for j, case in enumerate(cases):
        ck: tuple[str | int, ...] = (*keys, "tests", j)
        if not isinstance(case, dict):
            shown = ", ".join(f"{f} = ..." for f in sorted(required))
            raise ctx.error(ck, f"each test is a table: {{ {shown} }}")
        check_keys(ctx, case, ck, set(fields))
        for name, kind in fields.items():
            get_value(ctx, case, ck, name, kind, ... if name in required else None)
    return cases
