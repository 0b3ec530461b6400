"""Benchmark hoopy against a direct MariaDB connection and a bare trio relay (the control).

    .venv/bin/python -m bench.run                 # 3 interleaved rounds, 10 s per run
    .venv/bin/python -m bench.run --quick         # smoke check: 1 round, 3 s per run
    .venv/bin/python -m bench.run --workloads point_select_t1_ps_disable,stream_1m

One throwaway MariaDB (tests.rig.MariaDBServer, TLS off), sysbench tables prepared once,
then hoopy (gateway_users login, plain-TCP listener, upstream TLS off) and
``bench/trio_relay.py`` in front of it. Each round runs every workload against direct /
hoopy / relay back to back (the order rotates per round), so slow drifts on a shared machine
hit all three alike. For every run it records QPS (or wall seconds for the streaming test) and
the CPU time (utime+stime from /proc/<pid>/stat) each process used during the run, so that
CPU microseconds per query can be compared even when the machine is busy.

Results: a markdown table on stdout and everything as JSON in bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.gateway_rig import (
    APP_PASSWORD,
    APP_USER,
    DEV_PASSWORD,
    DEV_USER,
    HoopyProcess,
    default_config,
)
from tests.rig import MariaDBServer, spawn

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DB = "sbtest"
# hoopy as users run it (audit on, default rules: --audit/--guardrails), hoopy with the audit
# off and no rules (``bare``), and the bare trio relay (the control).
TARGETS = ("direct", "hoopy", "bare", "relay")
# What the issue allows hoopy's CPU per statement to be, as a multiple of the relay's.
CPU_BOUND = 1.25
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "sysbench" or "stream"
    test: str = ""
    threads: int = 1
    ps_mode: str = "auto"

    @property
    def spin(self) -> bool:
        """Single-connection latency runs get the low-priority busy loop (vCPU wake-ups)."""
        return self.kind == "sysbench" and self.threads == 1


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("point_select_t1_ps_disable", "sysbench", "oltp_point_select", 1, "disable"),
        Workload("point_select_t1_ps_auto", "sysbench", "oltp_point_select", 1, "auto"),
        Workload("point_select_t8_ps_disable", "sysbench", "oltp_point_select", 8, "disable"),
        Workload("point_select_t8_ps_auto", "sysbench", "oltp_point_select", 8, "auto"),
        Workload("read_only_t8", "sysbench", "oltp_read_only", 8, "auto"),
        Workload("stream_1m", "stream"),
    )
}


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int
    user: str
    password: str
    pid: int | None  # the proxy process (None for direct)


@dataclass
class Stack:
    db: MariaDBServer
    endpoints: dict[str, Endpoint]
    hoopy: HoopyProcess
    relay: subprocess.Popen[bytes]
    bare: HoopyProcess | None = None  # hoopy with the audit off and no rules
    # process name -> pid (or pids: hoopy with workers), for CPU
    pids: dict[str, int | list[int]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------


def cpu_split(pid: int | Sequence[int]) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads), in seconds; of several summed (hoopy
    with ``workers``: the supervisor and each worker)."""
    if not isinstance(pid, int):
        parts = [cpu_split(p) for p in pid]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14, 15 of proc(5)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (utime + stime) of a process's main thread (``main``: hoopy's event loop)
    and of all its other threads together (``other``: the audit's fsync thread, trio's
    worker threads)."""
    out = {"main": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        fields = stat.rpartition(")")[2].split()
        which = "main" if task.name == str(pid) else "other"
        out[which] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    return sum(cpu_split(pid))


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])  # without guest time, which is already in user
    return total - idle, total


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = _run_text(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = bool(_run_text(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "hoopy"]))
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sysbench": _run_text(["sysbench", "--version"]),
        "mariadb_client": _run_text(["mariadb", "--version"]),
        "hoopy_commit": commit + ("+dirty" if dirty else ""),
        "loadavg_at_start": os.getloadavg(),
    }


def _run_text(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------------------------------
# The stack: MariaDB + sysbench tables, hoopy, the trio relay
# --------------------------------------------------------------------------------------


def sysbench_argv(
    ep: Endpoint,
    test: str,
    *,
    threads: int,
    ps_mode: str,
    seconds: float,
    tables: int,
    table_size: int,
    command: str = "run",
) -> list[str]:
    return [
        "sysbench",
        test,
        f"--mysql-host={ep.host}",
        f"--mysql-port={ep.port}",
        f"--mysql-user={ep.user}",
        f"--mysql-password={ep.password}",
        f"--mysql-db={DB}",
        "--mysql-ssl=off",
        f"--tables={tables}",
        f"--table-size={table_size}",
        f"--threads={threads}",
        f"--time={max(1, round(seconds))}",
        "--events=0",
        f"--db-ps-mode={ps_mode}",
        "--report-interval=0",
        command,
    ]


def _wait_ready_file(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before becoming ready")
        time.sleep(0.02)
    raise RuntimeError(f"not ready within {timeout:.0f}s")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def sysbench_database(*, tables: int, table_size: int) -> Iterator[tuple[MariaDBServer, Endpoint]]:
    """A throwaway MariaDB (TLS off) with sysbench tables prepared, and its direct endpoint."""
    _log("starting MariaDB ...")
    with MariaDBServer(tls=False) as db:
        db.admin_sql(f"CREATE DATABASE IF NOT EXISTS {DB}")
        db.create_user(APP_USER, APP_PASSWORD, grants=[f"ALL ON {DB}.*"])
        direct = Endpoint("direct", db.host, db.port, APP_USER, APP_PASSWORD, None)
        _log(f"preparing sysbench: {tables} tables x {table_size} rows ...")
        subprocess.run(
            sysbench_argv(
                direct,
                "oltp_read_only",
                threads=min(tables, 4),
                ps_mode="disable",
                seconds=1,
                tables=tables,
                table_size=table_size,
                command="prepare",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
        yield db, direct


def gateway_config(
    db: MariaDBServer, gw_dir: Path, audit: dict[str, Any], log_level: str = "info"
) -> dict[str, Any]:
    """hoopy for benchmarks: gateway users, one plain-TCP listener, upstream TLS off, the
    sysbench database; ``audit`` is its ``[audit]`` table."""
    config = default_config(db, gw_dir)
    config["gateway"]["log_level"] = log_level
    listener = dict(config["listeners"][0])
    listener["tls"] = False
    listener.pop("unix_socket", None)
    config["listeners"] = [listener]
    config["targets"]["app"]["database"] = DB
    config["targets"]["app"]["tls"] = "off"
    config["audit"] = audit
    return config


def hoopy_config(
    db: MariaDBServer,
    gw_dir: Path,
    audit: str | None,
    guardrails: Sequence[str],
    log_level: str = "info",
    workers: int = 1,
) -> dict[str, Any]:
    """``gateway_config`` with the audit in ``audit`` durability (None: off), ``guardrails``
    on the target and ``workers`` gateway processes."""
    config = gateway_config(
        db,
        gw_dir,
        {"directory": str(gw_dir / "audit"), "durability": audit}
        if audit is not None
        else {"enabled": False},
        log_level,
    )
    config["targets"]["app"]["guardrails"] = list(guardrails)
    if workers > 1:
        config["gateway"]["workers"] = workers
    return config


@contextlib.contextmanager
def bench_stack(
    *,
    tables: int,
    table_size: int,
    hoopy_log_level: str = "info",
    audit: str | None = "os",
    guardrails: Sequence[str] = ("default",),
    bare: bool = True,
    workers: int = 1,
) -> Iterator[Stack]:
    """MariaDB with prepared sysbench tables, hoopy (``audit``: its durability, None for off;
    ``guardrails``: rule sets), with ``bare`` a second hoopy without audit or rules, and the
    relay in front; all torn down after."""
    with sysbench_database(tables=tables, table_size=table_size) as (db, direct):
        gw_dir = Path(tempfile.mkdtemp(prefix="hoopy-gw-"))  # HoopyProcess.close() removes it
        config = hoopy_config(db, gw_dir, audit, guardrails, hoopy_log_level, workers)
        relay_dir = Path(tempfile.mkdtemp(prefix="hoopy-relay-"))
        relay: subprocess.Popen[bytes] | None = None
        hoopy = HoopyProcess(config, workdir=gw_dir)
        bare_hoopy: HoopyProcess | None = None
        try:
            _log("starting hoopy and the trio relay ...")
            hoopy.start()
            endpoints = {"direct": direct}
            assert hoopy.pid is not None and db.proc is not None
            pids: dict[str, int | list[int]] = {"hoopy": hoopy.pid}
            if workers > 1:
                pids["hoopy"] = [hoopy.pid, *(w["pid"] for w in hoopy.ready["workers"])]
            if bare:
                bare_dir = Path(tempfile.mkdtemp(prefix="hoopy-bare-"))
                bare_hoopy = HoopyProcess(
                    hoopy_config(db, bare_dir, None, (), hoopy_log_level), workdir=bare_dir
                )
                bare_hoopy.start()
            with (relay_dir / "out.log").open("wb") as out:
                relay = spawn(
                    [
                        sys.executable,
                        str(BENCH_DIR / "trio_relay.py"),
                        "--target",
                        f"{db.host}:{db.port}",
                        "--ready-file",
                        str(relay_dir / "ready.json"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            ready = _wait_ready_file(relay_dir / "ready.json", relay, 20)
            h_host, h_port = hoopy.address()
            endpoints["hoopy"] = Endpoint(
                "hoopy", h_host, h_port, DEV_USER, DEV_PASSWORD, hoopy.pid
            )
            if bare_hoopy is not None:
                assert bare_hoopy.pid is not None
                b_host, b_port = bare_hoopy.address()
                endpoints["bare"] = Endpoint(
                    "bare", b_host, b_port, DEV_USER, DEV_PASSWORD, bare_hoopy.pid
                )
                pids["bare"] = bare_hoopy.pid
            endpoints["relay"] = Endpoint(
                "relay",
                str(ready["tcp"][0]),
                int(ready["tcp"][1]),
                APP_USER,
                APP_PASSWORD,
                relay.pid,
            )
            pids.update(relay=relay.pid, mariadbd=db.proc.pid)
            yield Stack(
                db=db, hoopy=hoopy, relay=relay, bare=bare_hoopy, endpoints=endpoints, pids=pids
            )
        finally:
            if relay is not None and relay.poll() is None:
                relay.send_signal(signal.SIGINT)
                try:
                    relay.wait(10)
                except subprocess.TimeoutExpired:
                    relay.kill()
                    relay.wait()
            shutil.rmtree(relay_dir, ignore_errors=True)
            hoopy.close()
            if bare_hoopy is not None:
                bare_hoopy.close()


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------

_NUM = r"([0-9.]+)"


def parse_sysbench(text: str) -> dict[str, float]:
    patterns = {
        "queries": rf"queries:\s+{_NUM}\s+\(",
        "qps": rf"queries:\s+[0-9]+\s+\({_NUM} per sec",
        "tps": rf"transactions:\s+[0-9]+\s+\({_NUM} per sec",
        "errors": rf"ignored errors:\s+{_NUM}",
        "reconnects": rf"reconnects:\s+{_NUM}",
        "total_time_s": rf"total time:\s+{_NUM}s",
        "lat_avg_ms": rf"avg:\s+{_NUM}",
        "lat_p95_ms": rf"95th percentile:\s+{_NUM}",
    }
    out: dict[str, float] = {}
    for key, pattern in patterns.items():
        m = re.search(pattern, text)
        if m:
            out[key] = float(m.group(1))
    return out


def stream_query(rows: int) -> str:
    return f"SELECT seq, seq*2, CONCAT('row-', seq) FROM seq_1_to_{rows}"


def stream_argv(ep: Endpoint, rows: int) -> list[str]:
    return [
        "mariadb",
        "--no-defaults",
        "--skip-ssl",
        f"--host={ep.host}",
        f"--port={ep.port}",
        f"--user={ep.user}",
        f"--password={ep.password}",
        DB,
        "--quick",
        "--batch",
        "-e",
        stream_query(rows),
    ]


def start_spinner(seconds: float) -> subprocess.Popen[bytes]:
    """A nice-19 busy loop that keeps the idle vCPU awake; it also ends by itself."""
    code = (
        f"import time\nend = time.monotonic() + {seconds:.0f}\nwhile time.monotonic() < end: pass"
    )
    return spawn(["nice", "-n", "19", sys.executable, "-c", code], stdin=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def measure(
    stack: Stack, w: Workload, target: str, args: argparse.Namespace, round_no: int
) -> dict[str, Any]:
    ep = stack.endpoints[target]
    spinner = start_spinner(args.time + 120) if (w.spin and not args.no_spin) else None
    cpu_before = {name: cpu_split(pid) for name, pid in stack.pids.items()}
    busy0, total0 = machine_ticks()
    t0 = time.perf_counter()
    result: dict[str, Any] = {"workload": w.name, "target": target, "round": round_no}
    try:
        if w.kind == "sysbench":
            argv = sysbench_argv(
                ep,
                w.test,
                threads=w.threads,
                ps_mode=w.ps_mode,
                seconds=args.time,
                tables=args.tables,
                table_size=args.table_size,
            )
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.time + 120)
            wall = time.perf_counter() - t0
            result.update(parse_sysbench(proc.stdout))
            if proc.returncode != 0 or "queries" not in result:
                result["error"] = (proc.stderr or proc.stdout)[-2000:]
            result["value"] = result.get("qps")
        else:
            with open(os.devnull, "wb") as null:
                proc2 = subprocess.run(
                    stream_argv(ep, args.stream_rows),
                    stdout=null,
                    stderr=subprocess.PIPE,
                    timeout=600,
                )
            wall = time.perf_counter() - t0
            if proc2.returncode != 0:
                result["error"] = proc2.stderr.decode(errors="replace")[-2000:]
            result["queries"] = 1
            result["value"] = wall
            result["rows"] = args.stream_rows
    finally:
        if spinner is not None:
            stop_process(spinner)
    busy1, total1 = machine_ticks()
    cpu_after = {name: cpu_split(pid) for name, pid in stack.pids.items()}
    cpu = {name: sum(cpu_after[name]) - sum(cpu_before[name]) for name in stack.pids}
    result["wall_s"] = wall
    result["cpu_s"] = cpu
    result["cpu_sys_s"] = {name: cpu_after[name][1] - cpu_before[name][1] for name in stack.pids}
    result["spinner"] = spinner is not None
    # Share of the whole machine busy during the run (includes our own processes).
    result["machine_busy"] = (busy1 - busy0) / max(total1 - total0, 1)
    result["loadavg_after"] = os.getloadavg()
    queries = result.get("queries") or 0
    if queries:
        proxy = ep.name if ep.pid is not None else None
        result["proxy_cpu_us_per_query"] = cpu[proxy] * 1e6 / queries if proxy else None
        result["mariadbd_cpu_us_per_query"] = cpu["mariadbd"] * 1e6 / queries
    if not stack.hoopy.running:
        result["hoopy_died"] = stack.hoopy.stderr_text()[-4000:]
    return result


def warm_up(stack: Stack, workloads: Sequence[Workload], args: argparse.Namespace) -> None:
    """Warm InnoDB and both Python processes; check each endpoint streams the full row count."""
    for target in TARGETS:
        ep = stack.endpoints[target]
        if any(w.kind == "sysbench" for w in workloads):
            argv = sysbench_argv(
                ep,
                "oltp_point_select",
                threads=2,
                ps_mode="auto",
                seconds=1 if args.quick else 2,
                tables=args.tables,
                table_size=args.table_size,
            )
            subprocess.run(argv, check=True, capture_output=True, timeout=120)
        if any(w.kind == "stream" for w in workloads):
            proc = subprocess.run(
                stream_argv(ep, args.stream_rows), capture_output=True, timeout=600
            )
            lines = proc.stdout.count(b"\n")
            if proc.returncode != 0 or lines != args.stream_rows + 1:  # + the header line
                raise RuntimeError(
                    f"streaming check via {target} failed: exit {proc.returncode}, {lines} lines, "
                    f"stderr: {proc.stderr.decode(errors='replace')[-500:]}"
                )


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def summarize(runs: Sequence[dict[str, Any]], workloads: Sequence[Workload]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for w in workloads:
        per: dict[str, Any] = {}
        for target in TARGETS:
            mine = [r for r in runs if r["workload"] == w.name and r["target"] == target]
            ok = [r for r in mine if "error" not in r and r.get("value")]
            values = [float(r["value"]) for r in ok]
            per[target] = {
                "n": len(ok),
                "failed": len(mine) - len(ok),
                "median": _median(values),
                "min": min(values) if values else None,
                "max": max(values) if values else None,
                "proxy_cpu_us_per_query": _median([r.get("proxy_cpu_us_per_query") for r in ok]),
                "mariadbd_cpu_us_per_query": _median(
                    [r.get("mariadbd_cpu_us_per_query") for r in ok]
                ),
                "lat_avg_ms": _median([r.get("lat_avg_ms") for r in ok]),
                "lat_p95_ms": _median([r.get("lat_p95_ms") for r in ok]),
            }
        base = per["direct"]["median"]
        for target in TARGETS:
            value = per[target]["median"]
            if base and value:
                # Throughput ratio: QPS / direct QPS, or direct seconds / seconds for streaming.
                per[target]["ratio"] = value / base if w.kind == "sysbench" else base / value
            else:
                per[target]["ratio"] = None
        summary[w.name] = per
    return summary


def check_targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for name, per in summary.items():
        r = per["relay"]["proxy_cpu_us_per_query"]
        if name.startswith("point_select") or name == "read_only_t8":
            h = per["hoopy"]["proxy_cpu_us_per_query"]
            checks.append(
                {
                    "target": f"{name}: hoopy CPU/query <= {CPU_BOUND}x relay CPU/query",
                    "hoopy": h,
                    "bound": r * CPU_BOUND if r is not None else None,
                    "met": h is not None and r is not None and h <= r * CPU_BOUND,
                }
            )
            b = per.get("bare", {}).get("proxy_cpu_us_per_query")
            if b is not None:
                checks.append(
                    {
                        "target": f"{name}: bare hoopy CPU/query <= relay CPU/query",
                        "hoopy": b,
                        "bound": r,
                        "met": r is not None and b <= r,
                    }
                )
        if name.startswith("point_select_t8"):
            ratio = per["hoopy"]["ratio"]
            checks.append(
                {
                    "target": f"{name}: hoopy QPS >= 0.25x direct",
                    "hoopy": ratio,
                    "bound": 0.25,
                    "met": ratio is not None and ratio >= 0.25,
                }
            )
        if name == "stream_1m":
            ratio = per["hoopy"]["ratio"]
            checks.append(
                {
                    "target": "stream_1m: hoopy throughput >= 0.9x direct",
                    "hoopy": ratio,
                    "bound": 0.9,
                    "met": ratio is not None and ratio >= 0.9,
                }
            )
    return checks


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cpu(per: Any, target: str, stream: bool, key: str = "proxy_cpu_us_per_query") -> str:
    """CPU µs per query; for the streaming test, ms per 1M-row stream."""
    v = per[target][key]
    if v is None:
        return "-"
    return f"{v * 1e-3:,.0f} ms" if stream else f"{v:.1f}"


def markdown(summary: dict[str, Any], checks: Sequence[dict[str, Any]]) -> str:
    """The results: ``hoopy`` is the gateway as configured (by default audit ``os`` and the
    ``default`` rules), ``bare`` the same gateway with the audit off and no rules."""
    lines = [
        "| workload | direct | hoopy | bare | relay | hoopy/direct | bare/direct | relay/direct "
        "| hoopy CPU µs/q | bare CPU µs/q | relay CPU µs/q | hoopy/relay CPU "
        "| mariadbd CPU µs/q (direct) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, per in summary.items():
        stream = name.startswith("stream")
        unit = "s" if stream else "QPS"
        spec = ".2f" if stream else ",.0f"
        h, r = per["hoopy"]["proxy_cpu_us_per_query"], per["relay"]["proxy_cpu_us_per_query"]
        cpu_ratio = h / r if h is not None and r else None
        lines.append(
            f"| {name} ({unit}) | {_fmt(per['direct']['median'], spec)} "
            + "".join(f"| {_fmt(per[t]['median'], spec)} " for t in ("hoopy", "bare", "relay"))
            + "".join(f"| {_fmt(per[t]['ratio'], '.2f')}x " for t in ("hoopy", "bare", "relay"))
            + "".join(f"| {_cpu(per, t, stream)} " for t in ("hoopy", "bare", "relay"))
            + f"| {_fmt(cpu_ratio, '.2f')}x "
            f"| {_cpu(per, 'direct', stream, 'mariadbd_cpu_us_per_query')} |"
        )
    lat = [n for n in summary if not n.startswith("stream")]
    if lat:
        names = " / ".join(TARGETS)
        lines += [
            "",
            f"| workload | avg latency ms {names} | p95 ms {names} |",
            "|---|---:|---:|",
        ]
        for name in lat:
            per = summary[name]
            avg = " / ".join(_fmt(per[t]["lat_avg_ms"], ".2f") for t in TARGETS)
            p95 = " / ".join(_fmt(per[t]["lat_p95_ms"], ".2f") for t in TARGETS)
            lines.append(f"| {name} | {avg} | {p95} |")
    lines += ["", "| target from the issue | hoopy | bound | met |", "|---|---:|---:|---|"]
    for c in checks:
        lines.append(
            f"| {c['target']} | {_fmt(c['hoopy'], '.2f')} | {_fmt(c['bound'], '.2f')} "
            f"| {'yes' if c['met'] else 'NO'} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def rounds_parser(
    prog: str, doc: str | None, workloads: Mapping[str, Any]
) -> argparse.ArgumentParser:
    """The options every interleaved-rounds benchmark takes (finish with ``parse_rounds``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--time", type=float, default=10.0, help="seconds per sysbench run (10)")
    p.add_argument(
        "--workloads",
        default="all",
        help=f"comma-separated subset of: {', '.join(workloads)} (default all)",
    )
    p.add_argument("--quick", action="store_true", help="smoke check: 1 round, 3 s per run")
    p.add_argument("--tables", type=int, default=4)
    p.add_argument("--table-size", type=int, default=10000)
    p.add_argument("--no-spin", action="store_true", help="no busy loop during 1-thread runs")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return p


def parse_rounds(
    p: argparse.ArgumentParser, argv: Sequence[str] | None, workloads: Mapping[str, Any]
) -> argparse.Namespace:
    """Parse, apply --quick, and resolve --workloads into ``args.workload_list``."""
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.time = 1, 3.0
    if args.workloads == "all":
        args.workload_list = list(workloads.values())
    else:
        names = [n.strip() for n in args.workloads.split(",") if n.strip()]
        unknown = [n for n in names if n not in workloads]
        if unknown:
            p.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(workloads)}")
        args.workload_list = [workloads[n] for n in names]
    return args


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options, JSON-ready, for the results file."""
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k != "workload_list"
    }


def add_gateway_options(p: argparse.ArgumentParser) -> None:
    """--audit and --guardrails: how the benchmarked hoopy is configured (by default as users
    get it); ``bare`` hoopy always runs with the audit off and no rules."""
    p.add_argument(
        "--audit",
        choices=["off", "os", "strict"],
        default="os",
        help="hoopy's audit durability, or off (default: os, hoopy's default)",
    )
    p.add_argument(
        "--guardrails",
        default="default",
        help="comma-separated rule sets on hoopy's target, '' for none (default: default)",
    )


def gateway_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``bench_stack``'s audit and guardrails arguments from ``add_gateway_options``."""
    return {
        "audit": None if args.audit == "off" else args.audit,
        "guardrails": [g for g in args.guardrails.split(",") if g],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = rounds_parser("python -m bench.run", __doc__, WORKLOADS)
    p.add_argument("--stream-rows", type=int, default=1_000_000)
    add_gateway_options(p)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="hoopy's [gateway] workers (default 1; 'bare' stays one process); hoopy's CPU is "
        "then the supervisor's and every worker's",
    )
    return parse_rounds(p, argv, WORKLOADS)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workloads: list[Workload] = args.workload_list
    started = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    info = machine_info()
    runs: list[dict[str, Any]] = []
    with bench_stack(
        tables=args.tables,
        table_size=args.table_size,
        workers=args.workers,
        **gateway_settings(args),
    ) as stack:
        info["mariadb_server"] = stack.db.admin_sql("SELECT VERSION()")[0][0]
        _log("warming up ...")
        warm_up(stack, workloads, args)
        for round_no in range(args.rounds):
            turn = round_no % len(TARGETS)
            order = TARGETS[turn:] + TARGETS[:turn]
            for w in workloads:
                for target in order:
                    if not stack.hoopy.running:
                        continue  # reported once, in the run where it died
                    r = measure(stack, w, target, args, round_no)
                    runs.append(r)
                    cpu = r.get("proxy_cpu_us_per_query")
                    _log(
                        f"round {round_no + 1}/{args.rounds} {w.name:28} {target:6} "
                        f"value={_fmt(r.get('value'), '.2f'):>10} "
                        f"proxy_us/q={_fmt(cpu, '.1f'):>8} busy={r['machine_busy']:.0%}"
                        + (f"  ERROR: {r['error'][-300:]}" if "error" in r else "")
                    )
                    if "hoopy_died" in r:
                        _log("hoopy died:\n" + r["hoopy_died"])
        hoopy_stderr = stack.hoopy.stderr_text()
    info["loadavg_at_end"] = os.getloadavg()
    summary = summarize(runs, workloads)
    checks = check_targets(summary)
    table = markdown(summary, checks)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{started}.json"
    settings = run_settings(args)
    out.write_text(
        json.dumps(
            {
                "started": started,
                "settings": settings,
                "workloads": [asdict(w) for w in workloads],
                "machine": info,
                "summary": summary,
                "targets": checks,
                "runs": runs,
                "hoopy_warnings": [
                    line
                    for line in hoopy_stderr.splitlines()
                    if "WARNING" in line or "ERROR" in line
                ][-50:],
                "markdown": table,
            },
            indent=2,
        )
    )
    print(table)
    print(f"\nJSON: {out}")
    failed = any("error" in r or "hoopy_died" in r for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
