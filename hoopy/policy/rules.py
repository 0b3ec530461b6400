"""Guardrail rules and verdicts: which statements run, which are flagged, denied or held.

Sans-IO and pure. A ``RuleSet`` is an ordered list of ``Rule``s with a default action; a
``Policy`` is the sets that apply to one session (its target's, and its roles' for that
target). ``Policy.judge(analysis, database)`` gives the ``GuardrailVerdict`` of a text:

- within a set, the first rule that matches a statement decides it, else the set's
  ``default``; a statement hoopy could not read gets at least the set's ``unparsed`` action,
  dynamic SQL whose text is unknown (``PREPARE s FROM @q``) at least its ``dynamic_sql``;
- across sets, statements, readings and the texts of dynamic SQL, the strictest action wins
  (deny > review > log > allow), so one denied statement denies the whole COM_QUERY.

A condition on a fact the analysis does not have (the tables of a statement hoopy could not
parse, the schema of an unqualified table when the session has no current database) counts
as met for a rule that denies, reviews or logs, and as not met for a rule that allows: an
unknown never lets a statement through that a rule would stop.
"""

from __future__ import annotations

import enum
import fnmatch
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from hoopy.approvals.policy import ApprovalPolicy
from hoopy.policy.analysis import Analysis, StatementFacts, TableRef, all_statements


class Action(enum.IntEnum):
    """What happens to a statement, in order of strictness."""

    ALLOW = 0
    LOG = 1  # allowed, and flagged in the audit record
    REVIEW = 2  # held for a human (hoopy.approvals); refused when approvals are off
    DENY = 3

    @property
    def word(self) -> str:
        return self.name.lower()


ACTIONS = {a.word: a for a in Action}

# Kind groups a rule may name instead of (or with) kinds and kind globs.
KIND_GROUPS: dict[str, frozenset[str]] = {
    "dml": frozenset(("insert", "replace", "update", "delete", "load_data")),
    "read": frozenset(("select", "show", "explain", "handler")),
    "account_management": frozenset(
        (
            "grant", "revoke", "create_user", "alter_user", "drop_user", "rename_user",
            "create_role", "drop_role", "set_password", "set_default_role", "set_role",
        )
    ),
    "ddl": frozenset(("truncate", "rename_table")),  # and every create_*, alter_*, drop_*
    "dynamic_sql": frozenset(("prepare", "execute", "execute_immediate", "deallocate")),
}
_DDL_PREFIXES = ("create_", "alter_", "drop_")
_ACCOUNT_OBJECTS = frozenset(("user", "role"))

WHERE_VALUES = ("missing", "trivial", "missing_or_trivial", "present")
# The kinds EXPLAIN estimates rows for (a rows_above rule matches no other kind).
ROW_ESTIMATE_KINDS = frozenset(("select", "insert", "replace", "update", "delete"))


def kind_matches(pattern: str, kind: str) -> bool:
    """A rule's kind entry (a kind, a glob such as ``create_*``, or a group) against a kind."""
    if pattern == kind:
        return True
    if pattern == "ddl":
        return kind in KIND_GROUPS["ddl"] or (
            kind.startswith(_DDL_PREFIXES) and kind.split("_", 1)[1] not in _ACCOUNT_OBJECTS
        )
    group = KIND_GROUPS.get(pattern)
    if group is not None:
        return kind in group
    return fnmatch.fnmatchcase(kind, pattern)


@dataclass(frozen=True, slots=True)
class Rule:
    """Every condition given must hold; a list condition holds when any entry matches."""

    name: str
    action: Action
    message: str = ""
    kinds: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()  # globs on "schema.table" (or "table": any schema)
    where: str | None = None  # one of WHERE_VALUES: UPDATE and DELETE only
    limit: bool | None = None
    functions: tuple[str, ...] = ()  # globs, upper case
    variables: tuple[str, ...] = ()  # globs on "scope.name" (or "name": any system scope)
    into_file: bool | None = None
    local: bool | None = None  # LOAD DATA LOCAL
    pattern: re.Pattern[str] | None = None  # on the normalized text (literals as ?)
    # The rows EXPLAIN estimates the statement examines exceed this (ROW_ESTIMATE_KINDS).
    rows_above: int | None = None
    # review: how the approval works (None: the [approvals] defaults).
    approval: ApprovalPolicy | None = None

    def matches(
        self, facts: StatementFacts, database: str | None, rows: int | None = None
    ) -> bool:
        # Unknown facts meet the condition unless the rule allows (module docstring).
        unknown_meets = self.action is not Action.ALLOW
        if self.kinds and not any(kind_matches(k, facts.kind) for k in self.kinds):
            return False
        if self.where is not None:
            if facts.kind not in ("update", "delete"):
                return False
            if facts.where is None:  # not parsed
                if not unknown_meets:
                    return False
            elif not _where_matches(self.where, facts.where):
                return False
        if (
            self.limit is not None
            and facts.limit != self.limit
            and (facts.parsed or not unknown_meets)
        ):
            return False
        if self.into_file is not None and facts.into_file != self.into_file:
            return False
        if self.local is not None and facts.local != self.local:
            return False
        if self.functions and not any(
            fnmatch.fnmatchcase(f, g) for f in facts.functions for g in self.functions
        ):
            return False
        if self.variables and not any(
            _variable_matches(g, v.scope, v.name) for v in facts.variables for g in self.variables
        ):
            return False
        if self.tables and not self._tables_match(facts, database, unknown_meets):
            return False
        if self.rows_above is not None:
            if facts.kind not in ROW_ESTIMATE_KINDS:
                return False
            if rows is None:  # no estimate: unknown
                if not unknown_meets:
                    return False
            elif rows <= self.rows_above:
                return False
        return self.pattern is None or self.pattern.search(facts.text) is not None

    def _tables_match(self, facts: StatementFacts, database: str | None, unknown: bool) -> bool:
        if not facts.tables_known:
            return unknown
        for table in facts.tables:
            name = _qualified(table, database)
            if name is None:
                if unknown:
                    return True
                continue
            if any(_table_glob(g, name) for g in self.tables):
                return True
        return False


