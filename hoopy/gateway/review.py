"""A statement a guardrail sends to review: ask, then hold it or answer with the approval id.

``review`` is one stage of the session's command pipeline (DESIGN.md): it runs after the
verdict and before the statement's audit record, and returns the approval the statement
runs under (with the record it built for the approver to see) or None when the statement
was refused and the client answered.

- **hold**: the request is made and the statement waits for its decision; approved, it runs
  exactly as sent (the ``used`` step is recorded first); denied, timed out, cancelled (the
  client went away, the gateway is stopping): the client gets ER 1290 saying which.
- **retry**: an approved request for the same principal, target, database, text and
  parameters (``policy.fingerprint``) lets the statement through, once; otherwise the client
  gets ER 1290 naming a (new or still pending) approval id and what to do.

A prepared statement is reviewed at each EXECUTE, with its parameters; its PREPARE runs.
"""

from __future__ import annotations

import select
from typing import TYPE_CHECKING, Any

import trio

from hoopy.approvals.policy import Mode, fingerprint, principal_identity
from hoopy.approvals.store import APPROVED, CANCELLED, DENIED, EXPIRED, ApprovalRequest
from hoopy.audit.writer import AuditUnavailable
from hoopy.gateway.approvals import ApprovalFailed
from hoopy.gateway.estimates import explainable
from hoopy.identity.principal import Principal
from hoopy.policy.rules import GuardrailVerdict
from hoopy.wire import errors
from hoopy.wire.command import ClientCommand
from hoopy.wire.packets import Packet, ProtocolError
from hoopy.wire.response import COM_QUERY, COM_STMT_EXECUTE, COMMAND_NAMES

if TYPE_CHECKING:
    from hoopy.gateway.session import Session

# Token claims an approver is shown besides subject and groups: what says which run of
# which pipeline is asking (GitHub Actions, GitLab CI, and the common OIDC ones).
SHOWN_CLAIMS = (
    "sub", "email", "repository", "ref", "sha", "workflow", "job_workflow_ref", "actor",
    "run_id", "run_attempt", "environment", "event_name", "project_path", "pipeline_id",
    "job_id", "user_login", "azp", "client_id",
)  # fmt: skip
# A claim value longer than this is shown cut.
MAX_CLAIM_CHARS = 256


def requester_fields(principal: Principal) -> dict[str, Any]:
    claims = {}
    for name in SHOWN_CLAIMS:
        value = principal.claims.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            claims[name] = value if isinstance(value, int) else value[:MAX_CLAIM_CHARS]
    return {
        "name": principal.name,
        "method": principal.method,
        "identity": principal_identity(principal),
        "issuer": principal.issuer,
        "groups": list(principal.groups),
        "roles": list(principal.roles),
        "claims": claims,
    }


