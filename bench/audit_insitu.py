"""The audit's CPU per statement inside a running gateway, under load (not in a warm loop).

    .venv/bin/python -m bench.audit_insitu                    # this tree, 3 runs x 8 s
    .venv/bin/python -m bench.audit_insitu --tree /tmp/old    # another checkout, same way
    .venv/bin/python -m bench.audit_insitu --tree /tmp/old --tree .   # interleaved A/B

Starts the stack of ``bench.run`` (MariaDB with sysbench tables, hoopy with the audit in
``os`` mode and the ``default`` rules) from each tree, runs ``oltp_point_select --threads=1
--db-ps-mode=disable``, and has hoopy measure the thread CPU time (``time.thread_time_ns``)
spent in ``SessionAudit.before`` (the statement's record, written before it is forwarded) and
``SessionAudit.after`` (the outcome record). The measuring is added from outside: a
``sitecustomize`` module on the hoopy process's ``PYTHONPATH`` wraps the two methods.

Why this exists: in a warm loop (``bench.audit_micro``) the audit's record work costs about
25-30 us per statement here; in the gateway, between statements that let sysbench and
MariaDB run on the same two cores, the same code costs two to three times that (caches and
branch predictors are cold each time). This measures what the gateway really pays. Runs of
several trees are interleaved, so drift of the machine hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

SITE = """
import os, sys, time
if os.environ.get("HOOPY_AUDIT_INSITU"):
    from hoopy.gateway import session_audit as _sa
    acc = {"before": 0, "after": 0, "n": 0}
    _before, _after = _sa.SessionAudit.before, _sa.SessionAudit.after
    async def before(self, *a, **k):
        t0 = time.thread_time_ns()
        try:
            return await _before(self, *a, **k)
        finally:
            acc["before"] += time.thread_time_ns() - t0
    def after(self, *a, **k):
        t0 = time.thread_time_ns()
        try:
            return _after(self, *a, **k)
        finally:
            acc["after"] += time.thread_time_ns() - t0
            acc["n"] += 1
            if acc["n"] % 1000 == 0:
                print("AUDIT_INSITU " + json.dumps(acc), file=sys.stderr, flush=True)
    import json
    _sa.SessionAudit.before, _sa.SessionAudit.after = before, after
"""

RUNNER = """
import json, re, subprocess, sys
from bench.run import bench_stack, start_spinner, stop_process, sysbench_argv
seconds = float(sys.argv[1])
with bench_stack(tables=4, table_size=10000, audit="os", guardrails=["default"]) as stack:
    ep = stack.endpoints["hoopy"]
    spin = start_spinner(seconds + 60)
    try:
        subprocess.run(sysbench_argv(ep, "oltp_point_select", threads=1, ps_mode="disable",
                       seconds=seconds, tables=4, table_size=10000), capture_output=True)
    finally:
        stop_process(spin)
    lines = [l for l in stack.hoopy.stderr_text().splitlines() if "AUDIT_INSITU" in l]
    print("RESULT " + lines[-1].split(" ", 1)[1] if lines else "RESULT {}")
"""


def run_tree(tree: Path, seconds: float, site_dir: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{site_dir}{os.pathsep}{tree}",
        "HOOPY_AUDIT_INSITU": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(seconds)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    found = re.search(r"^RESULT (.*)$", done.stdout, re.M)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"run in {tree} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    acc = json.loads(found.group(1))
    n = acc.get("n", 0)
    if not n:
        raise RuntimeError(f"no statements measured in {tree} (is it a hoopy checkout?)")
    return {
        "statements": n,
        "before_us": acc["before"] / n / 1000,
        "after_us": acc["after"] / n / 1000,
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.audit_insitu", description=__doc__)
    p.add_argument(
        "--tree",
        action="append",
        type=Path,
        help="a hoopy checkout to measure (repeat for an interleaved A/B; default: this one)",
    )
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [Path(__file__).resolve().parents[1]])]
    results: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="hoopy-insitu-") as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(SITE)
        for run in range(args.runs):
            for tree in trees:
                r = run_tree(tree, args.seconds, Path(tmp))
                results[tree].append(r)
                print(
                    f"run {run + 1} {tree}: before {r['before_us']:.1f} us, "
                    f"after {r['after_us']:.1f} us ({r['statements']:.0f} statements)",
                    file=sys.stderr,
                )
    print("| tree | before µs (statement record) | after µs (outcome) | sum |")
    print("|---|---:|---:|---:|")
    for tree, rs in results.items():
        b = statistics.median(r["before_us"] for r in rs)
        a = statistics.median(r["after_us"] for r in rs)
        print(f"| {tree} | {b:.1f} | {a:.1f} | {b + a:.1f} |")


if __name__ == "__main__":
    main()
