"""Two workers' ``ApprovalService`` on one shared store, in one trio run: real store files,
real audit chains (one per worker), no gateway. What the end-to-end test in test_workers.py
cannot time: a step decided on a state another worker has just changed."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from hoopy.approvals.policy import ApprovalPolicy, Approver, Mode
from hoopy.approvals.store import APPROVED, PENDING, ApprovalStore
from hoopy.audit.reader import iter_records
from hoopy.config.model import ApprovalSettings, AuditSettings
from hoopy.gateway.approvals import ApprovalService
from hoopy.gateway.audit_log import AuditLog

BOB = Approver("os:bob", "bob", ("dba",), "unix_socket")


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[list[ApprovalService]]:
    audit_settings = AuditSettings(directory=tmp_path / "audit")
    settings = ApprovalSettings(socket=tmp_path / "admin.sock", directory=tmp_path / "store")
    ApprovalStore(tmp_path / "store").open()  # the supervisor's open, before the forks
    services = []
    for number in (1, 2):
        audit = AuditLog(audit_settings, None, (number, 2))
        audit.open()
        service = ApprovalService(settings, audit, tmp_path, worker=number)
        service.open()
        services.append(service)
    yield services
    for service in services:
        service.close()
        await service.audit.close()


async def ask(service: ApprovalService, mode: Mode) -> Any:
    return await service.request(
        policy=ApprovalPolicy(mode=mode, timeout=60.0),
        requester={"name": "alice", "method": "token", "identity": "token:corp:alice"},
        target="prod",
        database="shop",
        session="s-1",
        seq=3,
        command="COM_QUERY",
        sql="DELETE FROM orders WHERE id = 1",
        params=None,
        rule="writes.delete",
        message="deletes need an approval",
        fingerprint="f" * 64,
        estimate=None,
    )


def journal_ops(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "store" / "journal.jsonl").read_bytes().splitlines()
    return [json.loads(line)["op"] for line in lines]


@pytest.mark.parametrize("mode", [Mode.HOLD, Mode.RETRY])
async def test_a_late_expiry_does_not_undo_an_approval_given_through_another_worker(
    workers: list[ApprovalService], tmp_path: Path, mode: Mode
) -> None:
    one, two = workers
    request = await ask(one, mode)
    assert request.worker == (1 if mode is Mode.HOLD else None)
    two.refresh()
    await two.decide(request.id, BOB, True, None)
    # Worker 1 has not looked yet: it still sees the request pending, and past its deadline.
    assert request.state == PENDING
    request.expires_at = time.time() - 1
    await one._end(request, "expire", "expired", "not decided in time")
    assert request.state == APPROVED, "the approval stands"
    assert journal_ops(tmp_path) == ["request", "approve"]
    steps = [r.get("step") for r in iter_records(tmp_path / "audit" / "worker-1")]
    assert "expired" not in steps


async def test_a_decision_through_another_worker_wakes_the_held_statement(
    workers: list[ApprovalService],
) -> None:
    one, two = workers
    request = await ask(one, Mode.HOLD)
    done: list[str] = []

    async def hold() -> None:
        done.append((await one.hold(request, lambda: False)).state)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.testing.wait_all_tasks_blocked()
        await two.decide(request.id, BOB, True, None)
        assert done == [] and request.state == PENDING  # worker 1 has not looked yet
        one.refresh()  # what its journal poll (every 0.1 s) does
        # Woken now, not at the hold loop's next tick: the wake-up is set before any task
        # runs again.
        assert request.state == APPROVED and one._decided[request.id].is_set()
        with trio.fail_after(10):
            while not done:
                await trio.sleep(0.01)
    assert done == [APPROVED]


async def test_two_workers_use_one_retry_approval_once(workers: list[ApprovalService]) -> None:
    one, two = workers
    request = await ask(one, Mode.RETRY)
    await two.decide(request.id, BOB, True, None)
    seen = [one.approved_like("f" * 64), two.approved_like("f" * 64)]
    assert all(r is not None and r.id == request.id for r in seen)
    results: list[bool] = []

    async def use(service: ApprovalService, found: Any) -> None:
        results.append(await service.use(found, "s-2", 1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(use, one, seen[0])
        nursery.start_soon(use, two, seen[1])
    assert sorted(results) == [False, True]
