"""A recorded session judged again under today's rules, without running anything
(``hoopy replay SESSION --policy``): which statements would now get another verdict.

Sans-IO and pure: it reads the session's records (``hoopy.audit.timeline``) and the config.
The rule sets are the ones the session would get today (its target's, and those of the roles
it was recorded with; a COM_CHANGE_USER's outcome changes the principal), or the sets named.
The current database follows the recorded ``USE`` and ``COM_INIT_DB`` that succeeded.

What the record does not keep cannot be judged again: a statement whose text was cut
(``sql_truncated``) is reported as not judged. Redacted literals do not matter (the analysis
never reads a string's content). The target's server version is not in the record, so
executable comments are read both as code and as comments (the strictest reading).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hoopy.config.guardrails import sets_for
from hoopy.config.model import Config
from hoopy.policy.analysis import Analyser
from hoopy.policy.rules import Action, Policy
from hoopy.sql.lexer import MULTIBYTE_CHARSETS

_JUDGED = frozenset(("COM_QUERY", "COM_STMT_PREPARE"))


@dataclass(frozen=True, slots=True)
class Rejudged:
    seq: int
    command: str
    sql: str | None
    recorded: str  # the guardrail verdict recorded: allow, log, deny or review
    recorded_rule: str | None
    verdict: str | None  # today's (None: not judged, see note)
    rule: str | None = None
    message: str = ""
    note: str = ""

    @property
    def changed(self) -> bool:
        if self.verdict is None:
            return False
        if self.verdict != self.recorded:
            return True
        return self.verdict != "allow" and self.rule != self.recorded_rule

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "command": self.command,
            "sql": self.sql,
            "recorded": {"verdict": self.recorded, "rule": self.recorded_rule},
            "now": None
            if self.verdict is None
            else {"verdict": self.verdict, "rule": self.rule, "message": self.message},
            "changed": self.changed,
            **({"note": self.note} if self.note else {}),
        }


def rejudge(
    start: dict[str, Any] | None,
    steps: Iterable[Any],
    config: Config,
    sets: Sequence[str] | None = None,
) -> list[Rejudged]:
    """Each step of the session (``hoopy.audit.timeline.Step``) with today's verdict."""
    start = start or {}
    target = start.get("target")
    principal = start.get("principal") or {}
    database = start.get("database") or None
    # The server is unknown (executable comments are read both ways); the client character
    # set starts as a single-byte-safe one (the record does not keep the handshake's).
    analysers = {False: Analyser(None), True: Analyser(None, multibyte=True)}
    multibyte = False
    policies: dict[tuple[str, ...], Policy | None] = {}

    def policy_for(roles: Iterable[str]) -> Policy | None:
        names = tuple(sets) if sets is not None else sets_for(config, target, roles)
        if names not in policies:
            policies[names] = (
                Policy(tuple(config.guardrails[n] for n in names)) if names else None
            )
        return policies[names]

    roles = list(principal.get("roles") or [])
    out: list[Rejudged] = []
    for step in steps:
        record = step.statement
        command = str(record.get("command", "?"))
        sql = record.get("sql") if isinstance(record.get("sql"), str) else None
        recorded = str(record.get("verdict", "allow"))
        recorded_rule = record.get("rule")
        if recorded in ("deny", "review") and not (
            isinstance(recorded_rule, str) and "/" in recorded_rule
        ):
            # Refused for another reason (an expired token, LOCAL INFILE, ...): the
            # guardrails let it through, as far as the record tells.
            recorded, recorded_rule = "allow", None
        ok = step.outcome is not None and "error" not in step.outcome
        policy = policy_for(roles)
        if command not in _JUDGED or sql is None:
            out.append(Rejudged(step.seq, command, sql, recorded, recorded_rule, None))
        elif record.get("sql_truncated"):
            note = "the recorded text is cut ([audit] max_sql_bytes): not judged"
            out.append(
                Rejudged(step.seq, command, sql, recorded, recorded_rule, None, note=note)
            )
        else:
            analysis = analysers[multibyte](sql.encode("utf-8", "surrogateescape"))
            if any(c == "?" or c in MULTIBYTE_CHARSETS for c in analysis.charsets):
                multibyte = True
            judged_db = database
            if analysis.use_database is not None and len(analysis.statements) > 1:
                judged_db = None
            note = ""
            if policy is None:
                verdict_word, rule, message = "allow", None, ""
            else:
                v = policy.judge(analysis, judged_db)
                verdict_word = v.action.word
                rule = v.rule if v.action is not Action.ALLOW else None
                message = v.message
                if any(policy.wants_estimate(f.kind) for f in analysis.statements):
                    note = "rows_above rules judged without a row estimate (unknown)"
            out.append(
                Rejudged(
                    step.seq,
                    command,
                    sql,
                    recorded,
                    recorded_rule,
                    verdict_word,
                    rule,
                    message,
                    note,
                )
            )
            if command == "COM_QUERY" and analysis.use_uncertain:
                database = None
            elif ok and command == "COM_QUERY" and analysis.use_database is not None:
                database = analysis.use_database
        if ok and command == "COM_INIT_DB" and record.get("argument"):
            database = str(record["argument"])
        if step.outcome is not None and isinstance(step.outcome.get("principal"), dict):
            roles = list(step.outcome["principal"].get("roles") or [])  # COM_CHANGE_USER
    return out
