"""Streaming a large result through hoopy with one masked column, against the same rows
unmasked through hoopy and against a direct connection: same run, interleaved, medians.

    .venv/bin/python -m bench.masking                      # 1,000,000 rows, 3 rounds
    .venv/bin/python -m bench.masking --rows 200000 --rounds 1

One throwaway MariaDB with a table ``people`` (id, email, note) of ``--rows`` rows; one hoopy
with three listeners: ``plain`` (target without masking), ``hmac`` and ``redact`` (the same
database, targets with a set masking ``people.email`` by keyed hash, or by a fixed stand-in).
Each round streams ``SELECT id, email, note FROM people`` with ``mariadb --quick --batch``
through each, in rotating order, and records wall seconds and hoopy's CPU seconds. The audit
is on (``os``), as users run it.

The target (the masking issue): masked streaming at no less than half the unmasked rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import RESULTS_DIR, _log, cpu_seconds
from tests.gateway_rig import (
    APP_PASSWORD,
    APP_USER,
    DEV_PASSWORD,
    DEV_USER,
    HoopyProcess,
    default_config,
)
from tests.rig import MariaDBServer

DB = "bench_mask"
KEY_ENV = "HOOPY_BENCH_MASK_KEY"


def stream(host: str, port: int, user: str, password: str) -> float:
    argv = [
        "mariadb", "--no-defaults", "--skip-ssl", f"--host={host}", f"--port={port}",
        f"--user={user}", f"--password={password}", DB, "--quick", "--batch", "-e",
        "SELECT id, email, note FROM people",
    ]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, timeout=1200)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace"))
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    _log("starting MariaDB ...")
    with MariaDBServer(tls=False) as db:
        db.admin_sql(
            f"CREATE DATABASE {DB}",
            f"CREATE TABLE {DB}.people (id INT PRIMARY KEY, email VARCHAR(80), note VARCHAR(40))",
            f"INSERT INTO {DB}.people SELECT seq, CONCAT('user', seq, '@example.com'), "
            f"CONCAT('note ', seq) FROM {DB}.seq_1_to_{args.rows}",
        )
        db.create_user(APP_USER, APP_PASSWORD, grants=[f"ALL ON {DB}.*"])
        gw_dir = Path(tempfile.mkdtemp(prefix="hoopy-mask-bench-"))
        config = default_config(db, gw_dir)
        app = {**config["targets"]["app"], "database": DB, "tls": "off"}
        config["targets"] = {
            "plain": app,
            "hmac": {**app, "masking": ["pii_hmac"]},
            "redact": {**app, "masking": ["pii_redact"]},
        }
        config["listeners"] = [
            {"name": n, "target": n, "tcp": "127.0.0.1:0", "tls": False} for n in config["targets"]
        ]
        config["roles"] = {
            "developers": {"groups": ["developers"], "targets": list(config["targets"])}
        }
        rules = {n: {"name": "emails", "columns": ["people.email"], "strategy": n}
                 for n in ("hmac", "redact")}  # fmt: skip
        config["masking"] = {
            "pii_hmac": {"hmac_key_env": KEY_ENV, "rules": [rules["hmac"]]},
            "pii_redact": {"rules": [rules["redact"]]},
        }
        config["audit"] = {"directory": str(gw_dir / "audit"), "durability": "os"}
        hoopy = HoopyProcess(config, workdir=gw_dir, env={KEY_ENV: "k" * 32})
        hoopy.start()
        assert hoopy.pid is not None
        try:
            endpoints = {
                "direct": (db.host, db.port, APP_USER, APP_PASSWORD),
                **{n: (*hoopy.tcp[n], DEV_USER, DEV_PASSWORD) for n in config["targets"]},
            }
            _log("warming up ...")
            for ep in endpoints.values():
                stream(*ep)
            results: dict[str, list[dict[str, float]]] = {n: [] for n in endpoints}
            order = list(endpoints)
            for r in range(args.rounds):
                for name in order:
                    before = cpu_seconds(hoopy.pid)
                    seconds = stream(*endpoints[name])
                    cpu = cpu_seconds(hoopy.pid) - before
                    results[name].append({"seconds": seconds, "hoopy_cpu_s": cpu})
                    _log(
                        f"round {r + 1}/{args.rounds} {name:7s} {seconds:6.2f} s  hoopy CPU {cpu:6.2f} s"
                    )
                order = order[1:] + order[:1]
        finally:
            hoopy.close()
    med = {n: statistics.median(x["seconds"] for x in v) for n, v in results.items()}
    cpu = {n: statistics.median(x["hoopy_cpu_s"] for x in v) for n, v in results.items()}
    print(f"| stream {args.rows:,} rows (median of {args.rounds}) | seconds | rows/s | "
          "hoopy CPU s | rate vs direct |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name in results:
        rate = args.rows / med[name]
        print(
            f"| {name} | {med[name]:.2f} | {rate:,.0f} | {cpu[name]:.2f} | "
            f"{med['direct'] / med[name]:.2f}x |"
        )
    print()
    for name in ("hmac", "redact"):
        ratio = med["plain"] / med[name]
        print(f"masked ({name}) / unmasked rate: {ratio:.2f}x (target >= 0.5x)")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"masking-{time.strftime('%Y%m%d-%H%M%S')}.json"
    data: dict[str, Any] = {"rows": args.rows, "rounds": results, "median_seconds": med}
    out.write_text(json.dumps(data, indent=1))
    print(f"JSON: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
