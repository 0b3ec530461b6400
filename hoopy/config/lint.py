"""``hoopy lint-config``: every problem of a config file, without starting the gateway.

``lint`` reads the file as ``hoopy serve`` does (config/loader.py, which reports every entry's
errors in one run) but without reading secrets, then checks what the loader cannot see alone:

- secrets named by environment variable that are not set (a warning: the shell that lints is
  often not the one that serves), files the config points to that are missing, and secret
  files other users can read;
- listeners that would take the same address;
- guardrail rules that can never match, or that an earlier rule of their set always matches
  first (rules are first-match within a set);
- rule and masking sets nothing uses, roles that grant nothing, users no role takes in,
  targets no listener serves.

Each finding is a ``Finding`` (config/fields.py): file, line, dotted key, message, severity.
``serve_errors`` is the part ``hoopy serve`` refuses to start on.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hoopy.config.fields import ConfigError, Ctx, Finding
from hoopy.config.loader import available_cores, build_config
from hoopy.config.model import Config
from hoopy.policy.rules import Action, Rule, RuleSet

# Keys whose value names a file hoopy reads (relative paths: from the config's directory):
# True for those ``hoopy serve`` reads as it starts (missing: an error), False for those read
# when first needed (a JWKS at the first login, a CA at the first connection: a warning).
_FILE_KEYS = {
    "hmac_key_file": True,
    "key_file": True,
    "tls_cert": True,
    "tls_key": True,
    "server_public_key": True,
    "password_file": True,
    "jwks_file": False,
    "tls_ca": False,
}
# Of those, the ones holding a secret: nobody but hoopy's user should read them.
_SECRET_FILE_KEYS = frozenset({"password_file", "hmac_key_file", "key_file", "tls_key"})
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
_TOML_LINE = re.compile(r"at line (\d+)")


@dataclass
class LintReport:
    path: Path
    findings: list[Finding] = field(default_factory=list)
    config: Config | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def exit_code(self, *, strict: bool) -> int:
        """0 clean, 1 errors, 2 warnings only (with ``strict``)."""
        if self.errors:
            return 1
        return 2 if strict and self.warnings else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.to_json() for f in self.findings],
        }


def lint(path: Path, *, environ: dict[str, str] | None = None) -> LintReport:
    """Every problem of the config at ``path`` (see the module docstring)."""
    environ = dict(os.environ) if environ is None else environ
    report = LintReport(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        report.findings.append(Finding(path, None, "", f"cannot read the config: {why}"))
        return report
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _TOML_LINE.search(str(exc))
        report.findings.append(
            Finding(path, int(line.group(1)) if line else None, "", f"not valid TOML: {exc}")
        )
        return report
    ctx = Ctx(path, text, read_secrets=False)
    try:
        report.config = build_config(data, path, text, read_secrets=False)
    except ConfigError as exc:
        report.findings.extend(exc.findings or [Finding(path, None, "", str(exc))])
    reported = {f.key for f in report.findings}  # a key the loader faulted is not faulted twice
    report.findings.extend(
        f for f in _raw_findings(ctx, data, path.parent.resolve(), environ) if f.key not in reported
    )
    if report.config is not None:
        report.findings.extend(_config_findings(ctx, report.config, data))
    report.findings.sort(key=lambda f: (f.line or 1 << 30, f.severity != "error"))
    return report


def serve_errors(config: Config) -> list[Finding]:
    """What ``hoopy serve`` refuses to start on beyond what loading checks, with the text
    ``lint-config`` gives it: listeners that would take the same address, rule test cases
    that fail, files the config names that are missing."""
    try:
        text = config.path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError):
        text, data = "", {}
    ctx = Ctx(config.path, text, read_secrets=False)
    found = [
        *_listener_conflicts(ctx, config),
        *_rule_test_findings(ctx, config, data),
        *_raw_findings(ctx, data, config.path.parent.resolve(), dict(os.environ)),
    ]
    return [f for f in found if f.severity == "error"]


# --- the file as written ------------------------------------------------------------------


def _walk(
    value: Any, keys: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*keys, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*keys, i))
    else:
        yield keys, value


def _raw_findings(
    ctx: Ctx, data: dict[str, Any], base: Path, environ: dict[str, str]
) -> Iterator[Finding]:
    for keys, value in _walk(data):
        key = keys[-1] if keys and isinstance(keys[-1], str) else ""
        if not isinstance(value, str) or not value:
            continue
        if key.endswith("_env") and value not in environ:
            yield ctx.finding(
                keys,
                f"the environment variable {value} is not set here; it must be where hoopy "
                "serve runs (it holds a secret hoopy reads)",
                "warning",
            )
        elif key in _FILE_KEYS:
            path = Path(value).expanduser()
            path = path if path.is_absolute() else base / path
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                if _FILE_KEYS[key]:
                    yield ctx.finding(keys, f"{path} does not exist: hoopy serve reads it to start")
                else:
                    yield ctx.finding(
                        keys, f"{path} does not exist (yet): what needs it fails until it does",
                        "warning",
                    )  # fmt: skip
                continue
            except OSError as exc:
                yield ctx.finding(keys, f"cannot read {path}: {exc.strerror}")
                continue
            if key in _SECRET_FILE_KEYS and mode & (stat.S_IRWXG | stat.S_IRWXO):
                yield ctx.finding(
                    keys,
                    f"{path} holds a secret and other users can read it (mode "
                    f"{stat.S_IMODE(mode):04o}): chmod 600 it",
                    "warning",
                )


# --- the config as loaded -----------------------------------------------------------------


def _config_findings(ctx: Ctx, config: Config, data: dict[str, Any]) -> Iterator[Finding]:
    yield from _listener_conflicts(ctx, config)
    yield from _worker_findings(ctx, config, data)
    yield from _rule_test_findings(ctx, config, data)
    for name, rule_set in config.guardrails.items():
        if name in (data.get("guardrails") or {}):
            yield from _rule_findings(ctx, rule_set)
    used_sets = _used_rule_sets(config)
    for name in data.get("guardrails") or {}:
        if name not in used_sets:
            yield ctx.finding(
                ("guardrails", name),
                "no target or role uses this rule set (list it in a target's or role's guardrails)",
                "warning",
            )
    used_masks = {s for t in config.targets.values() for s in t.masking}
    used_masks |= {s for r in config.roles.values() for sets in r.masking.values() for s in sets}
    for name in config.masking:
        if name not in used_masks:
            yield ctx.finding(
                ("masking", name),
                "no target or role uses this masking set: it masks nothing",
                "warning",
            )
    for name, role in config.roles.items():
        if not role.targets:
            yield ctx.finding(("roles", name, "targets"), "the role grants no target", "warning")
    role_groups = {g for r in config.roles.values() for g in r.groups}
    for name, user in config.users.items():
        if not set(user.groups) & role_groups:
            yield ctx.finding(
                ("users", name, "groups"),
                "no role matches this user's groups: the user can log in to nothing",
                "warning",
            )
    served = {lst.target for lst in config.listeners}
    for name in config.targets:
        if name not in served:
            yield ctx.finding(("targets", name), "no listener serves this target", "warning")


def _worker_findings(ctx: Ctx, config: Config, data: dict[str, Any]) -> Iterator[Finding]:
    workers = config.gateway.workers
    if workers <= 1:
        return
    cores = available_cores()
    if workers > cores:
        yield ctx.finding(
            ("gateway", "workers"),
            f"{workers} workers on {cores} cores: they take turns on the same cores, which "
            'only adds memory and context switches (use "auto")',
            "warning",
        )


def _used_rule_sets(config: Config) -> set[str]:
    """The guardrail rule sets some target or role applies."""
    used = {s for t in config.targets.values() for s in t.guardrails}
    used |= {s for r in config.roles.values() for sets in r.guardrails.values() for s in sets}
    return used


def _listener_conflicts(ctx: Ctx, config: Config) -> Iterator[Finding]:
    seen_tcp: dict[tuple[str, int], str] = {}
    seen_sockets: dict[Path, str] = {}
    for i, lst in enumerate(config.listeners):
        if lst.tcp is not None:
            host, port = lst.tcp
            for (other_host, other_port), other in seen_tcp.items():
                if (
                    port == other_port
                    and port != 0
                    and (
                        host == other_host
                        or host in _WILDCARD_HOSTS
                        or other_host in _WILDCARD_HOSTS
                    )
                ):
                    yield ctx.finding(
                        ("listeners", i, "tcp"),
                        f"{host}:{port} is also taken by listener {other!r}: give each "
                        "listener its own port",
                    )
                    break
            seen_tcp[(host, port)] = lst.name
        if lst.unix_socket is not None:
            if lst.unix_socket in seen_sockets:
                yield ctx.finding(
                    ("listeners", i, "unix_socket"),
                    f"{lst.unix_socket} is also listener {seen_sockets[lst.unix_socket]!r}'s",
                )
            seen_sockets[lst.unix_socket] = lst.name


def _rule_findings(ctx: Ctx, rule_set: RuleSet) -> Iterator[Finding]:
    for i, rule in enumerate(rule_set.rules):
        keys: tuple[str | int, ...] = ("guardrails", rule_set.name, "rules", i)
        if rule.where is not None and rule.kinds and not {"update", "delete"} & set(rule.kinds):
            yield ctx.finding(
                (*keys, "where"),
                f"rule {rule.name!r} can never match: where applies to UPDATE and DELETE only, "
                f"and its kinds are {', '.join(rule.kinds)}",
                "warning",
            )
        for earlier in rule_set.rules[:i]:
            if _covers(earlier, rule):
                yield ctx.finding(
                    (*keys, "name"),
                    f"rule {rule.name!r} is never reached: rule {earlier.name!r} before it "
                    "matches every statement it would (the first matching rule of a set "
                    "decides)",
                    "warning",
                )
                break


def _covers(a: Rule, b: Rule) -> bool:
    """Whether every statement ``b`` matches is matched by ``a`` (conservatively: only when
    each condition ``a`` sets, ``b`` sets as narrowly or more)."""

    def within(mine: tuple[str, ...], theirs: tuple[str, ...]) -> bool:
        return not mine or (bool(theirs) and set(theirs) <= set(mine))

    def same(mine: object, theirs: object) -> bool:
        return mine is None or mine == theirs

    if a.action is Action.ALLOW and b.action is not Action.ALLOW:
        # Facts hoopy could not read meet a refusing rule's conditions, not an allowing
        # one's (policy/rules.py): b may still catch what a lets through.
        return False
    return (
        within(a.kinds, b.kinds)
        and within(a.tables, b.tables)
        and within(a.functions, b.functions)
        and within(a.variables, b.variables)
        and same(a.where, b.where)
        and same(a.limit, b.limit)
        and same(a.into_file, b.into_file)
        and same(a.local, b.local)
        and (
            a.pattern is None or (b.pattern is not None and a.pattern.pattern == b.pattern.pattern)
        )
        and (a.rows_above is None or (b.rows_above is not None and b.rows_above >= a.rows_above))
    )


# --- inline test cases --------------------------------------------------------------------


def _rule_test_findings(ctx: Ctx, config: Config, data: dict[str, Any]) -> Iterator[Finding]:
    """Run the ``tests`` of guardrail and masking rules (checked for shape by the loader)."""
    from hoopy.policy.analysis import analyse
    from hoopy.policy.rules import Policy

    for set_name, body in (data.get("guardrails") or {}).items():
        rule_set = config.guardrails.get(set_name)
        if rule_set is None or not isinstance(body, dict):
            continue
        policy = Policy((rule_set,))
        for i, r in enumerate(body.get("rules") or []):
            for j, case in enumerate(r.get("tests") or [] if isinstance(r, dict) else []):
                sql, want = case["sql"], case["verdict"]
                verdict = policy.judge(analyse(sql.encode("utf-8")), case.get("database"))
                if verdict.action.word != want:
                    yield ctx.finding(
                        ("guardrails", set_name, "rules", i, "tests", j),
                        f"test failed: {sql!r} must get {want}, got {verdict.action.word} "
                        f"(by {verdict.rule or 'no rule'})",
                    )
    for set_name, body in (data.get("masking") or {}).items():
        masking_set = config.masking.get(set_name)
        if masking_set is None or not isinstance(body, dict):
            continue
        for i, r in enumerate(body.get("rules") or []):
            if not isinstance(r, dict) or i >= len(masking_set.rules):
                continue
            rule = masking_set.rules[i]
            for j, case in enumerate(r.get("tests") or []):
                keys = ("masking", set_name, "rules", i, "tests", j)
                problem = _masking_case(rule, case)
                if problem:
                    yield ctx.finding(keys, f"test failed: {problem}")


def _masking_case(rule: Any, case: dict[str, Any]) -> str | None:
    """What is wrong with one masking test case, or None."""
    from hoopy.policy.classifiers import classify
    from hoopy.policy.masking import MaskingError
    from hoopy.wire.rows import ColumnDefinition

    value: str = case["value"]
    # A VARCHAR in utf8mb4, the column a test's value is masked as.
    column = ColumnDefinition(b"def", b"test", b"t", b"t", b"c", b"c", 45, 255, 0xFD, 0, 0)
    if rule.classifying and classify(value, rule.classifiers) is None:
        got: str | None = value  # no classifier finds anything: the value passes unmasked
    else:
        try:
            masked = rule.masker.mask_text(column, value.encode("utf-8"))
        except MaskingError as exc:
            return f"{value!r} cannot be masked: {exc}"
        got = None if masked is None else masked.decode("utf-8", "replace")
    shown = "NULL" if got is None else repr(got)
    if case.get("unmasked"):
        return None if got == value else f"{value!r} must pass unmasked, got {shown}"
    if case.get("null"):
        return None if got is None else f"{value!r} must become NULL, got {shown}"
    if "masked" in case:
        return None if got == case["masked"] else (
            f"{value!r} must become {case['masked']!r}, got {shown}"
        )
    return None if got != value else f"{value!r} must be masked, but it passes unmasked"


# --- online: against the targets ----------------------------------------------------------

ONLINE_TIMEOUT = 10.0
_COLUMNS_QUERY = (
    b"\x03SELECT LOWER(TABLE_SCHEMA), LOWER(TABLE_NAME), LOWER(COLUMN_NAME) "
    b"FROM information_schema.COLUMNS "
    b"WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')"
)


def online_findings(report: LintReport) -> list[Finding]:
    """Connect to each target with hoopy's account: the credential works, TLS verifies as
    configured, and every masking rule's column pattern names a column that exists there."""
    import trio

    config = report.config
    if config is None:
        return []
    try:
        text = config.path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    ctx = Ctx(config.path, text, read_secrets=False)
    found: list[Finding] = []

    async def check_all() -> None:
        for name, target in config.targets.items():
            found.extend(await _check_target(ctx, config, name, target))

    trio.run(check_all)
    return found


