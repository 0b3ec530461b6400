"""``[masking.NAME]`` sets of masking rules, and which sets targets and roles apply
(docs/masking.md).

```toml
[masking.pii]
hmac_key_env = "HOOPY_MASK_KEY"        # or hmac_key_file; only for strategy = "hmac"

[[masking.pii.rules]]
name = "emails"
columns = ["*.email", "shop.customers.card_number"]
strategy = "hmac"                      # redact | keep_last | hmac | null
```

Targets list sets (``masking = ["pii"]``) for every session; roles add theirs (a list, or a
table target -> list) and may be exempt (``masking_exempt = true`` or a list of targets).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hoopy.audit.redact import Detector
from hoopy.config import fields
from hoopy.config.fields import (
    Ctx,
    check_keys,
    get_value,
    name_ok,
    resolve_path,
    str_list,
    test_cases,
)
from hoopy.config.model import Config, Secret, SecretUnavailable
from hoopy.policy.classifiers import classifiers_named, pattern_classifier
from hoopy.policy.masking import (
    DEFAULT_KEEP,
    DEFAULT_REPLACEMENT,
    ColumnPattern,
    Masker,
    MaskingPolicy,
    MaskingRule,
    MaskingSet,
    Probe,
    Strategy,
)

_SET_KEYS = {"description", "hmac_key_env", "hmac_key_file", "rules"}
_RULE_KEYS = {
    "name", "columns", "strategy", "replacement", "keep", "probe", "classifiers", "patterns",
    "tests",
}  # fmt: skip
# An HMAC key shorter than this is guessable offline from the masked values it keys.
MIN_KEY_BYTES = 16
# Keys stand in when the config is only read (hoopy replay, audit search): never used to mask.
_UNREAD_KEY = b"\x00" * 32


def parse_masking_sets(
    ctx: Ctx, table: dict[str, Any], base: Path
) -> dict[str, MaskingSet]:
    sets: dict[str, MaskingSet] = {}
    for name, body in table.items():
        with ctx.entry("masking set", name):
            found = _masking_set(ctx, name, body, base)
            if not ctx.is_broken("masking set", name):
                sets[name] = found
    return sets


def _masking_set(ctx: Ctx, name: str, body: Any, base: Path) -> MaskingSet:
    keys: tuple[str | int, ...] = ("masking", name)
    name_ok(ctx, keys, name)
    if not isinstance(body, dict):
        raise ctx.error(keys, "must be a table ([masking.NAME])")
    check_keys(ctx, body, keys, _SET_KEYS)
    rules_value = get_value(ctx, body, keys, "rules", list, [])
    if not rules_value:
        raise ctx.error((*keys, "rules"), "a masking set needs at least one [[rules]] entry")
    key: bytes | None = None
    needs_key = any(
        isinstance(r, dict) and r.get("strategy") == Strategy.HMAC.value for r in rules_value
    )
    if needs_key:
        with ctx.entry("masking set", name):
            key = _hmac_key(ctx, body, keys, base)
        key = key or _UNREAD_KEY  # reported above; the rules are still checked
    rules: list[MaskingRule] = []
    seen: set[str] = set()
    for i, r in enumerate(rules_value):
        rkeys: tuple[str | int, ...] = (*keys, "rules", i)
        with ctx.entry("masking set", name):  # each broken rule is reported
            if not isinstance(r, dict):
                raise ctx.error(rkeys, "must be a table ([[masking.NAME.rules]])")
            rule = _rule(ctx, r, rkeys, name, key)
            if rule.name in seen:
                raise ctx.error((*rkeys, "name"), f"a second rule named {rule.name!r} in this set")
            seen.add(rule.name)
            rules.append(rule)
    if not needs_key and ("hmac_key_env" in body or "hmac_key_file" in body):
        raise ctx.error(keys, 'an HMAC key is set, but no rule uses strategy = "hmac"')
    return MaskingSet(name, tuple(rules))


def _rule(
    ctx: Ctx, r: dict[str, Any], keys: tuple[str | int, ...], set_name: str, key: bytes | None
) -> MaskingRule:
    check_keys(ctx, r, keys, _RULE_KEYS)
    name = get_value(ctx, r, keys, "name", str)
    name_ok(ctx, (*keys, "name"), name)
    classifiers = _classifiers(ctx, r, keys)
    columns_value = get_value(ctx, r, keys, "columns", (list, str), ["*"] if classifiers else ...)
    items = [columns_value] if isinstance(columns_value, str) else columns_value
    patterns = []
    for text in str_list(ctx, keys, "columns", items):
        try:
            patterns.append(ColumnPattern.parse(text))
        except ValueError as exc:
            raise ctx.error((*keys, "columns"), str(exc)) from None
    if not patterns:
        raise ctx.error((*keys, "columns"), "list at least one column pattern")
    word = get_value(ctx, r, keys, "strategy", str, Strategy.REDACT.value)
    try:
        strategy = Strategy(word)
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise ctx.error((*keys, "strategy"), f"must be one of {choices}, got {word!r}") from None
    replacement = get_value(ctx, r, keys, "replacement", str, DEFAULT_REPLACEMENT)
    keep = get_value(ctx, r, keys, "keep", int, DEFAULT_KEEP)
    if "replacement" in r and strategy is not Strategy.REDACT:
        raise ctx.error((*keys, "replacement"), 'only strategy = "redact" uses a replacement')
    if "keep" in r and strategy is not Strategy.KEEP_LAST:
        raise ctx.error((*keys, "keep"), 'only strategy = "keep_last" keeps characters')
    if not 0 <= keep <= 64:
        raise ctx.error((*keys, "keep"), f"must be 0 to 64, got {keep}")
    if len(replacement.encode("utf-8")) > 256:
        raise ctx.error((*keys, "replacement"), "must be at most 256 bytes")
    masker = Masker(
        strategy,
        replacement=replacement,
        keep=keep,
        key=key if strategy is Strategy.HMAC else None,
    )
    fields: dict[str, type] = {"value": str, "masked": str, "null": bool, "unmasked": bool}
    for j, case in enumerate(test_cases(ctx, r, keys, fields, frozenset({"value"}))):
        if sum(k in case for k in ("masked", "null", "unmasked")) > 1:
            raise ctx.error(
                (*keys, "tests", j), "give at most one of masked, null and unmasked"
            )
        if "masked" in case and strategy is Strategy.HMAC:
            raise ctx.error(
                (*keys, "tests", j, "masked"),
                "an hmac stand-in depends on the key, which linting does not read: omit "
                "masked (the test then checks that the value is masked)",
            )
    probe_word = get_value(ctx, r, keys, "probe", str, Probe.ALLOW.value)
    try:
        probe = Probe(probe_word)
    except ValueError:
        message = f'must be "allow" or "deny", got {probe_word!r}'
        raise ctx.error((*keys, "probe"), message) from None
    return MaskingRule(f"{set_name}/{name}", tuple(patterns), masker, probe, classifiers)


def _classifiers(ctx: Ctx, r: dict[str, Any], keys: tuple[str | int, ...]) -> tuple[Detector, ...]:
    """A rule's ``classifiers`` (built-in names and groups) and ``patterns`` (regexes)."""
    names = str_list(ctx, keys, "classifiers", get_value(ctx, r, keys, "classifiers", list, []))
    try:
        found = list(classifiers_named(names))
    except ValueError as exc:
        raise ctx.error((*keys, "classifiers"), str(exc)) from None
    patterns = str_list(ctx, keys, "patterns", get_value(ctx, r, keys, "patterns", list, []))
    for i, pattern in enumerate(patterns):
        try:
            found.append(pattern_classifier(i, pattern))
        except ValueError as exc:
            raise ctx.error((*keys, "patterns"), str(exc)) from None
    if ("classifiers" in r or "patterns" in r) and not found:
        raise ctx.error((*keys, "classifiers"), "lists no classifier")
    return tuple(found)


