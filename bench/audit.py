"""What hoopy's audit trail costs: audit off vs ``durability = "os"`` vs ``"strict"``.

    .venv/bin/python -m bench.audit                 # 3 interleaved rounds, 10 s per run
    .venv/bin/python -m bench.audit --quick         # smoke check: 1 round, 3 s per run
    .venv/bin/python -m bench.audit --rounds 5 --time 20 --audit-root /var/tmp

One throwaway MariaDB (tests.rig.MariaDBServer, TLS off), sysbench tables prepared once
(4 x 10000 rows), then three hoopy processes in front of it, configured like bench/run.py's
(gateway_users login, plain-TCP listener, upstream TLS off) except for ``[audit]``:

- ``off``: ``enabled = false``;
- ``os``: the default, each statement's record written (page cache) before it is forwarded,
  fsync'ed in the background every ``fsync_interval``;
- ``strict``: each record also fsync'ed before the statement is forwarded; sessions waiting
  at the same moment share one fsync (group commit).

The audit directories live under ``--audit-root`` (default /var/tmp), which must be a real
disk filesystem: the script refuses tmpfs/ramfs (fsync there costs nothing, so ``strict``
would measure nothing) and records the filesystem type, plus a small write+fsync latency
probe of that directory, in the results.

Workloads: sysbench ``oltp_point_select`` and ``oltp_write_only`` (``--db-ps-mode=disable``,
so every statement is a COM_QUERY) at 1 and 8 threads. Each round runs every workload against
off / os / strict back to back, the order rotating per round, so slow drifts on a shared
machine hit all three alike. Per run: QPS, latency, the CPU time (utime+stime from
/proc/<pid>/stat, all threads) of hoopy and of mariadbd per query, hoopy's write syscalls and
bytes sent to storage (/proc/<pid>/io), and the audit bytes written per query (growth of the
``.jsonl`` files). The summary gives medians, the ratios os/off and strict/off, and the group
commit ratio: strict QPS at 8 threads / strict QPS at 1 thread.

Results: a markdown table on stdout and everything as JSON in
bench/results/audit-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.run import (
    Endpoint,
    _fmt,
    _log,
    _median,
    cpu_split,
    gateway_config,
    machine_info,
    machine_ticks,
    parse_rounds,
    parse_sysbench,
    rounds_parser,
    run_settings,
    start_spinner,
    stop_process,
    sysbench_argv,
    sysbench_database,
)
from tests.gateway_rig import (
    DEV_PASSWORD,
    DEV_USER,
    HoopyProcess,
)
from tests.rig import MariaDBServer

MODES = ("off", "os", "strict")
# Filesystems where fsync does not reach a disk: a strict-mode number there means nothing.
MEMORY_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"}


@dataclass(frozen=True)
class Workload:
    name: str
    test: str
    threads: int
    ps_mode: str = "disable"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("point_select_t1", "oltp_point_select", 1),
        Workload("point_select_t8", "oltp_point_select", 8),
        Workload("write_only_t1", "oltp_write_only", 1),
        Workload("write_only_t8", "oltp_write_only", 8),
    )
}
# Group commit: (8-thread workload, 1-thread workload).
GROUP_COMMIT_PAIRS = (("point_select_t8", "point_select_t1"), ("write_only_t8", "write_only_t1"))


@dataclass
class Gateway:
    mode: str
    hoopy: HoopyProcess
    endpoint: Endpoint
    audit_dir: Path | None


# --------------------------------------------------------------------------------------
# The filesystem under the audit directories
# --------------------------------------------------------------------------------------


def _unescape_mount(path: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def filesystem_of(path: Path) -> dict[str, str]:
    """The mount (device, mount point, type, options) that holds ``path``, from /proc/mounts."""
    real = os.path.realpath(path)
    best: dict[str, str] = {"device": "?", "mount_point": "/", "type": "unknown", "options": ""}
    best_len = -1
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mount = _unescape_mount(parts[1])
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= best_len:  # the last (topmost) of equal mounts wins
            best_len = len(mount)
            best = {"device": parts[0], "mount_point": mount, "type": parts[2], "options": parts[3]}
    return best


def fsync_probe(directory: Path, count: int = 200, size: int = 600) -> dict[str, float]:
    """Latency of one append of ``size`` bytes + fsync in ``directory`` (what a strict-mode
    statement waits for at least, when it does not share the fsync)."""
    path = directory / ".fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    samples: list[float] = []
    try:
        line = b"x" * (size - 1) + b"\n"
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            samples.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    samples.sort()
    return {
        "count": count,
        "median_ms": statistics.median(samples),
        "p95_ms": samples[int(0.95 * (len(samples) - 1))],
        "max_ms": samples[-1],
    }


# --------------------------------------------------------------------------------------
# /proc and directory helpers
# --------------------------------------------------------------------------------------


def proc_io(pid: int) -> dict[str, int]:
    """/proc/<pid>/io of the whole process: syscalls and bytes (write_bytes: to storage)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key.strip()] = int(value)
    return out


