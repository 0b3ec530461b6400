"""``[guardrails.NAME]`` rule sets, and which sets targets and roles apply (docs/guardrails.md).

The built-in set ``default`` is read from ``hoopy/policy/default_guardrails.toml`` with this
same parser, so what the docs show is what runs.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from hoopy.approvals.policy import ApprovalPolicy
from hoopy.config import fields
from hoopy.config.approvals import POLICY_KEYS, approval_policy
from hoopy.config.fields import (
    Ctx,
    check_keys,
    get_value,
    name_ok,
    non_negative,
    str_list,
    test_cases,
)
from hoopy.config.model import Config
from hoopy.policy.analysis import KINDS
from hoopy.policy.rules import (
    ACTIONS,
    KIND_GROUPS,
    WHERE_VALUES,
    Action,
    Rule,
    RuleSet,
    kind_matches,
)

BUILTIN_SET = "default"
_DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "policy" / "default_guardrails.toml"

_SET_KEYS = {"default", "unparsed", "dynamic_sql", "rules", "description"}
_RULE_KEYS = {
    "name", "action", "message", "kinds", "tables", "where", "limit", "functions",
    "variables", "into_file", "local", "pattern", "rows_above", "approval", "tests",
}


def _action(
    ctx: Ctx, table: dict[str, Any], keys: tuple[str | int, ...], key: str, default: Any = ...
) -> Action:
    word = get_value(ctx, table, keys, key, str, default)
    if isinstance(word, Action):
        return word
    if word not in ACTIONS:
        raise ctx.error((*keys, key), f"must be one of {', '.join(ACTIONS)}, got {word!r}")
    return ACTIONS[word]


def _strings(
    ctx: Ctx, table: dict[str, Any], keys: tuple[str | int, ...], key: str
) -> tuple[str, ...]:
    value = get_value(ctx, table, keys, key, (list, str), [])
    items = [value] if isinstance(value, str) else value
    return tuple(str_list(ctx, keys, key, items))


def _rule_set(
    ctx: Ctx, name: str, body: Any, builtin: bool, approvals: ApprovalPolicy | None
) -> RuleSet:
    keys: tuple[str | int, ...] = ("guardrails", name)
    name_ok(ctx, keys, name)
    if name == BUILTIN_SET and not builtin:
        raise ctx.error(
            keys,
            f"the name {BUILTIN_SET!r} is the built-in set (docs/guardrails.md); give "
            "yours another name and list both where they apply",
        )
    if not isinstance(body, dict):
        raise ctx.error(keys, "must be a table ([guardrails.NAME])")
    check_keys(ctx, body, keys, _SET_KEYS)
    rules = []
    seen: set[str] = set()
    for i, r in enumerate(get_value(ctx, body, keys, "rules", list, [])):
        rkeys: tuple[str | int, ...] = (*keys, "rules", i)
        with ctx.entry("rule set", name):  # each broken rule is reported
            if not isinstance(r, dict):
                raise ctx.error(rkeys, f"must be a table ([[guardrails.{name}.rules]])")
            rule = _rule(ctx, r, rkeys, approvals or ApprovalPolicy())
            if rule.name in seen:
                raise ctx.error((*rkeys, "name"), f"two rules are named {rule.name!r}")
            seen.add(rule.name)
            rules.append(rule)
    return RuleSet(
        name=name,
        rules=tuple(rules),
        default=_action(ctx, body, keys, "default", Action.ALLOW),
        unparsed=_action(ctx, body, keys, "unparsed", Action.DENY),
        dynamic_sql=_action(ctx, body, keys, "dynamic_sql", Action.DENY),
    )


def parse_rule_sets(
    ctx: Ctx,
    table: dict[str, Any],
    *,
    builtin: bool = False,
    approvals: ApprovalPolicy | None = None,
) -> dict[str, RuleSet]:
    """``approvals``: the ``[approvals]`` defaults a rule's ``approval`` table completes."""
    sets: dict[str, RuleSet] = {}
    for name, body in table.items():
        with ctx.entry("rule set", name):
            found = _rule_set(ctx, name, body, builtin, approvals)
            if not ctx.is_broken("rule set", name):
                sets[name] = found
    return sets


