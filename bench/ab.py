"""Two or more hoopy checkouts side by side: CPU per statement, same run, interleaved, medians.

    .venv/bin/python -m bench.ab --tree /tmp/base --tree .
    .venv/bin/python -m bench.ab --tree /tmp/base --tree . --rounds 5 --time 5 \\
        --workloads point_select_t1_ps_disable,point_select_t8_ps_auto

Starts the MariaDB of ``bench.run`` (4 sysbench tables of 10,000 rows), then one hoopy per
tree, each configured as users get it (audit ``os``, the ``default`` rules; ``--audit`` and
``--guardrails`` change it) and each run with that tree on its ``PYTHONPATH`` (a tree needs
its mypyc modules built: ``python scripts/build_accelerators.py`` in it). ``bare`` hoopy (this
checkout, no audit, no rules) runs in the same rounds as the control. Every round runs every
workload against every gateway, in an order that rotates from round to round. CPU per
statement is the gateway process's utime + stime from ``/proc`` over sysbench's query count.

``--tree PATH::NAME=VALUE::...`` runs that tree's hoopy with the environment given (an
ablation switch in a scratch copy, say), so one tree can appear several times.

This is how a change to the per-statement path is measured against the code it replaces
(``bench.run`` measures one tree against direct and the relay).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import (
    DEV_PASSWORD,
    DEV_USER,
    RESULTS_DIR,
    Endpoint,
    cpu_seconds,
    hoopy_config,
    parse_sysbench,
    start_spinner,
    stop_process,
    sysbench_argv,
    sysbench_database,
)
from tests.gateway_rig import HoopyProcess

WORKLOADS = {
    "point_select_t1_ps_disable": ("oltp_point_select", 1, "disable"),
    "point_select_t1_ps_auto": ("oltp_point_select", 1, "auto"),
    "point_select_t8_ps_disable": ("oltp_point_select", 8, "disable"),
    "point_select_t8_ps_auto": ("oltp_point_select", 8, "auto"),
    "read_only_t8": ("oltp_read_only", 8, "auto"),
}
TABLES, TABLE_SIZE = 4, 10_000


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument(
        "--tree",
        action="append",
        required=True,
        help="a checkout, optionally with environment for its hoopy: PATH::NAME=VALUE::...",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--time", type=float, default=5.0)
    p.add_argument("--workloads", default="point_select_t1_ps_disable,point_select_t8_ps_auto")
    p.add_argument("--audit", default="os", choices=["off", "os", "strict"])
    p.add_argument("--guardrails", default="default")
    args = p.parse_args()
    specs = [_tree(t) for t in args.tree]
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r} (one of {', '.join(WORKLOADS)})")
    audit = None if args.audit == "off" else args.audit
    rules = [r for r in args.guardrails.split(",") if r]
    runs: list[dict[str, Any]] = []
    with sysbench_database(tables=TABLES, table_size=TABLE_SIZE) as (db, _direct):
        gateways: dict[str, HoopyProcess] = {}
        try:
            for i, (tree, env) in enumerate(specs):
                work = Path(tempfile.mkdtemp(prefix=f"hoopy-ab{i}-"))
                label = " ".join([f"{i}:{tree.name or tree}", *(f"{k}={v}" for k, v in env.items())])
                gateways[label] = HoopyProcess(
                    hoopy_config(db, work, audit, rules, "warning"),
                    workdir=work,
                    env={"PYTHONPATH": str(tree), **env},
                    tree=tree,
                )
            bare_dir = Path(tempfile.mkdtemp(prefix="hoopy-ab-bare-"))
            gateways["bare"] = HoopyProcess(
                hoopy_config(db, bare_dir, None, (), "warning"), workdir=bare_dir
            )
            endpoints: dict[str, Endpoint] = {}
            for name, gw in gateways.items():
                gw.start()
                host, port = gw.address()
                assert gw.pid is not None
                endpoints[name] = Endpoint(name, host, port, DEV_USER, DEV_PASSWORD, gw.pid)
            names = list(endpoints)
            for name in names:  # warm-up
                _run(endpoints[name], "oltp_point_select", 1, "disable", 2)
            for rnd in range(args.rounds):
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for w in workloads:
                    test, threads, ps = WORKLOADS[w]
                    for name in order:
                        r = _run(endpoints[name], test, threads, ps, args.time)
                        r.update(workload=w, gateway=name, round=rnd)
                        runs.append(r)
                        print(
                            f"round {rnd + 1} {w} {name}: {r['qps']:,.0f} QPS, "
                            f"{r['cpu_us']:.1f} us/q",
                            file=sys.stderr,
                        )
        finally:
            for gw in gateways.values():
                gw.close()
    print(f"| workload | {' | '.join(f'{n} µs/q' for n in names)} | {' | '.join(f'{n} QPS' for n in names)} |")
    print("|---|" + "---:|" * (2 * len(names)))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for w in workloads:
        cells, qps = [], []
        for name in names:
            mine = [r for r in runs if r["workload"] == w and r["gateway"] == name]
            cpu = statistics.median(r["cpu_us"] for r in mine)
            q = statistics.median(r["qps"] for r in mine)
            summary.setdefault(w, {})[name] = {"cpu_us": cpu, "qps": q}
            cells.append(f"{cpu:.1f}")
            qps.append(f"{q:,.0f}")
        print(f"| {w} | {' | '.join(cells)} | {' | '.join(qps)} |")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"ab-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary}, indent=1))
    print(f"\nJSON: {out}")


def _tree(spec: str) -> tuple[Path, dict[str, str]]:
    path, *assignments = spec.split("::")
    env = dict(a.split("=", 1) for a in assignments)
    return Path(path).resolve(), env


def _run(ep: Endpoint, test: str, threads: int, ps: str, seconds: float) -> dict[str, Any]:
    spinner = start_spinner(seconds + 30) if threads == 1 else None
    try:
        before = cpu_seconds(ep.pid)
        done = subprocess.run(
            sysbench_argv(
                ep, test, threads=threads, ps_mode=ps, seconds=seconds,
                tables=TABLES, table_size=TABLE_SIZE,
            ),
            capture_output=True,
            text=True,
            env={**os.environ},
            check=False,
        )
        used = cpu_seconds(ep.pid) - before
    finally:
        if spinner is not None:
            stop_process(spinner)
    if done.returncode != 0:
        raise RuntimeError(f"sysbench failed against {ep.name}:\n{done.stdout}\n{done.stderr}")
    parsed = parse_sysbench(done.stdout)
    queries = parsed["queries"]
    return {"qps": parsed["qps"], "queries": queries, "cpu_us": used / queries * 1e6}


if __name__ == "__main__":
    main()