def _hmac_key(ctx: Ctx, body: dict[str, Any], keys: tuple[str | int, ...], base: Path) -> bytes:
    env = get_value(ctx, body, keys, "hmac_key_env", str, None)
    file = get_value(ctx, body, keys, "hmac_key_file", str, None)
    if (env is None) == (file is None):
        raise ctx.error(
            keys,
            'strategy = "hmac" needs a key: set hmac_key_env or hmac_key_file (one of them); '
            "the same key gives the same stand-ins, so joins on masked values keep working",
        )
    path = resolve_path(base, file) if file else None
    if path is not None:
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            where = (*keys, "hmac_key_file")
            raise ctx.error(where, f"cannot read {path}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
            raise ctx.error(
                (*keys, "hmac_key_file"),
                f"{path} is open to other users (mode {stat.S_IMODE(mode):04o}): whoever reads "
                "the key can test guesses of masked values; chmod 600 it",
            )
    if not ctx.read_masking_keys:
        return _UNREAD_KEY
    try:
        key = Secret(env=env, file=path).read()
    except SecretUnavailable as exc:
        which = "hmac_key_env" if env else "hmac_key_file"
        raise ctx.error((*keys, which), f"the masking key cannot be read: {exc}") from None
    if len(key) < MIN_KEY_BYTES:
        which = "hmac_key_env" if env else "hmac_key_file"
        raise ctx.error(
            (*keys, which),
            f"the masking key is {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes "
            "(e.g. openssl rand -hex 32)",
        )
    return key


def set_names(
    ctx: Ctx, table: dict[str, Any], keys: tuple[str | int, ...], sets: dict[str, MaskingSet]
) -> tuple[str, ...]:
    """A ``masking = [...]`` list naming sets that exist."""
    return fields.set_names(ctx, table, keys, "masking", sets, "masking set")


def role_set_names(
    ctx: Ctx,
    table: dict[str, Any],
    keys: tuple[str | int, ...],
    sets: dict[str, MaskingSet],
    targets: tuple[str, ...],
) -> dict[str, tuple[str, ...]]:
    """A role's ``masking``: a list (for each of its targets) or a table target -> list."""
    return fields.role_set_names(ctx, table, keys, "masking", sets, "masking set", targets)


def masking_for(config: Config, target: str, roles: Iterable[str]) -> MaskingPolicy | None:
    """The masking a session on ``target`` with ``roles`` gets: the target's sets, then each
    role's for that target, rules in that order, each set once; None when no set applies or
    one of the roles is exempt on this target (the gateway's choice, and replay's)."""
    roles = tuple(roles)
    names: dict[str, None] = {}
    t = config.targets.get(target)
    if t is not None:
        names.update(dict.fromkeys(t.masking))
    for role in roles:
        r = config.roles.get(role)
        if r is None:
            continue
        if target in r.masking_exempt:
            return None
        names.update(dict.fromkeys(r.masking.get(target, ())))
    rules = tuple(rule for n in names for rule in config.masking[n].rules)
    return MaskingPolicy(rules) if rules else None


def exempt_targets(
    ctx: Ctx, table: dict[str, Any], keys: tuple[str | int, ...], targets: tuple[str, ...]
) -> tuple[str, ...]:
    """A role's ``masking_exempt``: true (all its targets), false, or a list of targets."""
    value = get_value(ctx, table, keys, "masking_exempt", (bool, list), False)
    if isinstance(value, bool):
        return targets if value else ()
    names = tuple(str_list(ctx, keys, "masking_exempt", value))
    for n in names:
        if n not in targets:
            raise ctx.error((*keys, "masking_exempt"), f"{n!r} is not one of this role's targets")
    return names
