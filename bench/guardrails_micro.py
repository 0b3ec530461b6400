"""The guardrails' per-statement CPU in isolation: the code the session runs for each
COM_QUERY (decode it once, analyse it, judge it), in one process, without sockets.

    .venv/bin/python -m bench.guardrails_micro                 # 7 rounds of 20,000 statements
    .venv/bin/python -m bench.guardrails_micro --rounds 3 --statements 5000

Statements are sysbench's (oltp_point_select and oltp_read_only's, ids and ranges drawn at
random, as sysbench sends them). Each round times, interleaved, (a) the baseline: building
the ``ClientCommand`` the session builds anyway; (b) the built-in ``default`` set with the
gateway's shared analysis cache warm (every statement after the first of its shape is a
cache hit); (c) uncached: a fresh cache per statement, so every statement is lexed, parsed
by sqlglot and judged. Prints medians over rounds of process CPU microseconds per statement.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence

import trio

from hoopy.config.guardrails import builtin_sets
from hoopy.config.model import LoginMode, Secret, Target
from hoopy.gateway.guardrails import Policies, SessionGuardrails
from hoopy.policy.analysis import Analyser
from hoopy.policy.rules import Policy
from hoopy.wire.command import ClientCommand, SessionCommands


class _Config:
    """The two attributes ``Policies`` reads."""

    guardrails = builtin_sets()
    roles: dict[str, object] = {}


def statements(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        i = rnd.randint(1, 10000)
        t = rnd.randint(1, 4)
        kind = rnd.random()
        if kind < 0.6:
            sql = f"SELECT c FROM sbtest{t} WHERE id={i}"
        elif kind < 0.7:
            sql = f"SELECT c FROM sbtest{t} WHERE id BETWEEN {i} AND {i + 99}"
        elif kind < 0.8:
            sql = f"SELECT SUM(k) FROM sbtest{t} WHERE id BETWEEN {i} AND {i + 99}"
        elif kind < 0.9:
            sql = f"SELECT c FROM sbtest{t} WHERE id BETWEEN {i} AND {i + 99} ORDER BY c"
        else:
            sql = f"SELECT DISTINCT c FROM sbtest{t} WHERE id BETWEEN {i} AND {i + 99} ORDER BY c"
        out.append(b"\x03" + sql.encode())
    return out


def cpu_per(fn: Callable[[], None], n: int) -> float:
    started = time.process_time()
    fn()
    return (time.process_time() - started) / n * 1e6


async def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--statements", type=int, default=20000)
    args = p.parse_args(argv)
    payloads = statements(args.statements)
    policies = Policies(_Config())  # type: ignore[arg-type]
    policy = Policy((builtin_sets()["default"],))
    target = Target(
        "bench", "127.0.0.1", 3306, "hoopy", Secret(), LoginMode.GATEWAY_USERS, database="sbtest"
    )
    session = SessionGuardrails(policies, policy, None, SessionCommands(0, "sbtest"), target)
    uncached_n = max(200, args.statements // 50)

    async def baseline() -> None:
        for payload in payloads:
            ClientCommand(payload, 0)

    async def guarded() -> None:
        for payload in payloads:
            session.judge_now(ClientCommand(payload, 0))  # what the session calls

    async def uncached() -> None:
        for payload in payloads[:uncached_n]:
            session._analyser = Analyser()
            session.judge_now(ClientCommand(payload, 0))
        session._analyser = warm

    warm = session.analyser
    await guarded()  # warm the cache: every shape seen once
    results: dict[str, list[float]] = {"baseline": [], "default set, cached": [], "uncached": []}
    for _ in range(args.rounds):
        for name, fn, n in (
            ("baseline", baseline, len(payloads)),
            ("default set, cached", guarded, len(payloads)),
            ("uncached", uncached, uncached_n),
        ):
            started = time.process_time()
            await fn()
            results[name].append((time.process_time() - started) / n * 1e6)
    base = statistics.median(results["baseline"])
    print(f"{args.rounds} rounds, {len(payloads)} statements ({uncached_n} uncached), CPU us/stmt:")
    for name, values in results.items():
        median = statistics.median(values)
        extra = "" if name == "baseline" else f"   (+{median - base:.2f} over the baseline)"
        print(f"  {name:22s} median {median:8.2f}  min {min(values):8.2f}{extra}")
    hits, misses = warm.hits, warm.misses
    print(f"  cache: {hits} hits, {misses} misses")


if __name__ == "__main__":
    trio.run(main)