def audit_bytes(directory: Path | None) -> int:
    """Bytes in the audit files (the .jsonl records, not the .idx sidecars)."""
    if directory is None or not directory.is_dir():
        return 0
    total = 0
    for entry in os.scandir(directory):
        if entry.name.endswith(".jsonl"):
            with contextlib.suppress(OSError):
                total += entry.stat().st_size
    return total


# --------------------------------------------------------------------------------------
# The stack: MariaDB + sysbench tables, three hoopy processes
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def audit_stack(
    *, tables: int, table_size: int, audit_root: Path
) -> Iterator[tuple[MariaDBServer, dict[str, Gateway]]]:
    """MariaDB with prepared sysbench tables and one hoopy per mode; all torn down after."""
    with sysbench_database(tables=tables, table_size=table_size) as (db, _):
        base = Path(tempfile.mkdtemp(prefix="hoopy-bench-audit-", dir=audit_root))
        gateways: dict[str, Gateway] = {}
        try:
            for mode in MODES:
                gw_dir = Path(tempfile.mkdtemp(prefix=f"hoopy-gw-{mode}-"))  # removed by close()
                audit_dir = base / mode
                audit = (
                    {"enabled": False}
                    if mode == "off"
                    else {"directory": str(audit_dir), "durability": mode}
                )
                hoopy = HoopyProcess(gateway_config(db, gw_dir, audit), workdir=gw_dir)
                _log(f"starting hoopy (audit {mode}) ...")
                hoopy.start()
                assert hoopy.pid is not None
                host, port = hoopy.address()
                gateways[mode] = Gateway(
                    mode,
                    hoopy,
                    Endpoint(mode, host, port, DEV_USER, DEV_PASSWORD, hoopy.pid),
                    audit_dir if mode != "off" else None,
                )
            yield db, gateways
        finally:
            for gw in gateways.values():
                gw.hoopy.close()
            shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


