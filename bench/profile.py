"""Where hoopy's per-query CPU goes: py-spy on hoopy under sysbench oltp_point_select, 1 thread.

    .venv/bin/pip install py-spy                  # once (from PyPI)
    .venv/bin/python -m bench.profile             # hoopy, --db-ps-mode=disable, 20 s
    .venv/bin/python -m bench.profile --target relay          # the control, same load
    .venv/bin/python -m bench.profile --workload stream       # the 1M-row CLI stream
    .venv/bin/python -m bench.profile --syscalls 20000        # strace -c: syscalls per query

Starts the same stack as ``bench.run`` (MariaDB, hoopy, the trio relay), runs the load against
the chosen proxy and samples it with ``py-spy record --format raw``. py-spy leaves out idle
samples, but counts a thread that is runnable and waiting for a CPU as active; on a busy
2-core machine such samples pile up in trio's epoll_wait() leaf, so that leaf is reported
separately and not counted. The proxy's CPU per query comes from /proc/<pid>/stat over the
run; each function's share of the remaining samples turns that into microseconds per query.
Prints markdown tables; writes the raw collapsed stacks (usable with flamegraph.pl or
speedscope) and a JSON summary into bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.run import (
    RESULTS_DIR,
    Endpoint,
    Stack,
    add_gateway_options,
    bench_stack,
    cpu_split,
    gateway_settings,
    parse_sysbench,
    start_spinner,
    stop_process,
    stream_argv,
    sysbench_argv,
    thread_cpu,
)
from tests.rig import spawn

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")
# The leaf that is trio's epoll_wait(). py-spy counts a thread as active while it is runnable,
# so on a busy 2-core box this leaf also collects time spent woken but waiting for a CPU.
# Its samples are reported separately and left out when apportioning the /proc CPU time.
WAIT_LEAF = "EpollIOManager.get_events (trio/_core/_io_epoll.py)"
# The outermost frame of every thread but the main one.
OTHER_THREAD = "Thread._bootstrap (threading.py)"


def py_spy_binary() -> str:
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    return found


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy raw output: 'frame;frame;...;leaf count' per line, outermost frame first."""
    stacks: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def file_of(frame: str) -> str:
    m = _FRAME.match(frame)
    return m.group("file") if m else frame


def _is_launcher(frame: str) -> bool:
    """Frames every sample has (runpy, typer, hoopy's CLI, trio.run): noise in 'inclusive'."""
    file = file_of(frame)
    return (
        file.startswith(("typer/", "<frozen", "click/"))
        or file in ("hoopy/cli.py", "hoopy/__main__.py")
        or frame == "run (trio/_core/_run.py)"
    )


def category(file: str) -> str:
    if file.startswith("hoopy/"):
        return file
    if "trio/_core/_io_epoll" in file:
        return "trio epoll (I/O wait bookkeeping)"
    if "trio/_core" in file:
        return "trio scheduler/core"
    if "trio/" in file:
        return "trio sockets/streams"
    if "socket" in file:
        return "socket module"
    if "bench/" in file:
        return file
    return "other: " + file


def analyse(
    stacks: Sequence[tuple[list[str], int]], us_per_query: float, top: int
) -> dict[str, Any]:
    """Self / inclusive / per-file shares of the non-wait samples, in µs per query."""
    waiting = sum(n for frames, n in stacks if frames and frames[-1] == WAIT_LEAF)
    stacks = [(frames, n) for frames, n in stacks if not frames or frames[-1] != WAIT_LEAF]
    # Other threads (the audit's fsync thread, trio's worker threads) spend their time
    # blocked in C calls, which py-spy counts as busy: their samples are left out, and their
    # CPU is reported from /proc instead (``thread_cpu``).
    stacks = [(frames, n) for frames, n in stacks if OTHER_THREAD not in frames]
    total = sum(n for _, n in stacks) or 1
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    cat_counts: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        # py-spy may put the thread ("process ..."/"thread ...") first; skip non-frames.
        real = [f for f in frames if _FRAME.match(f)]
        if not real:
            continue
        leaf = real[-1]
        self_counts[leaf] += n
        cat_counts[category(file_of(leaf))] += n
        for f in set(real):
            if not _is_launcher(f):
                incl_counts[f] += n

    def rows(counter: collections.Counter[str]) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "share": n / total,
                "us_per_query": us_per_query * n / total,
                "samples": n,
            }
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "epoll_wait_samples": waiting,
        "self": rows(self_counts),
        "inclusive": rows(incl_counts),
        "by_file": rows(cat_counts),
    }


