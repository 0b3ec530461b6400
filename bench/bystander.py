"""A bystander's worst latency while another client sends huge statements through hoopy.

    .venv/bin/python -m bench.bystander                       # 20 MiB statements, 10 s phases
    .venv/bin/python -m bench.bystander --size-mib 63.9 --seconds 20
    .venv/bin/python -m bench.bystander --shape strings        # many small literals instead

One throwaway MariaDB (``max_allowed_packet`` 1 GiB, TLS off) and one hoopy in front of it
with the audit on (defaults: ``durability = "os"``, secrets redacted). A probe process runs
``SELECT 1`` back to back on its own hoopy session and records every round trip. Two phases
of ``--seconds`` each: *idle* (the probe alone), then *loaded* (meanwhile the main process
sends statements of ``--size-mib`` MiB on another session, one after the other).
``--shape literal`` sends ``SELECT LENGTH('aaa...')`` (issue 8, item 10); ``--shape
strings`` sends ``SELECT 'abcdefgh','abcdefgh',...`` (a literal every 11 bytes: the
per-token cost).

Prints the probe's latency percentiles and maximum for both phases and the time each huge
statement took; the JSON goes to bench/results/bystander-<timestamp>.json. The probe is a
separate process, so the sender's Python does not compete with it for an interpreter lock.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymysql

from bench.run import RESULTS_DIR, _log, gateway_config, machine_info
from tests.gateway_rig import APP_PASSWORD, APP_USER, DEV_PASSWORD, DEV_USER, HoopyProcess
from tests.rig import MariaDBServer

DB = "bystander"


def probe(host: str, port: int, user: str, password: str, seconds: float, out: Path) -> None:
    """The bystander: SELECT 1 in a loop for ``seconds``; latencies (s) written as JSON."""
    conn = pymysql.connect(host=host, port=port, user=user, password=password)
    latencies = []
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        deadline = time.perf_counter() + seconds
        while (start := time.perf_counter()) < deadline:
            cur.execute("SELECT 1")
            cur.fetchall()
            latencies.append(time.perf_counter() - start)
    conn.close()
    out.write_text(json.dumps(latencies))


def statement(shape: str, size: int) -> bytes:
    if shape == "literal":
        return b"SELECT LENGTH('" + b"a" * (size - 17) + b"')"
    count = (size - 10) // 11
    return b"SELECT " + b",".join([b"'abcdefgh'"] * count) + b" LIMIT 0"


def summary(latencies: Sequence[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "queries": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3),
        "p999_ms": round(ms[int(len(ms) * 0.999) - 1], 3),
        "max_ms": round(ms[-1], 3),
    }


def run_probe(
    endpoint: tuple[str, int, str, str], seconds: float, work: Path, name: str
) -> subprocess.Popen[bytes]:
    host, port, user, password = endpoint
    out = work / f"{name}.json"
    argv = [sys.executable, "-m", "bench.bystander", "--probe", f"{host}:{port}:{user}:{password}"]
    return subprocess.Popen([*argv, "--seconds", str(seconds), "--out", str(out)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--shape", choices=("literal", "strings"), default="literal")
    parser.add_argument(
        "--audit",
        choices=("on", "off"),
        default="on",
        help="off: what the audit adds, by difference",
    )
    parser.add_argument(
        "--via",
        choices=("hoopy", "direct"),
        default="hoopy",
        help="direct: both clients talk to MariaDB itself (what the machine does without hoopy)",
    )
    parser.add_argument(
        "--allow-local-infile",
        action="store_true",
        help="skip the LOCAL INFILE check (with --audit off: the relay alone)",
    )
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        host, port, user, password = args.probe.split(":", 3)
        probe(host, int(port), user, password, args.seconds, Path(args.out))
        return 0

    size = int(args.size_mib * 1024 * 1024)
    big = statement(args.shape, size)
    work = Path(tempfile.mkdtemp(prefix="hoopy-bystander-"))
    results: dict[str, Any] = {
        "settings": {
            "size_bytes": len(big),
            "seconds": args.seconds,
            "shape": args.shape,
            "audit": args.audit,
            "via": args.via,
            "allow_local_infile": args.allow_local_infile,
        },
        "machine": machine_info(),
    }
    try:
        _log("starting MariaDB ...")
        with MariaDBServer(tls=False, extra_args=["--max-allowed-packet=1G"]) as db:
            db.admin_sql(f"CREATE DATABASE IF NOT EXISTS {DB}")
            db.create_user(APP_USER, APP_PASSWORD, grants=[f"ALL ON {DB}.*"])
            gw_dir = work / "gw"
            audit = (
                {"directory": str(gw_dir / "audit")} if args.audit == "on" else {"enabled": False}
            )
            config = gateway_config(db, gw_dir, audit)
            config["targets"]["app"]["database"] = DB
            if args.allow_local_infile:
                config["targets"]["app"]["allow_local_infile"] = True
            hoopy = HoopyProcess(config, workdir=gw_dir)
            try:
                hoopy.start()
                host, port = hoopy.address()
                endpoint = (host, port, DEV_USER, DEV_PASSWORD)
                if args.via == "direct":
                    endpoint = (db.host, db.port, APP_USER, APP_PASSWORD)
                _log(f"idle phase: {args.seconds:g} s of SELECT 1 ...")
                idle = run_probe(endpoint, args.seconds, work, "idle")
                idle.wait()
                sender = pymysql.connect(
                    host=endpoint[0],
                    port=endpoint[1],
                    user=endpoint[2],
                    password=endpoint[3],
                    database=DB,
                    max_allowed_packet=len(big) + 1024,
                    read_timeout=600,
                )
                _log(f"loaded phase: {len(big)} byte statements meanwhile ...")
                loaded = run_probe(endpoint, args.seconds, work, "loaded")
                times = []
                with sender.cursor() as cur:
                    while loaded.poll() is None:
                        start = time.perf_counter()
                        cur.execute(big)
                        cur.fetchall()
                        times.append(time.perf_counter() - start)
                loaded.wait()
                sender.close()
            finally:
                hoopy.close()
        results["idle"] = summary(json.loads((work / "idle.json").read_text()))
        results["loaded"] = summary(json.loads((work / "loaded.json").read_text()))
        results["big_statements"] = {
            "count": len(times),
            "median_s": round(statistics.median(times), 3) if times else None,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = RESULTS_DIR / f"bystander-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print("| phase | queries | p50 ms | p99 ms | p99.9 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for phase in ("idle", "loaded"):
        r = results[phase]
        print(
            f"| {phase} | {r['queries']} | {r['p50_ms']} | {r['p99_ms']} | {r['p999_ms']} "
            f"| {r['max_ms']} |"
        )
    big_stats = results["big_statements"]
    print(
        f"\n{big_stats['count']} statements of {len(big)} bytes, median {big_stats['median_s']} s"
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