async def _check_target(ctx: Ctx, config: Config, name: str, target: Any) -> list[Finding]:
    import trio

    from hoopy.config.model import LoginMode
    from hoopy.gateway.replay import ReplayConnection
    from hoopy.gateway.upstream import UpstreamError
    from hoopy.wire.packets import ProtocolError
    from hoopy.wire.resultset import decode_text_result

    keys: tuple[str | int, ...] = ("targets", name)
    if target.login is LoginMode.PASSTHROUGH:
        return [ctx.finding(keys, "passthrough: hoopy has no account here, nothing to check "
                                  "online", "warning")]  # fmt: skip
    connection = None
    try:
        with trio.fail_after(ONLINE_TIMEOUT):
            connection = await ReplayConnection.open(
                target, database=None, recorded_capabilities=0, session="-",
                program=b"hoopy-lint",
            )  # fmt: skip
            summary, raw = await connection.request_raw(_COLUMNS_QUERY)
    except trio.TooSlowError:
        return [ctx.finding(keys, f"no answer from {target.address()} within "
                                  f"{ONLINE_TIMEOUT:g}s")]  # fmt: skip
    except (UpstreamError, OSError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        return [ctx.finding(keys, f"cannot log in with hoopy's account: {message}")]
    finally:
        if connection is not None:
            await connection.aclose()
    if summary.error is not None:
        return [ctx.finding(keys, f"cannot read information_schema.COLUMNS: "
                                  f"{summary.error.message}", "warning")]  # fmt: skip
    try:
        rows = decode_text_result(raw).rows
    except ProtocolError as exc:
        return [ctx.finding(keys, f"unreadable column list: {exc}", "warning")]
    columns = [tuple((v or b"").decode("utf-8", "replace") for v in row) for row in rows]
    out = []
    sets = set(target.masking)
    sets |= {s for r in config.roles.values() for s in r.masking.get(name, ())}
    for set_name in sorted(sets):
        for i, rule in enumerate(config.masking[set_name].rules):
            if rule.classifying:
                continue  # classifiers look at values, not names
            for pattern in rule.columns:
                if not any(pattern.matches(s, t, c) for s, t, c in columns):
                    out.append(
                        ctx.finding(
                            ("masking", set_name, "rules", i, "columns"),
                            f"no column of target {name!r} matches {str(pattern)!r} (hoopy's "
                            "account sees no such column: misspelt, or not granted to it)",
                            "warning",
                        )
                    )
    return out