async def review(
    session: Session, packet: Packet, decoded: ClientCommand, verdict: GuardrailVerdict
) -> tuple[ApprovalRequest, dict[str, Any]] | None:
    service = session.server.approvals
    audit = session.audit
    assert service is not None and audit is not None and session.login is not None
    principal = session.login.principal
    seq = session.stats.statements
    rule = verdict.rule or "guardrail"
    policy = verdict.approval or service.defaults
    try:
        # The record the audit writes, built once: the approver sees its redacted text and
        # parameters, and an EXECUTE's parameters are decoded only here.
        record = await audit.build(
            seq, principal, packet.payload, command=decoded, verdict="review", rule=rule
        )
    except AuditUnavailable as exc:
        await session.refuse_unaudited(packet, exc)
        return None
    text = _text(decoded)
    if text is None:
        await session.deny(
            packet,
            rule,
            errors.GUARDRAIL,
            f"hoopy guardrail {rule} needs an approval for this statement, and hoopy cannot "
            "tell which statement it is (its statement id is unknown), so it was not run",
            verdict="review",
            record=record,
        )
        return None
    sql, params = text
    database = session.command_state.database
    command_name = COMMAND_NAMES.get(decoded.kind, "?")
    mark = fingerprint(
        service.store.key,
        requester=principal_identity(principal),
        target=session.target.name,
        database=database,
        command=command_name,
        sql=sql,
        params=params,
    )
    try:
        if policy.mode is Mode.RETRY:
            approved = service.approved_like(mark)
            if approved is not None and await service.use(approved, session.id, seq):
                return approved, record
            request = service.pending_like(mark)
        else:
            request = None
        if request is None:
            request = await service.request(
                policy=policy,
                requester=requester_fields(principal),
                target=session.target.name,
                database=database,
                session=session.id,
                seq=seq,
                command=command_name,
                sql=record.get("sql"),
                params=record.get("params"),
                rule=rule,
                message=verdict.message,
                fingerprint=mark,
                estimate=await _estimate(session, decoded, sql),
            )
        if policy.mode is Mode.RETRY:
            await session.deny(
                packet,
                rule,
                errors.GUARDRAIL,
                _retry_message(request, verdict),
                verdict="review",
                record=record,
                approval=request.id,
            )
            return None
        fd = _socket_fd(session.client.stream)
        decided = await service.hold(request, lambda: _gone(fd))
        if decided.state == APPROVED and await service.use(decided, session.id, seq):
            return decided, record
    except ApprovalFailed as exc:
        await session.deny(
            packet,
            rule,
            errors.GUARDRAIL,
            f"hoopy guardrail {rule} needs an approval for this statement, and the approval "
            f"could not be asked for or recorded ({exc.message}), so it was not run",
            verdict="review",
            record=record,
        )
        return None
    await session.deny(
        packet,
        rule,
        errors.GUARDRAIL,
        _hold_message(decided),
        verdict="review",
        record=record,
        approval=decided.id,
    )
    return None


def _text(decoded: ClientCommand) -> tuple[bytes, tuple[Any, ...]] | None:
    """The statement's text and parameters, as the fingerprint binds them."""
    if decoded.kind == COM_QUERY:
        try:
            attributes, sql = decoded.query()
        except ProtocolError:
            sql = decoded.sql() or b""
            attributes = ()
        return bytes(sql), tuple(attributes)
    if decoded.kind == COM_STMT_EXECUTE and decoded.prepared is not None:
        if decoded.prepared.sql is None:
            return None
        return bytes(decoded.prepared.sql), tuple(decoded.params or ())
    return None


async def _estimate(session: Session, decoded: ClientCommand, sql: bytes) -> int | None:
    """EXPLAIN's row estimate for the approver (COM_QUERY only: a prepared statement's
    parameters cannot be explained without running a statement of the client's)."""
    guardrails = session.guardrails
    if decoded.kind != COM_QUERY or guardrails is None:
        return None
    try:
        analysis = guardrails.analyser(sql)
    except Exception:
        return None
    if not explainable(sql, analysis):
        return None
    estimator = session.server.policies.estimator(session.target)
    return await estimator.estimate(sql, session.command_state.database)


def _retry_message(request: ApprovalRequest, verdict: GuardrailVerdict) -> str:
    reason = f" ({verdict.message})" if verdict.message else ""
    return (
        f"hoopy guardrail {request.rule} needs a human's approval for this statement{reason}: "
        f"approval {request.id} is pending; once it is approved (hoopy approvals approve "
        f"{request.id}), send the same statement again within "
        f"{request.policy.valid_for:g}s and it runs once. It was not run"
    )


def _hold_message(request: ApprovalRequest) -> str:
    if request.state == DENIED:
        who = (request.decided_by or {}).get("name", "an approver")
        return (
            f"hoopy approval {request.id} for this statement was denied by {who}: "
            f"{request.reason}; it was not run"
        )
    if request.state == EXPIRED:
        return f"hoopy approval {request.id} timed out ({request.reason}); it was not run"
    if request.state == CANCELLED:
        return f"hoopy approval {request.id} was cancelled ({request.reason}); it was not run"
    return f"hoopy approval {request.id} is {request.state}; the statement was not run"


def _socket_fd(stream: trio.abc.Stream) -> int:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        return stream.socket.fileno()
    return -1


_HANGUP = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


def _gone(fd: int) -> bool:
    """Whether the client has hung up (its socket reports the peer's shutdown), even with
    bytes it sent ahead still unread (POLLRDHUP, Linux)."""
    if fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, _HANGUP | select.POLLIN)
    return any(events & _HANGUP for _, events in poller.poll(0))

