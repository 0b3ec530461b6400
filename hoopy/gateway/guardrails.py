"""A session's guardrails: which rule sets apply to it, and the verdict on each statement.

The decisions are ``hoopy.policy``'s (sans-IO); this module picks the sets for the session's
target and principal, runs the analysis (in a worker thread for a huge statement:
``offload``); the current database that unqualified table names resolve against is the
session's ``SessionCommands``'.
"""

from __future__ import annotations

import re

from hoopy.config.guardrails import sets_for
from hoopy.config.masking import masking_for
from hoopy.config.model import Config, Target
from hoopy.gateway import offload
from hoopy.gateway.estimates import RowEstimator, explainable
from hoopy.gateway.views import ViewCatalog
from hoopy.identity.principal import Principal
from hoopy.policy.analysis import (
    Analyser,
    Analysis,
    StatementFacts,
    TableRef,
)
from hoopy.policy.masking import MaskingPolicy
from hoopy.policy.rules import Action, GuardrailVerdict, Policy
from hoopy.sql.lexer import MULTIBYTE_CHARSETS, ServerVersion
from hoopy.wire.command import ClientCommand, SessionCommands
from hoopy.wire.response import (
    COM_CREATE_DB,
    COM_DEBUG,
    COM_DROP_DB,
    COM_FIELD_LIST,
    COM_INIT_DB,
    COM_PROCESS_KILL,
    COM_QUERY,
    COM_REFRESH,
    COM_STMT_EXECUTE,
    COM_STMT_PREPARE,
    COMMAND_NAMES,
)


class Policies:
    """One ``Policy`` per combination of sets, shared by every session that has it (so its
    cached verdicts are too), and the gateway's shared ``Analyser``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._analysers: dict[tuple[ServerVersion | None, bool], Analyser] = {}
        self._policies: dict[tuple[str, ...], Policy] = {}
        self._estimators: dict[str, RowEstimator] = {}
        self._masking: dict[tuple[str, tuple[str, ...]], MaskingPolicy | None] = {}
        self._views: dict[str, ViewCatalog] = {}

    def views(self, target: Target) -> ViewCatalog:
        """The view catalog of ``target`` (masking), shared by its sessions."""
        catalog = self._views.get(target.name)
        if catalog is None:
            catalog = self._views[target.name] = ViewCatalog(target)
        return catalog

    def masking(self, target: Target, principal: Principal) -> MaskingPolicy | None:
        """The masking for ``target`` and the principal's roles, shared by every session
        that has the same (so its cached plans are too)."""
        key = (target.name, tuple(principal.roles))
        if key not in self._masking:
            self._masking[key] = masking_for(self.config, target.name, principal.roles)
        return self._masking[key]

    def estimator(self, target: Target) -> RowEstimator:
        """The row estimator for ``target`` (rows_above rules), shared by its sessions."""
        estimator = self._estimators.get(target.name)
        if estimator is None:
            estimator = self._estimators[target.name] = RowEstimator(target)
        return estimator

    async def aclose(self) -> None:
        for estimator in self._estimators.values():
            await estimator.aclose()
        for catalog in self._views.values():
            await catalog.aclose()

    def analyser(self, server: ServerVersion | None, multibyte: bool = False) -> Analyser:
        """The shared analysis cache for targets of this flavour and version (and for
        sessions whose client character set is a multibyte one: lexer.MULTIBYTE_CHARSETS)."""
        analyser = self._analysers.get((server, multibyte))
        if analyser is None:
            analyser = self._analysers[server, multibyte] = Analyser(server, multibyte=multibyte)
        return analyser

    def for_session(self, target: Target, principal: Principal) -> Policy | None:
        names = sets_for(self.config, target.name, principal.roles)
        if not names:
            return None
        policy = self._policies.get(names)
        if policy is None:
            policy = Policy(tuple(self.config.guardrails[n] for n in names))
            self._policies[names] = policy
        return policy


class SessionGuardrails:
    """The session's policy; the current database comes from its ``SessionCommands``."""

    def __init__(
        self,
        policies: Policies,
        policy: Policy,
        server: ServerVersion | None,
        commands: SessionCommands,
        target: Target,
    ) -> None:
        self.policy = policy
        self.policies = policies
        self.server = server
        self._analyser = policies.analyser(server)
        self.commands = commands
        # rows_above rules need EXPLAIN's estimate: those sessions always take ``judge``.
        self.estimator = policies.estimator(target) if policy.estimates_rows else None

    def judge_now(self, command: ClientCommand) -> GuardrailVerdict | None:
        """The verdict on a COM_QUERY or COM_STMT_PREPARE (None for other commands: the
        statements they run were judged when they were prepared), in the event loop: for
        statements under ``offload.OFF_LOOP_BYTES`` (``judge`` takes any). The verdict is
        noted on the command (a prepared statement keeps its PREPARE's)."""
        if command.kind not in JUDGED:
            if command.prepared is not None:
                # COM_STMT_EXECUTE and the rest: the PREPARE's verdict (allow or log: a
                # refused prepare made no statement; review: prepared, and each EXECUTE
                # goes to review; resetting, fetching from or closing it runs nothing new).
                verdict_of_prepare: GuardrailVerdict | None = command.prepared.verdict
                if (
                    verdict_of_prepare is not None
                    and verdict_of_prepare.action is Action.REVIEW
                    and command.kind != COM_STMT_EXECUTE
                ):
                    return None
                return verdict_of_prepare
            facts = _command_facts(command)
            if facts is None:
                return None
            verdict = self.policy.judge(Analysis((facts,), (facts,)), self.commands.database)
            command.verdict = verdict
            return verdict
        sql = command.sql()
        assert sql is not None
        return self._verdict(command, self.analyser(sql))

    @property
    def analyser(self) -> Analyser:
        if self.commands.multibyte:
            return self.policies.analyser(self.server, True)
        return self._analyser

    async def judge(self, command: ClientCommand) -> GuardrailVerdict | None:
        """``judge_now``, with the analysis of a huge statement in a worker thread."""
        if command.kind not in JUDGED:
            return self.judge_now(command)
        analyser = self.analyser
        sql = _sql(command)
        analysis = await offload.run(len(command.payload), lambda: analyser(sql))
        rows = None
        if (
            self.estimator is not None
            and command.kind == COM_QUERY
            and explainable(sql, analysis)
            and self.policy.wants_estimate(analysis.statements[0].kind)
        ):
            rows = await self.estimator.estimate(sql, self.commands.database)
        return self._verdict(command, analysis, rows)

    def _verdict(
        self, command: ClientCommand, analysis: Analysis, rows: int | None = None
    ) -> GuardrailVerdict:
        """The verdict, and what the analysis tells the session's state (noted on the
        command; SessionCommands applies it once the response is in)."""
        database = self.commands.database
        if any(c == "?" or c in MULTIBYTE_CHARSETS for c in analysis.charsets):
            command.switches_multibyte = True
        if command.kind == COM_QUERY:
            command.use_database = analysis.use_database
            command.use_in_several = len(analysis.primary) > 1
            command.use_uncertain = analysis.use_uncertain
            if analysis.use_uncertain or (
                analysis.use_database is not None and len(analysis.statements) > 1
            ):
                # USE a; DELETE FROM t: which database "t" is in depends on where the USE
                # falls, so unqualified names count as unknown.
                database = None
        verdict = self.policy.judge(analysis, database, rows=rows)
        command.verdict = verdict
        command.loads_local = analysis.loads_local
        return verdict