def _table(title: str, rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"| {title} | share of samples | µs/query |", "|---|---:|---:|"]
    for r in rows:
        name = r["name"].replace("|", "\\|")
        lines.append(f"| `{name}` | {r['share']:.1%} | {r['us_per_query']:.1f} |")
    return "\n".join(lines)


def load_argv(ep: Endpoint, args: argparse.Namespace) -> list[str]:
    """The load to profile under: sysbench for --seconds, or CLI streams for --seconds."""
    if args.workload == "stream":
        one = shlex.join(stream_argv(ep, args.stream_rows))
        loop = (
            f"end=$((SECONDS + {args.seconds})); while [ $SECONDS -lt $end ]; do "
            f"{one} > /dev/null || exit 1; echo stream done; done"
        )
        return ["bash", "-c", loop]
    return sysbench_argv(
        ep,
        "oltp_point_select",
        threads=args.threads,
        ps_mode=args.ps_mode,
        seconds=args.seconds,
        tables=args.tables,
        table_size=args.table_size,
    )


def _stack(args: argparse.Namespace) -> contextlib.AbstractContextManager[Stack]:
    return bench_stack(
        tables=args.tables,
        table_size=args.table_size,
        bare=args.target == "bare",
        **gateway_settings(args),
    )


def count_syscalls(args: argparse.Namespace) -> int:
    """strace -c -f on the proxy while sysbench runs exactly N point selects."""
    with _stack(args) as stack:
        ep = stack.endpoints[args.target]
        assert ep.pid is not None
        argv = sysbench_argv(
            ep,
            "oltp_point_select",
            threads=args.threads,
            ps_mode=args.ps_mode,
            seconds=0,
            tables=args.tables,
            table_size=args.table_size,
        )
        argv = [a for a in argv if not a.startswith(("--time=", "--events="))]
        argv.insert(-1, "--time=0")
        argv.insert(-1, f"--events={args.syscalls}")
        subprocess.run(argv, check=True, capture_output=True, timeout=300)  # warm up
        strace = spawn(
            ["strace", "-c", "-f", "-p", str(ep.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # let strace attach
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
        finally:
            strace.send_signal(signal.SIGINT)
            _, err = strace.communicate(timeout=30)
    stats = parse_sysbench(out)
    queries = stats.get("queries") or args.syscalls
    print(f"{args.target}: syscalls per query over {queries:.0f} point selects (+ connect/close)")
    print("| syscall | calls/query |\n|---|---:|")
    for line in err.decode(errors="replace").splitlines():
        parts = line.split()
        # strace -c columns: % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[3].isdigit():
            print(f"| {parts[-1]} | {int(parts[3]) / queries:.2f} |")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--target",
        choices=("hoopy", "bare", "relay"),
        default="hoopy",
        help="hoopy as configured by --audit/--guardrails, hoopy with neither, or the relay",
    )
    p.add_argument(
        "--workload",
        choices=("point_select", "stream"),
        default="point_select",
        help="sysbench oltp_point_select, or the mariadb CLI streaming --stream-rows rows",
    )
    p.add_argument("--stream-rows", type=int, default=1_000_000)
    add_gateway_options(p)
    p.add_argument("--ps-mode", choices=("disable", "auto"), default="disable")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--no-spin", action="store_true")
    p.add_argument(
        "--nonblocking",
        action="store_true",
        help="py-spy --nonblocking (less overhead, but ~20%% torn stacks)",
    )
    p.add_argument("--tables", type=int, default=4)
    p.add_argument("--table-size", type=int, default=10000)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--syscalls",
        type=int,
        metavar="N",
        help="instead of py-spy: count the proxy's syscalls with strace -c over N queries",
    )
    args = p.parse_args(argv)
    if args.syscalls:
        return count_syscalls(args)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    raw_path = args.results_dir / f"profile-{stamp}-{args.target}-{args.workload}.collapsed"
    with _stack(args) as stack:
        ep = stack.endpoints[args.target]
        assert ep.pid is not None
        warm = sysbench_argv(
            ep,
            "oltp_point_select",
            threads=args.threads,
            ps_mode=args.ps_mode,
            seconds=2,
            tables=args.tables,
            table_size=args.table_size,
        )
        subprocess.run(warm, check=True, capture_output=True, timeout=120)
        spin = not args.no_spin and args.workload == "point_select" and args.threads == 1
        spinner = None if not spin else start_spinner(args.seconds + 120)
        try:
            cpu0 = cpu_split(ep.pid)
            threads0 = thread_cpu(ep.pid)
            bench = subprocess.Popen(
                load_argv(ep, args),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            time.sleep(0.5)
            spy = spawn(
                [
                    py_spy_binary(),
                    "record",
                    "--pid",
                    str(ep.pid),
                    "--format",
                    "raw",
                    "--nolineno",
                    *(["--nonblocking"] if args.nonblocking else []),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(max(1, args.seconds - 1)),
                    "--output",
                    str(raw_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            out, _ = bench.communicate(timeout=args.seconds + 120)
            cpu1 = cpu_split(ep.pid)
            threads1 = thread_cpu(ep.pid)
            _, spy_err = spy.communicate(timeout=60)
        finally:
            if spinner is not None:
                stop_process(spinner)
    if args.workload == "stream":
        streams = out.count("stream done")
        # "queries" are 1000-row units here, so the tables read "µs per 1000 rows".
        stats = {"streams": float(streams), "queries": streams * args.stream_rows / 1000}
        what = f"streaming {args.stream_rows:,} rows x {streams} with the mariadb CLI"
        unit = "µs CPU per 1000 rows"
    else:
        stats = parse_sysbench(out)
        what = (
            f"oltp_point_select, {args.threads} thread(s), --db-ps-mode={args.ps_mode}: "
            f"{stats.get('qps', 0):,.0f} QPS"
        )
        unit = "µs CPU per query"
    queries = stats.get("queries")
    if not queries or not raw_path.exists():
        print(out, spy_err.decode(errors="replace"), file=sys.stderr)
        return 1
    us_per_query = (sum(cpu1) - sum(cpu0)) * 1e6 / queries
    sys_share = (cpu1[1] - cpu0[1]) / max(sum(cpu1) - sum(cpu0), 1e-9)
    main_us = (threads1["main"] - threads0["main"]) * 1e6 / queries
    result = analyse(parse_collapsed(raw_path.read_text()), main_us, args.top)
    header = (
        f"{args.target}, {what}, "
        f"{us_per_query:.1f} {unit} (from /proc; {sys_share:.0%} of it in the kernel), "
        f"{result['samples']} non-idle samples at {args.rate} Hz plus "
        f"{result['epoll_wait_samples']} in epoll_wait (left out)"
    )
    per_thread = {name: (threads1[name] - threads0[name]) * 1e6 / queries for name in threads1}
    thread_rows = "\n".join(
        f"| {name} | {us:.1f} |"
        for name, us in sorted(per_thread.items(), key=lambda kv: -kv[1])
        if us >= 0.05
    )
    report = "\n\n".join(
        [
            header,
            f"CPU by thread, from /proc ({unit}); the tables below share out the main "
            "thread's (py-spy counts a thread blocked in a C call as busy, so the other "
            "threads' samples are left out):\n\n"
            "| thread | µs |\n|---|---:|\n" + thread_rows,
            _table("by file (self time)", result["by_file"]),
            _table("function (self time)", result["self"]),
            _table("function (inclusive)", result["inclusive"]),
        ]
    )
    print(report)
    summary_path = raw_path.with_suffix(".json")
    summary_path.write_text(
        json.dumps(
            {
                "settings": {k: str(v) for k, v in vars(args).items()},
                "sysbench": stats,
                "us_per_query": us_per_query,
                **result,
                "markdown": report,
            },
            indent=2,
        )
    )
    print(f"\nraw stacks: {raw_path}\nJSON: {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
