"""Re-running a recorded session against a target (``hoopy replay SESSION --execute``).

hoopy logs into the chosen target with its own credentials for that target (the operator's
choice, never the recorded caller's), with the client capabilities the recorded session had
(so affected-row counting and row framing match), sends each planned step in order, and
compares what comes back with what was recorded: error, affected rows, rows returned and
the result digest (the same SHA-256 over row packets the gateway records).

Resource handling: one connection, closed on every exit path by ``replay``.
Error handling: a lost or refused connection raises ``UpstreamError``; a statement error is
an outcome to compare, not a failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hoopy.audit import events
from hoopy.audit.timeline import PlannedStep
from hoopy.audit.values import param_from_json
from hoopy.config.model import SecretUnavailable, Target
from hoopy.gateway import sql_checks
from hoopy.gateway.replay_masking import Remasked, remask
from hoopy.gateway.session_audit import has_rows
from hoopy.gateway.stream import ConnectionClosed
from hoopy.gateway.upstream import TARGET_UNAVAILABLE, UpstreamConnection, UpstreamError
from hoopy.policy.lineage import StatementLineage
from hoopy.policy.masking import MaskingPlan, MaskingPolicy
from hoopy.wire.handshake import (
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_DEPRECATE_EOF,
    CLIENT_FOUND_ROWS,
    CLIENT_LONG_FLAG,
    CLIENT_LONG_PASSWORD,
    CLIENT_MULTI_RESULTS,
    CLIENT_MULTI_STATEMENTS,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_PS_MULTI_RESULTS,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    CLIENT_TRANSACTIONS,
    HandshakeResponse,
    SSLRequest,
)
from hoopy.wire.login import initial_auth_response
from hoopy.wire.packets import ProtocolError
from hoopy.wire.params import encode_execute
from hoopy.wire.response import ResponseSummary, ResponseTracker

if TYPE_CHECKING:
    from hoopy.gateway.views import ViewCatalog  # which imports this module
    from hoopy.sql.lexer import ServerVersion

# The recorded client's capabilities that change what a statement returns, and so must
# match for outcomes to be comparable; everything else is hoopy's choice as a client.
OUTCOME_CAPABILITIES = (
    CLIENT_FOUND_ROWS
    | CLIENT_DEPRECATE_EOF
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_LONG_FLAG
)
CLIENT_BASE = (
    CLIENT_LONG_PASSWORD
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_CONNECT_ATTRS
)
# When the record predates capabilities being recorded: what common clients ask for.
DEFAULT_RECORDED = CLIENT_MULTI_RESULTS | CLIENT_PS_MULTI_RESULTS | CLIENT_LONG_FLAG
MAX_PACKET = 16 * 1024 * 1024
UTF8MB4_GENERAL_CI = 45
MAX_PAYLOAD = 1 << 30

COMMAND_BYTES = {
    "COM_INIT_DB": 0x02,
    "COM_QUERY": 0x03,
    "COM_PING": 0x0E,
    "COM_STMT_PREPARE": 0x16,
    "COM_STMT_EXECUTE": 0x17,
    "COM_STMT_SEND_LONG_DATA": 0x18,
    "COM_STMT_CLOSE": 0x19,
    "COM_STMT_RESET": 0x1A,
    "COM_STMT_FETCH": 0x1C,
    "COM_RESET_CONNECTION": 0x1F,
}
NO_RESPONSE = frozenset({"COM_STMT_CLOSE", "COM_STMT_SEND_LONG_DATA"})
COMPARED = ("error", "affected_rows", "rows", "digest", "masked")
_MASKED_COMMANDS = {"COM_QUERY": False, "COM_STMT_EXECUTE": True, "COM_STMT_FETCH": True}
_USE = re.compile(r"\s*use\s+`?([^`;\s]+)`?\s*;?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Difference:
    seq: int
    field: str
    recorded: Any
    replayed: Any


@dataclass
class StepResult:
    seq: int
    outcome: dict[str, Any] | None  # None for commands without a response
    differences: list[Difference] = field(default_factory=list)


@dataclass
class ReplayReport:
    target: str
    results: list[StepResult] = field(default_factory=list)
    skipped: list[PlannedStep] = field(default_factory=list)

    @property
    def differences(self) -> list[Difference]:
        return [d for r in self.results for d in r.differences]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ran": len(self.results),
            "skipped": [{"seq": p.step.seq, "reason": p.reason} for p in self.skipped],
            "differences": [d.__dict__ for d in self.differences],
            "results": [
                {
                    "seq": r.seq,
                    "outcome": r.outcome,
                    "differences": [d.__dict__ for d in r.differences],
                }
                for r in self.results
            ],
        }


class ReplayConnection:
    def __init__(self, upstream: UpstreamConnection, capabilities: int) -> None:
        self.upstream = upstream
        self.capabilities = capabilities

    @classmethod
    async def open(
        cls,
        target: Target,
        *,
        database: str | None,
        recorded_capabilities: int | None,
        session: str,
        program: bytes = b"hoopy-replay",
    ) -> ReplayConnection:
        upstream = await UpstreamConnection.open(target, MAX_PAYLOAD)
        try:
            g = upstream.greeting
            wanted = (
                recorded_capabilities if recorded_capabilities is not None else DEFAULT_RECORDED
            )
            caps = (CLIENT_BASE | (wanted & OUTCOME_CAPABILITIES)) & g.capabilities
            database = database or target.database
            if database:
                caps |= CLIENT_CONNECT_WITH_DB
            seq = 1
            if upstream.wants_tls():
                caps |= CLIENT_SSL
                seq = await upstream.start_tls(SSLRequest(caps, MAX_PACKET, UTF8MB4_GENERAL_CI), 1)
            try:
                password = target.password.read()
            except SecretUnavailable as exc:
                raise UpstreamError(
                    TARGET_UNAVAILABLE,
                    f"the credentials of target '{target.name}' are unavailable: {exc}",
                ) from None
            plugin, auth = initial_auth_response(g.auth_plugin, password, g.auth_data)
            response = HandshakeResponse(
                capabilities=caps,
                max_packet_size=MAX_PACKET,
                charset=UTF8MB4_GENERAL_CI,
                username=target.user.encode(),
                auth_response=auth,
                database=database.encode() if database else None,
                auth_plugin=plugin,
                connect_attrs=(
                    (b"program_name", program),
                    (b"_hoopy_replay_of", session.encode()),
                )
                if program == b"hoopy-replay"
                else ((b"program_name", program),),
            )
            await upstream.login(response, password, seq)
        except BaseException:
            await upstream.packets.aclose()
            raise
        return cls(upstream, caps)

    @property
    def server_version(self) -> ServerVersion | None:
        return sql_checks.server_version(self.upstream.greeting)

    async def request(self, payload: bytes) -> tuple[ResponseSummary, str | None]:
        """Send one command and read its whole response: (summary, row digest)."""
        digest = hashlib.sha256()
        summary, _ = await self._exchange(payload, digest)
        return summary, digest.hexdigest() if has_rows(payload[0], summary) else None

    async def request_raw(self, payload: bytes) -> tuple[ResponseSummary, bytes]:
        """Send one command; its summary and the response's bytes as received."""
        return await self._exchange(payload, None)

    async def _exchange(self, payload: bytes, digest: Any) -> tuple[ResponseSummary, bytes]:
        packets = self.upstream.packets
        try:
            await packets.send_payload(payload, 0)
        except ConnectionClosed as exc:
            raise UpstreamError(TARGET_UNAVAILABLE, f"lost the target: {exc}") from None
        tracker = ResponseTracker(payload[0], self.capabilities, digest)
        received = bytearray()
        first = True
        while not tracker.done:
            try:
                data = await packets.receive_some(wait_first=first)
            except ConnectionClosed as exc:
                raise UpstreamError(TARGET_UNAVAILABLE, f"lost the target: {exc}") from None
            first = False
            used = tracker.feed(data)
            if used < len(data):
                packets.unread(data[used:])
            if digest is None:  # only request_raw keeps the bytes
                received += data[:used]
            if tracker.awaiting_local_infile:  # never asked for; answer with no file
                await packets.send_payload(b"", (tracker.last_seq + 1) & 0xFF)
                tracker.local_infile_sent()
        return tracker.summary, bytes(received)

    async def send(self, payload: bytes) -> None:
        try:
            await self.upstream.packets.send_payload(payload, 0)
        except ConnectionClosed as exc:
            raise UpstreamError(TARGET_UNAVAILABLE, f"lost the target: {exc}") from None

    async def aclose(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.upstream.packets.send_payload(b"\x01", 0)  # COM_QUIT
        await self.upstream.packets.aclose()


class ReplayError(Exception):
    """A step cannot be built from its record (e.g. it needs a statement never prepared)."""


def build_payload(
    step_statement: dict[str, Any], ids: dict[int, int], capabilities: int = 0
) -> bytes:
    """The command to send for a recorded statement record, with statement ids mapped."""
    command = str(step_statement.get("command"))
    code = COMMAND_BYTES[command]
    if command in ("COM_QUERY", "COM_STMT_PREPARE"):
        return bytes((code,)) + str(step_statement.get("sql", "")).encode("utf-8")
    if command == "COM_INIT_DB":
        return bytes((code,)) + str(step_statement.get("argument", "")).encode("utf-8")
    if command in ("COM_PING", "COM_RESET_CONNECTION"):
        return bytes((code,))
    recorded_id = step_statement.get("statement_id")
    if not isinstance(recorded_id, int) or recorded_id not in ids:
        raise ReplayError(f"statement id {recorded_id} was not prepared in this replay")
    new_id = ids[recorded_id]
    if command == "COM_STMT_EXECUTE":
        params = [param_from_json(p) for p in step_statement.get("params", [])]
        return encode_execute(
            new_id, params, flags=int(step_statement.get("cursor", 0)), capabilities=capabilities
        )
    head = bytes((code,)) + new_id.to_bytes(4, "little")
    if command == "COM_STMT_FETCH":
        return head + int(step_statement.get("fetch_rows", 1)).to_bytes(4, "little")
    if command == "COM_STMT_SEND_LONG_DATA":
        data = param_from_json(step_statement["data"]).value
        if isinstance(data, str):
            raw = data.encode("utf-8")
        elif isinstance(data, bytes):
            raw = data
        else:
            raise ReplayError("long data was not recorded as text or bytes")
        return head + int(step_statement.get("param", 0)).to_bytes(2, "little") + raw
    return head  # COM_STMT_CLOSE, COM_STMT_RESET


def compare(
    seq: int, recorded: dict[str, Any] | None, replayed: dict[str, Any]
) -> list[Difference]:
    if recorded is None:
        return []
    out = []
    for name in COMPARED:
        if name == "error":
            a = (recorded.get("error") or {}).get("code")
            b = (replayed.get("error") or {}).get("code")
        elif name in ("digest", "masked"):
            a, b = recorded.get(name), replayed.get(name)
            if a is None and b is None:
                continue
        else:
            a, b = recorded.get(name), replayed.get(name)
        if a != b:
            out.append(Difference(seq, name, a, b))
    return out


@dataclass
class ReplayMasking:
    """The masking the recorded session had (config/masking.py ``masking_for``), and the
    views it follows (None: not followed, as for a passthrough target)."""

    policy: MaskingPolicy
    views: ViewCatalog | None = None
    cursor_plans: dict[int, MaskingPlan | None] = field(default_factory=dict)


async def replay(
    target: Target,
    planned: Sequence[PlannedStep],
    *,
    session: str,
    database: str | None,
    recorded_capabilities: int | None,
    on_step: Callable[[PlannedStep, StepResult | None], Awaitable[None] | None] | None = None,
    masking: ReplayMasking | None = None,
) -> ReplayReport:
    """Run the planned steps in order and compare each outcome with the recorded one; with
    ``masking``, results are masked as the gateway masked the recorded ones first."""
    report = ReplayReport(target.name)
    connection = await ReplayConnection.open(
        target, database=database, recorded_capabilities=recorded_capabilities, session=session
    )
    state = _State(database or target.database, masking)
    try:
        for item in planned:
            result = None
            if not item.run:
                report.skipped.append(item)
            else:
                result = await _run_step(connection, item, state)
                report.results.append(result)
            if on_step is not None:
                maybe = on_step(item, result)
                if maybe is not None:
                    await maybe
    finally:
        await connection.aclose()
        if masking is not None and masking.views is not None:
            await masking.views.aclose()
    return report


@dataclass
class _State:
    database: str | None
    masking: ReplayMasking | None
    ids: dict[int, int] = field(default_factory=dict)


async def _run_step(
    connection: ReplayConnection, item: PlannedStep, state: _State
) -> StepResult:
    step = item.step
    ids = state.ids
    try:
        payload = build_payload(step.statement, ids, connection.capabilities)
    except (ReplayError, ValueError, KeyError) as exc:
        return StepResult(step.seq, None, [Difference(step.seq, "not_run", None, str(exc))])
    if step.command in NO_RESPONSE:
        await connection.send(payload)
        if step.command == "COM_STMT_CLOSE":
            ids.pop(int(step.statement["statement_id"]), None)
        return StepResult(step.seq, None)
    started = time.monotonic_ns()
    masking = state.masking
    if masking is not None and step.command in _MASKED_COMMANDS:
        summary, digest, masked = await _masked_request(connection, step, payload, state)
    else:
        summary, digest = await connection.request(payload)
        masked = None
    outcome = events.outcome("replay", step.seq, summary, (time.monotonic_ns() - started) // 1000)
    if digest is not None:
        outcome["digest"] = digest
    if masked is not None:
        if masked.masked:
            outcome["masked"] = masked.masked
        if masked.error is not None:
            outcome["error"] = {"code": masked.error}
    if step.command == "COM_STMT_PREPARE" and summary.prepared is not None and step.outcome:
        recorded_id = step.outcome.get("statement_id")
        if isinstance(recorded_id, int):
            ids[recorded_id] = summary.prepared.statement_id
    if step.command == "COM_RESET_CONNECTION":
        ids.clear()
    if summary.error is None:
        if step.command == "COM_INIT_DB":
            state.database = str(step.statement.get("argument", "")) or state.database
        elif step.command == "COM_QUERY" and (use := _USE.match(str(step.statement.get("sql")))):
            state.database = use.group(1)
    return StepResult(step.seq, outcome, compare(step.seq, step.outcome, outcome))


async def _masked_request(
    connection: ReplayConnection, step: Any, payload: bytes, state: _State
) -> tuple[ResponseSummary, str | None, Remasked]:
    """One command whose results masking rewrites: sent, and its response masked."""
    masking = state.masking
    assert masking is not None
    policy = masking.policy
    recorded_id = step.statement.get("statement_id")
    cursor_plan = None
    lineages: tuple[StatementLineage, ...] = ()
    if step.command == "COM_STMT_FETCH":
        if isinstance(recorded_id, int):
            cursor_plan = masking.cursor_plans.get(recorded_id)
    else:
        sql = str(step.statement.get("sql") or "").encode("utf-8")
        lineages = policy.trace(sql, connection.server_version, multibyte=False)
        views = masking.views
        if views is not None and views.available and any(
            lin.tables or lin.every_source for lin in lineages
        ):
            from hoopy.gateway.views import ViewsUnavailable

            try:
                lineages = (await views.views()).resolve(lineages, state.database)
            except ViewsUnavailable as exc:
                raise UpstreamError(
                    TARGET_UNAVAILABLE, f"cannot read the views masking follows: {exc}"
                ) from None
    if step.command == "COM_STMT_FETCH" and cursor_plan is None:
        summary, digest = await connection.request(payload)  # a cursor without masked columns
        return summary, digest, Remasked(None)
    summary, raw = await connection.request_raw(payload)
    try:
        remasked = remask(
            raw, payload[0], connection.capabilities, policy, lineages, state.database,
            binary=_MASKED_COMMANDS[step.command], cursor_plan=cursor_plan,
        )  # fmt: skip
    except ProtocolError as exc:
        raise UpstreamError(TARGET_UNAVAILABLE, f"unreadable response: {exc}") from None
    if step.command == "COM_STMT_EXECUTE" and isinstance(recorded_id, int):
        masking.cursor_plans[recorded_id] = remasked.cursor_plan
    return summary, remasked.digest, remasked