def may_switch_to_multibyte(policies: Policies, command: ClientCommand, multibyte: bool) -> bool:
    """For sessions without guardrails (the audit's redaction reads text too): whether a
    COM_QUERY may set a multibyte client character set. Cheap for every other statement."""
    sql = command.sql()
    if sql is None:
        return False
    if _CHARSET_WORDS.search(sql, 0, CHARSET_SCAN_BYTES) is None:
        return False
    if len(sql) > CHARSET_SCAN_BYTES:
        return True  # too long to read here: assume the worst
    analysis = policies.analyser(None, multibyte)(sql)
    return any(c == "?" or c in MULTIBYTE_CHARSETS for c in analysis.charsets)


# A SET NAMES longer than this is not analysed for its character set (it counts as one).
CHARSET_SCAN_BYTES = 64 * 1024
# NAMES, CHARSET, CHARACTER in any case (classes: re.IGNORECASE costs twice as much here).
_CHARSET_WORDS = re.compile(rb"[nN][aA][mM][eE][sS]|[cC][hH][aA][rR]")

JUDGED = frozenset((COM_QUERY, COM_STMT_PREPARE))
# Commands that do what a statement does, judged as that statement's kind.
_COMMAND_KINDS = {
    COM_CREATE_DB: "create_database",
    COM_DROP_DB: "drop_database",
    COM_REFRESH: "flush",
    COM_PROCESS_KILL: "kill",
    COM_DEBUG: "debug",
    COM_FIELD_LIST: "show",
    COM_INIT_DB: "use",
}


def _command_facts(command: ClientCommand) -> StatementFacts | None:
    """The facts of a command that is not SQL text but acts like a statement."""
    kind = _COMMAND_KINDS.get(command.kind)
    if kind is None:
        return None
    argument = bytes(command.payload[1:]).split(b"\x00", 1)[0].decode("utf-8", "replace")
    name = COMMAND_NAMES[command.kind]
    if command.kind == COM_FIELD_LIST:  # the columns of one table of the current database
        table = frozenset((TableRef(None, argument),))
        return StatementFacts(kind, tables=table, text=f"{name} {argument}")
    if command.kind == COM_INIT_DB:
        return StatementFacts(kind, database=argument or None, text=f"{name} {argument}")
    return StatementFacts(kind, text=name)


def _sql(command: ClientCommand) -> bytes:
    sql = command.sql()
    assert sql is not None
    return sql