def _where_matches(wanted: str, where: str) -> bool:
    if wanted == "missing_or_trivial":
        return where in ("missing", "trivial")
    return wanted == where


def _variable_matches(glob: str, scope: str, name: str) -> bool:
    if "." in glob:
        return fnmatch.fnmatchcase(f"{scope}.{name}", glob)
    return scope != "user" and fnmatch.fnmatchcase(name, glob)


def _qualified(table: TableRef, database: str | None) -> str | None:
    schema = table.schema or database
    if schema is None:
        return None
    return f"{schema}.{table.name}".lower()


def _table_glob(glob: str, qualified: str) -> bool:
    if "." not in glob:
        return fnmatch.fnmatchcase(qualified.split(".", 1)[1], glob)
    return fnmatch.fnmatchcase(qualified, glob)


@dataclass(frozen=True, slots=True)
class RuleSet:
    name: str
    rules: tuple[Rule, ...] = ()
    default: Action = Action.ALLOW
    unparsed: Action = Action.DENY  # a statement hoopy cannot read
    dynamic_sql: Action = Action.DENY  # PREPARE ... FROM @variable, EXECUTE IMMEDIATE @v


@dataclass(frozen=True, slots=True)
class GuardrailVerdict:
    action: Action
    rule: str | None = None  # "set/rule", "set/default", "set/unparsed", "set/dynamic_sql"
    message: str = ""
    approval: ApprovalPolicy | None = None  # review: the rule's (None: the defaults)

    @property
    def refused(self) -> bool:
        return self.action >= Action.REVIEW


ALLOWED = GuardrailVerdict(Action.ALLOW)


def _judge_statement(
    rule_set: RuleSet, facts: StatementFacts, database: str | None, rows: int | None
) -> GuardrailVerdict:
    verdict = GuardrailVerdict(rule_set.default, f"{rule_set.name}/default")
    for rule in rule_set.rules:
        if rule.matches(facts, database, rows):
            verdict = GuardrailVerdict(
                rule.action, f"{rule_set.name}/{rule.name}", rule.message, rule.approval
            )
            break
    if not facts.parsed and rule_set.unparsed > verdict.action:
        verdict = GuardrailVerdict(
            rule_set.unparsed,
            f"{rule_set.name}/unparsed",
            "hoopy cannot read this statement, so it cannot tell what it would do",
        )
    if facts.dynamic_unknown and rule_set.dynamic_sql > verdict.action:
        verdict = GuardrailVerdict(
            rule_set.dynamic_sql,
            f"{rule_set.name}/dynamic_sql",
            "dynamic SQL from a variable cannot be judged before it runs",
        )
    return verdict


_policy_ids = itertools.count(1)


@dataclass(frozen=True, slots=True, eq=False)
class Policy:
    """The rule sets that apply to a session; verdicts are cached on the analyses."""

    sets: tuple[RuleSet, ...]
    token: int = field(default_factory=lambda: next(_policy_ids))

    @property
    def estimates_rows(self) -> bool:
        """Whether a rule of these sets needs the row estimate (``rows_above``)."""
        return any(r.rows_above is not None for s in self.sets for r in s.rules)

    def wants_estimate(self, kind: str) -> bool:
        """Whether a ``rows_above`` rule may apply to a statement of this kind."""
        return kind in ROW_ESTIMATE_KINDS and any(
            r.rows_above is not None
            and (not r.kinds or any(kind_matches(k, kind) for k in r.kinds))
            for s in self.sets
            for r in s.rules
        )

    def judge(
        self, analysis: Analysis, database: str | None, *, rows: int | None = None
    ) -> GuardrailVerdict:
        """The verdict. ``rows``: EXPLAIN's estimate for the text's one statement (None:
        none, which ``rows_above`` rules treat as unknown). Verdicts without an estimate
        are cached on the analysis."""
        if rows is not None:
            return self._judge(all_statements(analysis), database, rows)
        key = (self.token, database)
        cached: GuardrailVerdict | None = analysis.verdicts.get(key)
        if cached is not None:
            return cached
        verdict = self._judge(all_statements(analysis), database, None)
        if len(analysis.verdicts) < _VERDICTS_PER_ANALYSIS:
            analysis.verdicts[key] = verdict
        return verdict

    def _judge(
        self, statements: Iterable[StatementFacts], database: str | None, rows: int | None
    ) -> GuardrailVerdict:
        strictest = ALLOWED
        for facts in statements:
            for rule_set in self.sets:
                verdict = _judge_statement(rule_set, facts, database, rows)
                if verdict.action > strictest.action or (
                    strictest is ALLOWED and verdict.action is Action.ALLOW
                ):
                    strictest = verdict
                if strictest.action is Action.DENY:
                    return strictest
        return strictest


# Verdicts kept per analysis (one per policy and database): bounded against a session that
# cycles through databases.
_VERDICTS_PER_ANALYSIS = 64
