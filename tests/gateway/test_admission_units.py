"""Sans-IO pieces of admission and login delays: KILL recognition, delays, login slots."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.gateway.admission import (
    FRONT_ID_BASE,
    FRONT_ID_SPAN,
    FrontConnectionIds,
    PendingLogins,
    SharedConnectionTable,
    kill_target,
)
from hoopy.gateway.throttle import MAX_TRACKED_KEYS, LoginDelays

# --- KILL -----------------------------------------------------------------------------------

gaps = st.lists(
    st.sampled_from([" ", "\t", "\n", "\r\n", "/**/", "/* x */", "/* a*b */", "/*\n*/"]),
    min_size=1,
    max_size=3,
).map("".join)
optional_gaps = st.one_of(st.just(""), gaps)


def cased(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flips: "".join(
            c.upper() if f else c.lower() for c, f in zip(word, flips, strict=True)
        )
    )


@given(
    lead=optional_gaps,
    kill=cased("kill"),
    g1=gaps,
    mode=st.one_of(st.just(""), cased("hard"), cased("soft")),
    g2=gaps,
    what=st.one_of(st.just(""), cased("connection"), cased("query")),
    g3=gaps,
    ident=st.integers(0, 2**32 - 1),
    tail=st.sampled_from(["", ";", " ;", "; ", "/* done */"]),
)
def test_kill_statements_name_their_id(
    lead: str, kill: str, g1: str, mode: str, g2: str, what: str, g3: str, ident: int, tail: str
) -> None:
    sql = lead + kill + g1 + (mode + g2 if mode else "") + (what + g3 if what else "")
    sql += str(ident) + tail
    found = kill_target(sql.encode())
    assert found is not None, sql
    number, start, end = found
    assert number == ident
    assert sql.encode()[start:end] == str(ident).encode()


@pytest.mark.parametrize(
    "sql",
    [
        b"KILL QUERY ID 5",  # MariaDB: a query id, not a connection id
        b"KILL USER app",
        b"SELECT 1; KILL 5",
        b"KILL 5; DROP TABLE t",
        b"KILL /*!50000 QUERY */ 5",  # executable comments are not read as gaps
        b"KILL 5 6",
        b"KILL -5",
        b"KILL 12345678901",  # more than 32 bits' worth of digits
        b"SELECT 'KILL 5'",
        b"KILL" + b" " * 5000 + b"5",
    ],
)
def test_other_statements_are_not_kill_targets(sql: bytes) -> None:
    assert kill_target(sql) is None


def test_front_ids_are_in_their_range_and_unique_while_held() -> None:
    ids = FrontConnectionIds()
    seen = set()
    for _ in range(1000):
        front = ids.allocate()
        assert FRONT_ID_BASE <= front < FRONT_ID_BASE + FRONT_ID_SPAN <= 2**31
        assert front not in seen
        ids.register(front, "app", 7)
        seen.add(front)
    assert ids.upstream_id(front, "app") == 7
    assert ids.upstream_id(front, "other-target") is None
    ids.unregister(front)
    assert ids.upstream_id(front, "app") is None


@given(count=st.integers(1, 256), data=st.data())
def test_workers_hand_out_disjoint_ids_and_know_whose_an_id_is(
    count: int, data: st.DataObject
) -> None:
    workers = [FrontConnectionIds((k, count)) for k in range(1, count + 1)]
    for k, ids in enumerate(workers, start=1):
        for _ in range(data.draw(st.integers(1, 5))):
            front = ids.allocate()
            assert FRONT_ID_BASE <= front < FRONT_ID_BASE + FRONT_ID_SPAN <= 2**31
            # Every worker can tell whose id it is: never two workers' at once.
            assert {w.worker_of(front) for w in workers} == {k}
    single = FrontConnectionIds()
    assert single.worker_of(single.allocate()) == 1
    assert single.worker_of(5) is None  # the server's own thread ids are nobody's


@given(
    count=st.integers(1, 4),
    ops=st.lists(
        st.tuples(st.integers(1, 4), st.booleans(), st.sampled_from(["app", "other"])),
        max_size=60,
    ),
)
@settings(max_examples=60)
def test_the_shared_table_answers_what_each_worker_holds(
    count: int, ops: list[tuple[int, bool, str]]
) -> None:
    """Workers registering and ending sessions in any order, through a table small enough
    to collide and fill: a lookup from any other worker finds exactly the open sessions'
    upstream ids (or nothing, for one the full table left unpublished)."""
    table = SharedConnectionTable(count, 4)  # 8 slots per worker
    workers = [FrontConnectionIds((k, count), table) for k in range(1, count + 1)]
    open_: dict[int, tuple[int, str, int]] = {}  # front -> (worker, target, upstream)
    published: set[int] = set()  # what the table must hold: while a region has room
    for n, (k, start, target) in enumerate(ops):
        k = (k - 1) % count + 1
        ids = workers[k - 1]
        mine = [f for f, (w, _, _) in open_.items() if w == k]
        if start or not mine:
            front = ids.allocate()
            room = sum(1 for f in published if open_[f][0] == k) < table.slots
            ids.register(front, target, 1000 + n)
            open_[front] = (k, target, 1000 + n)
            if room:
                published.add(front)
        else:
            ids.unregister(mine[0])
            del open_[mine[0]]
            published.discard(mine[0])
        for front, (owner, t, upstream) in open_.items():
            for reader in workers:
                got = reader.upstream_id(front, t)
                if reader is workers[owner - 1]:
                    assert got == upstream  # its own: always from its memory
                else:
                    assert got == (upstream if front in published else None)
                assert reader.upstream_id(front, "no-such-target") is None
    for front, (owner, t, _) in list(open_.items()):
        workers[owner - 1].unregister(front)
        for reader in workers:
            assert reader.upstream_id(front, t) is None


def test_freed_slots_are_used_again() -> None:
    """A long-running worker opens and ends many more sessions than its region has slots:
    each stays visible to the other worker while it is open."""
    table = SharedConnectionTable(2, 4)  # 8 slots per worker
    one, two = FrontConnectionIds((1, 2), table), FrontConnectionIds((2, 2), table)
    held: list[int] = []
    for n in range(200):
        front = one.allocate()
        one.register(front, "app", n)
        held.append(front)
        if len(held) > 3:
            one.unregister(held.pop(0))
        assert all(two.upstream_id(f, "app") is not None for f in held), n


def test_a_restarted_worker_starts_with_an_empty_region() -> None:
    table = SharedConnectionTable(2, 16)
    one, two = FrontConnectionIds((1, 2), table), FrontConnectionIds((2, 2), table)
    front = one.allocate()
    one.register(front, "app", 42)
    assert two.upstream_id(front, "app") == 42
    table.clear(1)
    assert two.upstream_id(front, "app") is None


# --- login delays ---------------------------------------------------------------------------


def test_delays_start_at_the_threshold_double_and_cap() -> None:
    delays = LoginDelays(threshold=3, base_delay=1.0, max_delay=5.0, forget_after=60.0)
    seen = []
    for i in range(7):
        seen.append(delays.delay("dev", "10.0.0.1", now=float(i)))
        delays.failed("dev", "10.0.0.1", now=float(i))
    assert seen == [0.0, 0.0, 0.0, 1.0, 2.0, 4.0, 5.0]
    # Per (user, address): the same user elsewhere and another user here are untouched.
    assert delays.delay("dev", "10.0.0.2", now=7.0) == 0.0
    assert delays.delay("ops", "10.0.0.1", now=7.0) == 0.0
    delays.succeeded("dev", "10.0.0.1")
    assert delays.delay("dev", "10.0.0.1", now=7.0) == 0.0


def test_counts_are_forgotten_after_a_quiet_while() -> None:
    delays = LoginDelays(threshold=1, base_delay=1.0, max_delay=5.0, forget_after=60.0)
    delays.failed("dev", "a", now=0.0)
    assert delays.delay("dev", "a", now=59.0) == 1.0
    assert delays.delay("dev", "a", now=60.0) == 0.0
    assert delays.failures("dev", "a", now=60.0) == 0


@given(st.integers(1, 10_000))
def test_the_delay_stays_finite_and_capped(failures: int) -> None:
    delays = LoginDelays(threshold=1, base_delay=0.5, max_delay=30.0, forget_after=1e9)
    for _ in range(failures):
        delays.failed("u", "a", now=0.0)
    delay = delays.delay("u", "a", now=0.0)
    assert math.isfinite(delay) and 0.5 <= delay <= 30.0


def test_the_table_is_bounded() -> None:
    delays = LoginDelays(threshold=1, base_delay=1.0, max_delay=1.0, forget_after=1e9)
    delays.failed("first", "a", now=0.0)
    for i in range(MAX_TRACKED_KEYS):
        delays.failed(f"user{i}", "a", now=1.0)
    assert len(delays._failures) == MAX_TRACKED_KEYS
    assert delays.failures("first", "a", now=1.0) == 0  # the least recently failed went first


# --- pending logins -------------------------------------------------------------------------


async def test_pending_logins_are_bounded_per_address_and_in_total() -> None:
    pending = PendingLogins(total=3, per_address=2)
    await pending.acquire("a")
    await pending.acquire("a")
    with trio.move_on_after(0.05) as blocked:
        await pending.acquire("a")  # a third from "a" waits
    assert blocked.cancelled_caught
    await pending.acquire("b")
    with trio.move_on_after(0.05) as full:
        await pending.acquire("c")  # three in all
    assert full.cancelled_caught
    assert (pending.in_flight(), pending.in_flight("a")) == (3, 2)

    got = trio.Event()

    async def waiter() -> None:
        await pending.acquire("c")
        got.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not got.is_set()
        pending.release("a")
        await got.wait()
    assert (pending.in_flight(), pending.in_flight("a"), pending.in_flight("c")) == (3, 1, 1)
    with pending.held("c"):
        pass
    assert pending.in_flight("c") == 0
