"""Approvals in the running gateway: held statements, retry tokens, decisions, expiry.

The decisions are ``hoopy.approvals.policy``'s and the state is ``ApprovalStore``'s; this
module orders them with the audit and wakes the sessions that wait.

Order of evidence, for every step: the audit record first (durable), then the store, then
the effect (a held statement runs, a client is answered). A step whose audit record cannot
be written does not happen: the approver gets an error, the statement does not run.

Resource handling: ``ApprovalService.run`` owns the expiry loop and the webhook sender; the
store's file is closed by ``close``. Every mutation takes ``_lock`` (decisions are rare; a
lock is simpler than reasoning about interleavings at each ``await``), so one request cannot
be approved and expired, or used twice, at once. Waiting for a decision never holds it.

As one of several workers (``worker``), a mutation also takes the store's lock across the
workers and decides on the journal's latest state (``ApprovalStore.lock``); ``run`` looks at
the journal every ``SHARED_POLL`` seconds, so a decision taken through another worker's
admin API wakes the statement held here. Holds are the worker's own: at start it cancels
those of the worker it replaces, at shutdown only its own.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import trio

from hoopy.approvals.policy import ApprovalPolicy, Approver, Mode, refusal, satisfied
from hoopy.approvals.store import (
    APPROVED,
    CANCELLED,
    EXPIRED,
    PENDING,
    ApprovalRequest,
    ApprovalStore,
    StoreError,
    new_id,
)
from hoopy.audit.writer import AuditUnavailable
from hoopy.config.model import ApprovalSettings
from hoopy.gateway.audit_log import AuditLog
from hoopy.gateway.webhook import Webhook

log = logging.getLogger("hoopy.approvals")

# How often expiry is checked, and a held statement's client looked at.
TICK = 0.5
# The longest reason an approver may give (it is shown to the client and audited).
MAX_REASON_CHARS = 1000
# Requests pending at once, beyond which a new one is refused (a runaway agent must not
# fill the store and the approvers' screens).
MAX_PENDING = 1000
# How often a worker looks for what the other workers wrote to the shared journal (a stat).
SHARED_POLL = 0.1


class ApprovalFailed(Exception):
    """A step could not be taken (store or audit unavailable, or not allowed)."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ApprovalService:
    def __init__(
        self,
        settings: ApprovalSettings,
        audit: AuditLog,
        state_dir: Any,
        *,
        worker: int | None = None,
        stale: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """``worker``: this gateway is that worker of several (the store is shared);
        ``stale``: (id, reason) of the holds the supervisor cancelled at start, for this
        worker to record in its audit chain."""
        self.settings = settings
        self.audit = audit
        self.worker = worker
        self._stale = stale
        self.store = ApprovalStore(
            approvals_directory(settings, state_dir), shared=worker is not None
        )
        self.webhook = Webhook(settings.webhook) if settings.webhook is not None else None
        self._lock = trio.Lock()
        self._decided: dict[str, trio.Event] = {}
        self.changed = trio.Event()  # set (and replaced) on every change: --watch waits on it

    @property
    def changes(self) -> int:
        """The change number a watcher asks for changes after: the journal's length, the
        same in every worker."""
        return self.store.offset

    def open(self) -> None:
        """Load the store; holds that were pending at the last stop are recorded cancelled."""
        for request in self.store.open():
            self._audit_now(request, "cancelled", reason=request.reason)
        for request_id, reason in self._stale:
            found = self.store.requests.get(request_id)
            if found is not None:
                self._audit_now(found, "cancelled", reason=reason)

    async def take_over(self) -> None:
        """A worker's start: the holds of the worker it replaces are cancelled (their
        clients were that process's)."""
        if self.worker is None:
            return
        for request in self._holds(PENDING, APPROVED):
            try:
                await self._end(
                    request, "cancel", CANCELLED, "the gateway worker holding it stopped"
                )
            except ApprovalFailed as exc:
                log.error("approval %s: %s", request.id, exc.message)

    def close(self) -> None:
        self.store.close()

    @property
    def defaults(self) -> ApprovalPolicy:
        return self.settings.defaults

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.webhook is not None:
                nursery.start_soon(self.webhook.run)
            if self.store.shared:
                nursery.start_soon(self._follow_journal)
            while True:
                await trio.sleep(TICK)
                await self._expire_due()

    async def _follow_journal(self) -> None:
        while True:
            await trio.sleep(SHARED_POLL)
            self.refresh()

    def refresh(self) -> None:
        """Apply what other workers wrote; wake the holds it decided. Logs what it cannot."""
        try:
            changed = self.store.refresh(wait=False)
        except StoreError as exc:
            log.error("approvals: %s", exc)
            return
        if changed:
            self._others_changed()

    def _others_changed(self) -> None:
        for request_id in list(self._decided):
            found = self.store.requests.get(request_id)
            if found is not None and found.state != PENDING:
                self._decided[request_id].set()
        self._changed()

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """This process's lock, and as a worker the workers' (on the latest journal)."""
        async with self._lock:
            if not self.store.shared:
                yield
                return
            try:
                changed = await trio.to_thread.run_sync(self.store.lock)
            except StoreError as exc:
                log.error("approvals: %s", exc)
                raise ApprovalFailed(str(exc)) from None
            try:
                if changed:
                    self._others_changed()
                yield
            finally:
                self.store.unlock()

    # --- asking ----------------------------------------------------------------------------

    async def request(
        self,
        *,
        policy: ApprovalPolicy,
        requester: dict[str, Any],
        target: str,
        database: str | None,
        session: str,
        seq: int,
        command: str,
        sql: str | None,
        params: list[dict[str, Any]] | None,
        rule: str,
        message: str,
        fingerprint: str,
        estimate: int | None,
    ) -> ApprovalRequest:
        """A new pending request, recorded. Raises ApprovalFailed."""
        async with self._exclusive():
            pending = sum(1 for r in self.store.requests.values() if r.state == PENDING)
            if pending >= MAX_PENDING:
                raise ApprovalFailed(f"{pending} approvals are pending already")
            now = time.time()
            request = ApprovalRequest(
                id=self._unused_id(),
                mode=policy.mode,
                policy=policy,
                requester=requester,
                target=target,
                database=database,
                session=session,
                seq=seq,
                command=command,
                sql=sql,
                params=params,
                rule=rule,
                message=message,
                fingerprint=fingerprint,
                asked_at=now,
                expires_at=now + policy.timeout,
                estimate=estimate,
                worker=self.worker if policy.mode is Mode.HOLD else None,
            )
            await self._audit(
                request,
                "requested",
                mode=request.mode.value,
                rule=rule,
                expires_at=request.expires_at,
                estimate=estimate,
                policy=policy.to_json(),
            )
            await self._store({"op": "request", "request": request.to_json()})
            request = self.store.requests[request.id]  # the store's object is the live one
            self._decided[request.id] = trio.Event()
        self._notify("requested", request)
        log.info(
            "approval %s requested by %s on target %s (rule %s, %s mode)",
            request.id,
            requester.get("name"),
            target,
            rule,
            request.mode.value,
        )
        return request

    def _unused_id(self) -> str:
        while True:
            candidate = new_id()
            if candidate not in self.store.requests:
                return candidate

    def pending_like(self, fingerprint: str) -> ApprovalRequest | None:
        """A retry-mode request for the same statement still waiting for its decision."""
        self.refresh()
        return self.store.find(fingerprint, PENDING)

    async def hold(
        self, request: ApprovalRequest, client_gone: Callable[[], bool]
    ) -> ApprovalRequest:
        """Wait until ``request`` is decided, times out, or its client goes away."""
        event = self._decided.setdefault(request.id, trio.Event())
        while request.state == PENDING:
            with trio.move_on_after(TICK):
                await event.wait()
            if request.state != PENDING:
                break
            if client_gone():
                await self._end(request, "cancel", CANCELLED, "the client disconnected")
            elif time.time() >= request.expires_at:
                await self._end(
                    request,
                    "expire",
                    EXPIRED,
                    f"not decided within {request.policy.timeout:g}s",
                )
        self._decided.pop(request.id, None)
        return request

    async def use(self, request: ApprovalRequest, session: str, seq: int) -> bool:
        """Mark an approved request used by statement ``seq`` of ``session``, once; False
        when it is no longer usable. Raises ApprovalFailed."""
        async with self._exclusive():
            if request.state != APPROVED or (
                request.mode is Mode.RETRY and time.time() >= request.expires_at
            ):
                return False
            await self._audit(
                request,
                "used",
                session=session,
                seq=seq,
                requested={"session": request.session, "seq": request.seq},
            )
            await self._store(
                {"op": "use", "id": request.id, "at": time.time(), "session": session}
            )
        self._notify("used", request)
        return True

    def approved_like(self, fingerprint: str) -> ApprovalRequest | None:
        """An approved retry-mode request for this statement, still valid."""
        self.refresh()
        request = self.store.find(fingerprint, APPROVED)
        if request is None or request.mode is not Mode.RETRY:
            return None
        if time.time() >= request.expires_at:
            return None
        return request

    # --- deciding -------------------------------------------------------------------------

    def visible(self, request: ApprovalRequest, approver: Approver) -> bool:
        """Local approvers see every request; remote ones those they could decide."""
        if not approver.remote:
            return True
        if approver.identity == request.requester_identity:
            return True  # their own request: they are told they cannot approve it
        return refusal(request.policy, approver, request.requester_identity) is None or any(
            a["identity"] == approver.identity for a in request.approvals
        )

    async def decide(
        self, request_id: str, approver: Approver, approve: bool, reason: str | None
    ) -> tuple[ApprovalRequest, str]:
        """Approve or deny; returns the request and what happened. Raises ApprovalFailed."""
        if reason is not None and len(reason) > MAX_REASON_CHARS:
            raise ApprovalFailed(f"the reason is longer than {MAX_REASON_CHARS} characters", 400)
        if not approve and not reason:
            raise ApprovalFailed("a denial needs a reason (--reason)", 400)
        async with self._exclusive():
            request = self.store.requests.get(request_id)
            if request is None or not self.visible(request, approver):
                raise ApprovalFailed(f"no approval {request_id}", 404)
            if request.state != PENDING:
                raise ApprovalFailed(f"approval {request_id} is {request.state} already", 409)
            why = refusal(
                request.policy,
                approver,
                request.requester_identity,
                [a["identity"] for a in request.approvals],
            )
            if why is not None:
                raise ApprovalFailed(why, 403)
            now = time.time()
            if not approve:
                await self._audit(request, "denied", approver=approver.to_json(), reason=reason)
                await self._store(
                    {
                        "op": "deny",
                        "id": request.id,
                        "at": now,
                        "approver": approver.to_json(),
                        "reason": reason,
                    }
                )
                outcome = "denied"
            else:
                final = satisfied(request.policy, [*request.approvers(), approver])
                step = "approved" if final else "approval_added"
                await self._audit(
                    request,
                    step,
                    approver=approver.to_json(),
                    reason=reason,
                    approvals=len(request.approvals) + 1,
                    needed=request.policy.approvals,
                )
                await self._store(
                    {
                        "op": "approve",
                        "id": request.id,
                        "at": now,
                        "approver": approver.to_json(),
                        "final": final,
                    }
                )
                outcome = (
                    "approved"
                    if final
                    else f"approval recorded ({len(request.approvals)} given; "
                    f"more needed: {_needs(request)})"
                )
        log.info("approval %s: %s by %s", request.id, outcome, approver.identity)
        if request.state != PENDING:
            self._wake(request)
        self._notify(request.state if request.state != PENDING else "approval_added", request)
        return request, outcome

    # --- ending -------------------------------------------------------------------------------

    async def _expire_due(self) -> None:
        now = time.time()
        due = [
            r
            for r in self.store.requests.values()
            if r.expires_at <= now
            and (
                (r.state == PENDING and r.mode is Mode.RETRY)
                or (r.state == APPROVED and r.mode is Mode.RETRY)
            )
        ]
        for request in due:
            reason = (
                f"not decided within {request.policy.timeout:g}s"
                if request.state == PENDING
                else f"approved but not used within {request.policy.valid_for:g}s"
            )
            try:
                await self._end(request, "expire", EXPIRED, reason)
            except ApprovalFailed as exc:
                log.error("approval %s: cannot record its expiry: %s", request.id, exc.message)

    async def _end(self, request: ApprovalRequest, op: str, state: str, reason: str) -> None:
        seen = request.state  # what the caller decided on
        async with self._exclusive():
            # Under the lock the journal may say more (a decision through another worker):
            # end the request only as the caller saw it, and expire it only when it is due.
            if request.state != seen or seen not in (PENDING, APPROVED):
                return
            if op == "expire" and time.time() < request.expires_at:
                return
            step = "expired" if state == EXPIRED else "cancelled"
            await self._audit(request, step, reason=reason)
            await self._store({"op": op, "id": request.id, "at": time.time(), "reason": reason})
        log.info("approval %s %s: %s", request.id, step, reason)
        self._wake(request)
        self._notify(step, request)

    async def cancel_holds(self, reason: str) -> None:
        """The gateway is stopping: every held statement is answered now (as a worker: the
        ones it holds)."""
        for request in self._holds(PENDING):
            try:
                await self._end(request, "cancel", CANCELLED, reason)
            except ApprovalFailed as exc:
                log.error("approval %s: %s", request.id, exc.message)
                request.state = CANCELLED  # its client is answered regardless
                request.reason = reason
                self._wake(request)

    # --- plumbing -------------------------------------------------------------------------------

    def _holds(self, *states: str) -> list[ApprovalRequest]:
        """The held statements in ``states`` that are this process's (as a worker: its own)."""
        return [
            r
            for r in self.store.requests.values()
            if r.mode is Mode.HOLD
            and r.state in states
            and (self.worker is None or r.worker == self.worker)
        ]

    def _wake(self, request: ApprovalRequest) -> None:
        event = self._decided.get(request.id)
        if event is not None:
            event.set()
        self._changed()

    def _notify(self, event: str, request: ApprovalRequest) -> None:
        self._changed()
        if self.webhook is not None:
            self.webhook.notify(event, request.view())

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _store(self, op: dict[str, Any]) -> None:
        try:
            await trio.to_thread.run_sync(self.store.append, op)
        except StoreError as exc:
            log.error("approvals: %s", exc)
            raise ApprovalFailed(str(exc)) from None

    def _record(
        self, request: ApprovalRequest, step: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "kind": "approval",
            "session": request.session,
            "seq": request.seq,
            "approval": request.id,
            "step": step,
            "principal": request.requester.get("name"),
            "target": request.target,
        }
        record.update({k: v for k, v in fields.items() if v is not None})
        return record

    async def _audit(self, request: ApprovalRequest, step: str, **fields: Any) -> None:
        try:
            await self.audit.write_durable(self._record(request, step, fields))
        except AuditUnavailable as exc:
            raise ApprovalFailed(f"cannot write the audit log: {exc.reason}") from None

    def _audit_now(self, request: ApprovalRequest, step: str, **fields: Any) -> None:
        try:
            self.audit.write(self._record(request, step, fields))
        except AuditUnavailable as exc:
            log.error("approval %s: %s record not written: %s", request.id, step, exc)


def _needs(request: ApprovalRequest) -> str:
    policy = request.policy
    have = len(request.approvals)
    parts = []
    if have < policy.approvals:
        parts.append(f"{policy.approvals - have} more approver(s)")
    if policy.require.value == "all":
        covered = {g for a in request.approvals for g in a["groups"]}
        missing = [g for g in policy.approvers if g not in covered]
        if missing:
            parts.append(f"someone from {', '.join(missing)}")
    return " and ".join(parts) or "none"


def approvals_directory(settings: ApprovalSettings, state_dir: Path) -> Path:
    return settings.directory or state_dir / "approvals"