def _rule(
    ctx: Ctx, r: dict[str, Any], keys: tuple[str | int, ...], approvals: ApprovalPolicy
) -> Rule:
    check_keys(ctx, r, keys, _RULE_KEYS)
    name = get_value(ctx, r, keys, "name", str)
    name_ok(ctx, (*keys, "name"), name)
    where = get_value(ctx, r, keys, "where", str, None)
    if where is not None and where not in WHERE_VALUES:
        raise ctx.error((*keys, "where"), f"must be one of {', '.join(WHERE_VALUES)}")
    pattern_text = get_value(ctx, r, keys, "pattern", str, None)
    pattern = None
    if pattern_text is not None:
        try:
            pattern = re.compile(pattern_text, re.IGNORECASE)
        except re.error as exc:
            raise ctx.error(
                (*keys, "pattern"), f"is not a valid regular expression: {exc}"
            ) from None
    kinds = tuple(k.lower() for k in _strings(ctx, r, keys, "kinds"))
    rows_above = get_value(ctx, r, keys, "rows_above", int, None)
    if rows_above is not None:
        non_negative(ctx, keys, "rows_above", rows_above)
    for kind in kinds:
        if not any(kind_matches(kind, known) for known in KINDS):
            close = difflib.get_close_matches(kind, sorted(KINDS | set(KIND_GROUPS)), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ctx.error(
                (*keys, "kinds"),
                f"{kind!r} is not a statement kind or group hoopy reports{hint}; "
                "docs/guardrails.md lists them",
            )
    action = _action(ctx, r, keys, "action")
    approval = None
    table = get_value(ctx, r, keys, "approval", dict, None)
    if table is not None:
        akeys = (*keys, "approval")
        if action is not Action.REVIEW:
            raise ctx.error(akeys, 'only a rule with action = "review" is approved')
        check_keys(ctx, table, akeys, POLICY_KEYS)
        approval = approval_policy(ctx, table, akeys, approvals)
    rule = Rule(
        name=name,
        action=action,
        message=get_value(ctx, r, keys, "message", str, ""),
        kinds=kinds,
        tables=tuple(t.lower() for t in _strings(ctx, r, keys, "tables")),
        where=where,
        limit=get_value(ctx, r, keys, "limit", bool, None),
        functions=tuple(f.upper() for f in _strings(ctx, r, keys, "functions")),
        variables=tuple(v.lower() for v in _strings(ctx, r, keys, "variables")),
        into_file=get_value(ctx, r, keys, "into_file", bool, None),
        local=get_value(ctx, r, keys, "local", bool, None),
        pattern=pattern,
        rows_above=rows_above,
        approval=approval,
    )
    test_fields: dict[str, type] = {"sql": str, "verdict": str, "database": str}
    for j, case in enumerate(test_cases(ctx, r, keys, test_fields, frozenset({"sql", "verdict"}))):
        if case["verdict"] not in ACTIONS:
            raise ctx.error(
                (*keys, "tests", j, "verdict"),
                f"must be one of {', '.join(ACTIONS)}, got {case['verdict']!r}",
            )
    conditions = (rule.kinds, rule.tables, rule.functions, rule.variables, rule.pattern)
    flags = (rule.where, rule.limit, rule.into_file, rule.local, rule.rows_above)
    if not any(conditions) and all(f is None for f in flags):
        raise ctx.error(
            keys,
            f"rule {name!r} has no condition, so it matches every statement (use the set's "
            "default for that)",
        )
    return rule


@cache
def builtin_sets() -> dict[str, RuleSet]:
    text = _DEFAULTS_FILE.read_text()
    ctx = Ctx(_DEFAULTS_FILE, text)
    data = tomllib.loads(text)
    sets = parse_rule_sets(ctx, data["guardrails"], builtin=True)
    ctx.raise_errors()
    return sets


def set_names(
    ctx: Ctx, table: dict[str, Any], keys: tuple[str | int, ...], sets: dict[str, RuleSet]
) -> tuple[str, ...]:
    """A ``guardrails = [...]`` list naming sets that exist."""
    return fields.set_names(ctx, table, keys, "guardrails", sets, "rule set")


def role_set_names(
    ctx: Ctx,
    table: dict[str, Any],
    keys: tuple[str | int, ...],
    sets: dict[str, RuleSet],
    targets: tuple[str, ...],
) -> dict[str, tuple[str, ...]]:
    """A role's ``guardrails``: a list (for each of its targets) or a table target -> list."""
    return fields.role_set_names(ctx, table, keys, "guardrails", sets, "rule set", targets)


def sets_for(config: Config, target: str | None, roles: Iterable[str]) -> tuple[str, ...]:
    """The rule sets a session on ``target`` with ``roles`` gets: the target's, then each
    role's for that target, in order, each once (the gateway's choice, and replay's)."""
    names: dict[str, None] = {}
    if target is not None and target in config.targets:
        names.update(dict.fromkeys(config.targets[target].guardrails))
    for role in roles:
        r = config.roles.get(role)
        if r is not None and target is not None:
            names.update(dict.fromkeys(r.guardrails.get(target, ())))
    return tuple(names)