def measure(
    db: MariaDBServer, gw: Gateway, w: Workload, args: argparse.Namespace, round_no: int
) -> dict[str, Any]:
    assert gw.hoopy.pid is not None and db.proc is not None
    pids = {"hoopy": gw.hoopy.pid, "mariadbd": db.proc.pid}
    spinner = start_spinner(args.time + 120) if (w.threads == 1 and not args.no_spin) else None
    result: dict[str, Any] = {"workload": w.name, "mode": gw.mode, "round": round_no}
    bytes0 = audit_bytes(gw.audit_dir)
    io0 = proc_io(gw.hoopy.pid)
    cpu0 = {name: cpu_split(pid) for name, pid in pids.items()}
    busy0, total0 = machine_ticks()
    t0 = time.perf_counter()
    try:
        argv = sysbench_argv(
            gw.endpoint,
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
    finally:
        if spinner is not None:
            stop_process(spinner)
    busy1, total1 = machine_ticks()
    cpu1 = {name: cpu_split(pid) for name, pid in pids.items()}
    io1 = proc_io(gw.hoopy.pid)
    bytes1 = audit_bytes(gw.audit_dir)
    cpu = {name: sum(cpu1[name]) - sum(cpu0[name]) for name in pids}
    result["wall_s"] = wall
    result["cpu_s"] = cpu
    result["cpu_sys_s"] = {name: cpu1[name][1] - cpu0[name][1] for name in pids}
    result["hoopy_io"] = {k: io1.get(k, 0) - io0.get(k, 0) for k in io1}
    result["audit_bytes"] = bytes1 - bytes0
    result["spinner"] = spinner is not None
    result["machine_busy"] = (busy1 - busy0) / max(total1 - total0, 1)
    result["loadavg_after"] = os.getloadavg()
    queries = result.get("queries") or 0
    if queries:
        result["hoopy_cpu_us_per_query"] = cpu["hoopy"] * 1e6 / queries
        result["mariadbd_cpu_us_per_query"] = cpu["mariadbd"] * 1e6 / queries
        result["audit_bytes_per_query"] = result["audit_bytes"] / queries
        result["hoopy_write_syscalls_per_query"] = result["hoopy_io"].get("syscw", 0) / queries
    if not gw.hoopy.running:
        result["hoopy_died"] = gw.hoopy.stderr_text()[-4000:]
    return result


def warm_up(gateways: dict[str, Gateway], args: argparse.Namespace) -> None:
    """Warm InnoDB and the three hoopy processes (and open their audit files)."""
    for gw in gateways.values():
        for test in ("oltp_point_select", "oltp_write_only"):
            argv = sysbench_argv(
                gw.endpoint,
                test,
                threads=2,
                ps_mode="disable",
                seconds=1 if args.quick else 2,
                tables=args.tables,
                table_size=args.table_size,
            )
            subprocess.run(argv, check=True, capture_output=True, timeout=120)


def wait_for_quiet_machine(poll: float = 10.0) -> None:
    """Wait while a test suite runs: on a 2-core machine it would spoil every number."""
    announced = False
    while subprocess.run(["pgrep", "-f", "pytest"], capture_output=True).returncode == 0:
        if not announced:
            _log("a pytest run is in progress; waiting for it to end ...")
            announced = True
        time.sleep(poll)


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(runs: Sequence[dict[str, Any]], workloads: Sequence[Workload]) -> dict[str, Any]:
    summary: dict[str, Any] = {"workloads": {}, "group_commit": {}}
    for w in workloads:
        per: dict[str, Any] = {}
        for mode in MODES:
            mine = [r for r in runs if r["workload"] == w.name and r["mode"] == mode]
            ok = [r for r in mine if "error" not in r and r.get("qps")]
            qps = [float(r["qps"]) for r in ok]
            per[mode] = {
                "n": len(ok),
                "failed": len(mine) - len(ok),
                "qps": _median(qps),
                "qps_min": min(qps) if qps else None,
                "qps_max": max(qps) if qps else None,
                "hoopy_cpu_us_per_query": _median([r.get("hoopy_cpu_us_per_query") for r in ok]),
                "mariadbd_cpu_us_per_query": _median(
                    [r.get("mariadbd_cpu_us_per_query") for r in ok]
                ),
                "audit_bytes_per_query": _median([r.get("audit_bytes_per_query") for r in ok]),
                "hoopy_write_syscalls_per_query": _median(
                    [r.get("hoopy_write_syscalls_per_query") for r in ok]
                ),
                "lat_avg_ms": _median([r.get("lat_avg_ms") for r in ok]),
                "lat_p95_ms": _median([r.get("lat_p95_ms") for r in ok]),
                "errors": _median([r.get("errors") for r in ok]),
            }
        off = per["off"]
        for mode in ("os", "strict"):
            per[mode]["qps_ratio_vs_off"] = _ratio(per[mode]["qps"], off["qps"])
            cpu, cpu_off = per[mode]["hoopy_cpu_us_per_query"], off["hoopy_cpu_us_per_query"]
            per[mode]["cpu_ratio_vs_off"] = _ratio(cpu, cpu_off)
            per[mode]["cpu_us_added_per_query"] = (
                cpu - cpu_off if cpu is not None and cpu_off is not None else None
            )
        per["strict"]["qps_ratio_vs_os"] = _ratio(per["strict"]["qps"], per["os"]["qps"])
        summary["workloads"][w.name] = per
    names = {w.name for w in workloads}
    for many, one in GROUP_COMMIT_PAIRS:
        if many in names and one in names:
            summary["group_commit"][f"{many}/{one}"] = {
                mode: _ratio(
                    summary["workloads"][many][mode]["qps"], summary["workloads"][one][mode]["qps"]
                )
                for mode in MODES
            }
    return summary


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| workload | QPS off | QPS os | QPS strict | os/off | strict/off "
        "| hoopy CPU µs/q off / os / strict | audit B/q | p95 ms off / os / strict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, per in summary["workloads"].items():
        cpu = " / ".join(_fmt(per[m]["hoopy_cpu_us_per_query"], ".1f") for m in MODES)
        p95 = " / ".join(_fmt(per[m]["lat_p95_ms"], ".2f") for m in MODES)
        lines.append(
            f"| {name} | {_fmt(per['off']['qps'], ',.0f')} | {_fmt(per['os']['qps'], ',.0f')} "
            f"| {_fmt(per['strict']['qps'], ',.0f')} "
            f"| {_fmt(per['os']['qps_ratio_vs_off'], '.2f')}x "
            f"| {_fmt(per['strict']['qps_ratio_vs_off'], '.2f')}x "
            f"| {cpu} | {_fmt(per['os']['audit_bytes_per_query'], '.0f')} | {p95} |"
        )
    if summary["group_commit"]:
        lines += [
            "",
            "| group commit: QPS 8 threads / QPS 1 thread | off | os | strict |",
            "|---|---:|---:|---:|",
        ]
        for pair, ratios in summary["group_commit"].items():
            lines.append(
                f"| {pair} | " + " | ".join(_fmt(ratios[m], ".2f") + "x" for m in MODES) + " |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = rounds_parser("python -m bench.audit", __doc__, WORKLOADS)
    p.add_argument(
        "--audit-root",
        type=Path,
        default=Path("/var/tmp"),
        help="where the audit directories are made (a disk filesystem; default /var/tmp)",
    )
    p.add_argument(
        "--allow-memory-fs",
        action="store_true",
        help="run even if --audit-root is on tmpfs/ramfs (strict is then meaningless)",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="do not wait for running pytest processes"
    )
    return parse_rounds(p, argv, WORKLOADS)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workloads: list[Workload] = args.workload_list
    args.audit_root.mkdir(parents=True, exist_ok=True)
    fs = filesystem_of(args.audit_root)
    _log(f"audit directories under {args.audit_root}: {fs['type']} on {fs['device']}")
    if fs["type"] in MEMORY_FILESYSTEMS and not args.allow_memory_fs:
        _log(f"{args.audit_root} is on {fs['type']}: fsync costs nothing there; use --audit-root")
        return 2
    if not args.no_wait:
        wait_for_quiet_machine()
    started = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    info = machine_info()
    info["audit_fs"] = {"path": str(args.audit_root.resolve()), **fs}
    info["fsync_probe"] = fsync_probe(args.audit_root)
    _log(
        f"fsync probe: median {info['fsync_probe']['median_ms']:.2f} ms, "
        f"p95 {info['fsync_probe']['p95_ms']:.2f} ms"
    )
    runs: list[dict[str, Any]] = []
    with audit_stack(
        tables=args.tables, table_size=args.table_size, audit_root=args.audit_root
    ) as (db, gateways):
        info["mariadb_server"] = db.admin_sql("SELECT VERSION()")[0][0]
        _log("warming up ...")
        warm_up(gateways, args)
        for round_no in range(args.rounds):
            order = MODES[round_no % 3 :] + MODES[: round_no % 3]
            for w in workloads:
                for mode in order:
                    gw = gateways[mode]
                    if not gw.hoopy.running:
                        continue  # reported once, in the run where it died
                    r = measure(db, gw, w, args, round_no)
                    runs.append(r)
                    _log(
                        f"round {round_no + 1}/{args.rounds} {w.name:16} {mode:6} "
                        f"qps={_fmt(r.get('qps'), '.0f'):>7} "
                        f"hoopy_us/q={_fmt(r.get('hoopy_cpu_us_per_query'), '.1f'):>6} "
                        f"B/q={_fmt(r.get('audit_bytes_per_query'), '.0f'):>5} "
                        f"busy={r['machine_busy']:.0%}"
                        + (f"  ERROR: {r['error'][-300:]}" if "error" in r else "")
                    )
                    if "hoopy_died" in r:
                        _log(f"hoopy ({mode}) died:\n" + r["hoopy_died"])
        stderr = {mode: gw.hoopy.stderr_text() for mode, gw in gateways.items()}
    info["loadavg_at_end"] = os.getloadavg()
    summary = summarize(runs, workloads)
    table = markdown(summary)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"audit-{started}.json"
    settings = run_settings(args)
    out.write_text(
        json.dumps(
            {
                "started": started,
                "command": [
                    sys.executable,
                    "-m",
                    "bench.audit",
                    *(sys.argv[1:] if argv is None else argv),
                ],
                "settings": settings,
                "workloads": [asdict(w) for w in workloads],
                "machine": info,
                "summary": summary,
                "runs": runs,
                "hoopy_warnings": {
                    mode: [ln for ln in text.splitlines() if "WARNING" in ln or "ERROR" in ln][-50:]
                    for mode, text in stderr.items()
                },
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
