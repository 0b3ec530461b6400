"""How fast ``hoopy replay`` and ``hoopy sessions`` find a session in a 1 GB audit directory.

    .venv/bin/python -m bench.audit_lookup                   # 1 GiB, in a temp dir under /var/tmp
    .venv/bin/python -m bench.audit_lookup --size-gb 0.2     # a quicker check
    .venv/bin/python -m bench.audit_lookup --dir /var/tmp/al --keep   # keep it (and reuse it)

First it writes an audit directory of about ``--size-gb`` GiB with hoopy's own writer
(``AuditWriter`` with an ``IndexKeeper``, default ``rotate_bytes`` of 256 MiB, so ~4 files
per GiB, each with its ``.idx`` sidecar as the gateway leaves them). The content imitates a
busy gateway: about 50 sessions open at any time, each 10..2000 statements long, their
records interleaved; each session has a ``session_start`` (principal, client, target,
database, connect_attrs), then statements (COM_QUERY, or COM_STMT_PREPARE / EXECUTE with
parameters; SQL of 100-200 characters) each followed later by its outcome (appended with
``write_now=False``, as the gateway does; digests for result sets, a few errors), and a
``session_end``. A fake clock advances a little per record, so timestamps are plausible. The
sessions still open when the size is reached stay open, as on a running gateway.

Then, each in a fresh Python process (cold interpreter, warm page cache), ``--reps`` times
(median and max reported, after one untimed warm-up run):

- ``hoopy replay <id> --audit-dir D --json`` for a session started early, one in the middle
  and one near the end (the longest session starting near each point), output to /dev/null;
  plus the middle one as the text timeline;
- ``hoopy sessions --audit-dir D --json --limit 20``;
- ``python -m hoopy --help``, the baseline cost of starting Python and hoopy's CLI;
- the same replays with the ``.idx`` sidecars deleted (the fallback full scan), ``--scan-reps``
  times, then ``hoopy audit reindex D`` (timed) to restore them, and one replay after it.

Each replay's JSON is checked once against what was generated (statement count, end record).
The target: finding and showing a session with ``hoopy replay`` takes under a second on 1 GB.

Results: a markdown table on stdout and everything as JSON in
bench/results/audit-lookup-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.audit import filesystem_of, wait_for_quiet_machine
from bench.run import REPO_ROOT, RESULTS_DIR, _log, machine_info
from hoopy.audit.index import INDEX_SUFFIX, IndexKeeper
from hoopy.audit.reader import audit_files
from hoopy.audit.writer import DEFAULT_ROTATE_BYTES, AuditWriter

GIB = 1024**3
MANIFEST = "bench-manifest.json"  # not an audit file name: hoopy ignores it
TARGET_SECONDS = 1.0


# --------------------------------------------------------------------------------------
# Generating the audit directory
# --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class SessionPlan:
    session: str
    length: int  # statements planned
    start_record: int  # index of its session_start among all records
    style: str  # "query" or "prepared"
    started_at: float
    principal: dict[str, Any]
    seq: int = 0  # statements written
    errors: int = 0
    pending: dict[str, Any] | None = None  # the outcome of the last statement, not yet written
    ended: bool = False
    end_record: int = -1
    prepared: int = 0  # statements prepared so far (prepared style)


PROGRAMS = ("nightly-etl", "orders-api", "mysql", "metabase", "reporting-job", "migrate")
TABLES = ("orders", "order_items", "customers", "inventory", "payments", "shipments")


def _principals(rng: random.Random, now: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"):
        out.append(
            {
                "name": name,
                "method": "gateway_user",
                "groups": ["developers"] + (["oncall"] if rng.random() < 0.3 else []),
                "roles": ["developers"],
                "issuer": None,
                "token_id": None,
                "client_id": None,
                "expires_at": None,
            }
        )
    for repo in ("shop", "billing", "warehouse", "analytics", "search", "crm"):
        for ref in ("refs/heads/main", "refs/heads/release", "refs/pull/4711/merge"):
            out.append(
                {
                    "name": f"repo:acme/{repo}:ref:{ref}",
                    "method": "token",
                    "groups": [f"repo:acme/{repo}"],
                    "roles": ["ci-readers", f"{repo}-deploy"],
                    "issuer": "https://token.actions.githubusercontent.com",
                    "token_id": f"{rng.getrandbits(128):032x}",
                    "client_id": None,
                    "expires_at": int(now) + 3600,
                }
            )
    return out


PREPARED_SQL = (
    "SELECT c.id, c.name, c.country, c.tier, c.created_at FROM customers c "
    "WHERE c.id = ? AND c.tenant_id = ? AND c.deleted_at IS NULL LIMIT 1",
    "UPDATE inventory SET quantity = quantity - ?, reserved = reserved + ?, "
    "updated_at = NOW() WHERE sku = ? AND warehouse_id = ? AND quantity >= ?",
)


class Generator:
    """Writes interleaved sessions through hoopy's AuditWriter until the size is reached."""

    def __init__(self, directory: Path, target_bytes: int, *, seed: int, concurrent: int):
        self.directory = directory
        self.target_bytes = target_bytes
        self.rng = random.Random(seed)
        self.concurrent = concurrent
        # Yesterday 09:00 UTC: plausible, and ~1 GiB (about 35 min of records) stays in one
        # UTC day, so files rotate by size only.
        today = datetime.datetime.now(datetime.UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        self.clock = FakeClock((today - datetime.timedelta(hours=15)).timestamp())
        self.writer = AuditWriter(directory, index=IndexKeeper(), clock=self.clock)
        self.principals = _principals(self.rng, self.clock.now)
        self.records = 0
        self.sessions: list[SessionPlan] = []
        self.open: list[SessionPlan] = []

    # --- records ---------------------------------------------------------------------------

    def _append(self, record: dict[str, Any], *, write_now: bool = True) -> None:
        self.clock.now += self.rng.expovariate(1 / 0.0008)  # ~0.8 ms between records
        self.writer.append(record, write_now=write_now)
        self.records += 1

    def _session_id(self) -> str:
        return f"{int(self.clock.now * 1000):x}-{self.rng.getrandbits(32):08x}"

    def start_session(self) -> None:
        rng = self.rng
        principal = rng.choice(self.principals)
        plan = SessionPlan(
            session=self._session_id(),
            length=rng.randint(10, 2000),
            start_record=self.records,
            style="prepared" if rng.random() < 0.3 else "query",
            started_at=self.clock.now,
            principal=principal,
        )
        program = rng.choice(PROGRAMS)
        self._append(
            {
                "kind": "session_start",
                "session": plan.session,
                "principal": principal,
                "client": {
                    "address": f"10.1.{rng.randint(0, 9)}.{rng.randint(2, 250)}:"
                    f"{rng.randint(32768, 60999)}",
                    "tls": rng.random() < 0.9,
                    "capabilities": 2160631439,
                },
                "target": "shop",
                "database": "shop",
                "connect_attrs": {
                    "_client_name": "libmariadb",
                    "_client_version": "3.3.8",
                    "_os": "Linux",
                    "_pid": str(rng.randint(1000, 99999)),
                    "_platform": "x86_64",
                    "_server_host": "db-gw.internal",
                    "program_name": program,
                },
            }
        )
        self.sessions.append(plan)
        self.open.append(plan)

    def end_session(self, plan: SessionPlan) -> None:
        reason = "client quit" if self.rng.random() < 0.95 else "connection closed: reset by peer"
        plan.end_record = self.records
        self._append(
            {
                "kind": "session_end",
                "session": plan.session,
                "reason": reason,
                "statements": plan.seq,
                "errors": plan.errors,
                "duration_s": round(self.clock.now - plan.started_at, 3),
            }
        )
        plan.ended = True

    def statement(self, plan: SessionPlan) -> None:
        rng = self.rng
        plan.seq += 1
        record: dict[str, Any] = {
            "kind": "statement",
            "session": plan.session,
            "seq": plan.seq,
            "principal": plan.principal["name"],
            "verdict": "allow",
            "rule": None,
        }
        outcome: dict[str, Any] = {
            "kind": "outcome",
            "session": plan.session,
            "seq": plan.seq,
            "duration_ms": round(rng.lognormvariate(-0.5, 1.0), 3),
            "rows": 0,
            "affected_rows": 0,
            "last_insert_id": 0,
            "warnings": 0,
            "results": 1,
        }
        if plan.style == "prepared" and plan.prepared < len(PREPARED_SQL):
            record["command"] = "COM_STMT_PREPARE"
            record["sql"] = PREPARED_SQL[plan.prepared]
            plan.prepared += 1
            outcome["statement_id"] = plan.prepared
        elif plan.style == "prepared" and rng.random() < 0.7:
            statement_id = rng.randint(1, len(PREPARED_SQL))
            record["command"] = "COM_STMT_EXECUTE"
            record["statement_id"] = statement_id
            record["sql"] = PREPARED_SQL[statement_id - 1]
            if statement_id == 1:
                record["params"] = [
                    {"type": "LONGLONG", "value": rng.randint(1, 5_000_000)},
                    {"type": "LONG", "value": rng.randint(1, 300)},
                ]
                rows = rng.randint(0, 1)
                outcome["rows"] = rows
                if rows:
                    outcome["digest"] = f"{rng.getrandbits(256):064x}"
            else:
                q = rng.randint(1, 9)
                record["params"] = [
                    {"type": "LONG", "value": q},
                    {"type": "LONG", "value": q},
                    {"type": "VAR_STRING", "value": f"SKU-{rng.randint(0, 99_999_999):08d}"},
                    {"type": "SHORT", "value": rng.randint(1, 40)},
                    {"type": "LONG", "value": q},
                ]
                outcome["affected_rows"] = rng.randint(0, 1)
        else:
            record["command"] = "COM_QUERY"
            record["sql"], kind = self._sql()
            if kind == "select":
                rows = rng.choice((0, 1, 1, 3, 10, 25, 50))
                outcome["rows"] = rows
                if rows:
                    outcome["digest"] = f"{rng.getrandbits(256):064x}"
            elif kind == "insert":
                outcome["affected_rows"] = 1
                outcome["last_insert_id"] = rng.randint(1_000_000, 90_000_000)
            else:
                outcome["affected_rows"] = rng.randint(0, 3)
        if rng.random() < 0.005:  # a few failures: duplicates, deadlocks
            code, state, message = rng.choice(
                (
                    (1062, "23000", "Duplicate entry '4711' for key 'PRIMARY'"),
                    (1213, "40001", "Deadlock found when trying to get lock; try restarting"),
                    (1205, "HY000", "Lock wait timeout exceeded; try restarting transaction"),
                )
            )
            outcome.update(rows=0, affected_rows=0, last_insert_id=0)
            outcome.pop("digest", None)
            outcome["error"] = {"code": code, "sqlstate": state, "message": message}
            plan.errors += 1
        self._append(record)  # before forwarding: written now
        plan.pending = outcome

    def _sql(self) -> tuple[str, str]:
        rng = self.rng
        n = rng.randint(1, 5_000_000)
        pick = rng.random()
        if pick < 0.6:
            return (
                f"SELECT o.id, o.customer_id, o.total, o.currency, o.status, o.created_at "
                f"FROM orders o WHERE o.customer_id = {n} AND o.status IN ('open', 'paid') "
                f"ORDER BY o.created_at DESC LIMIT {rng.choice((1, 10, 50))}",
                "select",
            )
        if pick < 0.8:
            q = rng.randint(1, 9)
            return (
                f"UPDATE inventory SET quantity = quantity - {q}, updated_at = NOW() "
                f"WHERE sku = 'SKU-{n:08d}' AND warehouse_id = {rng.randint(1, 40)} "
                f"AND quantity >= {q}",
                "update",
            )
        return (
            f"INSERT INTO order_items (order_id, sku, quantity, unit_price, currency, created_at) "
            f"VALUES ({n}, 'SKU-{rng.randint(0, 99_999_999):08d}', {rng.randint(1, 9)}, "
            f"{rng.randint(100, 99999) / 100:.2f}, 'EUR', NOW())",
            "insert",
        )

    def outcome(self, plan: SessionPlan) -> None:
        assert plan.pending is not None
        record, plan.pending = plan.pending, None
        self._append(record, write_now=False)  # after the response: with the next write

    # --- the loop --------------------------------------------------------------------------

    def written_bytes(self) -> int:
        return sum(p.stat().st_size for p in audit_files(self.directory))

    def run(self) -> None:
        self.writer.open()
        rng = self.rng
        for _ in range(self.concurrent):
            self.start_session()
        check_every = 20_000
        t0 = time.perf_counter()
        while True:
            plan = self.open[rng.randrange(len(self.open))]
            if plan.pending is not None:
                self.outcome(plan)
            elif plan.seq >= plan.length:
                self.end_session(plan)
                self.open.remove(plan)
                self.start_session()
            else:
                self.statement(plan)
            if self.records % check_every == 0:
                size = self.written_bytes()
                if self.records % (check_every * 25) == 0:
                    _log(
                        f"  {size / GIB:.2f} GiB, {self.records:,} records, "
                        f"{len(self.sessions):,} sessions, {time.perf_counter() - t0:.0f} s"
                    )
                if size >= self.target_bytes:
                    break
        self.writer.close()  # flushes held-back outcomes, saves the last sidecar

    def manifest(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "sessions": [
                {
                    "session": p.session,
                    "length": p.length,
                    "statements": p.seq,
                    "errors": p.errors,
                    "start_record": p.start_record,
                    "end_record": p.end_record,
                    "ended": p.ended,
                    "in_flight": p.pending is not None,  # its last outcome was never written
                    "style": p.style,
                }
                for p in self.sessions
            ],
        }


def pick_sessions(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The longest session starting near the beginning, the middle and the end."""
    total = manifest["records"]
    sessions = manifest["sessions"]
    picks: dict[str, dict[str, Any]] = {}
    for label, frac in (("early", 0.0), ("middle", 0.5), ("late", 0.95)):
        lo, hi = frac * total, (frac + 0.03) * total
        candidates = [s for s in sessions if lo <= s["start_record"] <= hi]
        if not candidates:  # tiny directories
            candidates = sorted(sessions, key=lambda s: abs(s["start_record"] - lo))[:5]
        picks[label] = max(candidates, key=lambda s: s["statements"])
    return picks


# --------------------------------------------------------------------------------------
# Timing the commands
# --------------------------------------------------------------------------------------


def hoopy_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "hoopy", *args]


def run_once(argv: Sequence[str]) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.run(
            argv, stdout=null, stderr=subprocess.PIPE, cwd=REPO_ROOT, timeout=1200
        )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out: dict[str, Any] = {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "rc": proc.returncode,
    }
    if proc.returncode != 0:
        out["stderr"] = proc.stderr.decode(errors="replace")[-2000:]
    return out


def timed(name: str, argv: Sequence[str], reps: int, *, warm: bool = True) -> dict[str, Any]:
    if warm:
        run_once(argv)  # untimed: page cache, .pyc files
    runs = [run_once(argv) for _ in range(reps)]
    walls = [r["wall_s"] for r in runs]
    cpus = [r["cpu_s"] for r in runs]
    result = {
        "name": name,
        "argv": [str(a) for a in argv],
        "reps": reps,
        "median_s": statistics.median(walls),
        "max_s": max(walls),
        "min_s": min(walls),
        "cpu_median_s": statistics.median(cpus),
        "runs": runs,
        "failed": sum(1 for r in runs if r["rc"] != 0),
    }
    _log(
        f"  {name:40} median {result['median_s']:.3f} s  max {result['max_s']:.3f} s"
        + (f"  FAILED: {runs[0].get('stderr', '')[-300:]}" if result["failed"] else "")
    )
    return result


def check_replay(directory: Path, pick: dict[str, Any]) -> dict[str, Any]:
    """Run one replay --json and compare it with what was generated."""
    argv = hoopy_argv("replay", pick["session"], "--audit-dir", str(directory), "--json")
    proc = subprocess.run(argv, capture_output=True, cwd=REPO_ROOT, timeout=1200)
    if proc.returncode != 0:
        return {"ok": False, "why": proc.stderr.decode(errors="replace")[-500:]}
    data = json.loads(proc.stdout)
    steps = data.get("steps", [])
    missing_outcomes = sum(1 for s in steps if s.get("outcome") is None)
    ok = (
        data.get("session") == pick["session"]
        and len(steps) == pick["statements"]
        and data.get("start") is not None
        and (data.get("end") is not None) == pick["ended"]
        and missing_outcomes == (1 if pick.get("in_flight") else 0)
    )
    return {
        "ok": ok,
        "steps": len(steps),
        "expected_steps": pick["statements"],
        "has_end": data.get("end") is not None,
        "missing_outcomes": missing_outcomes,
        "output_bytes": len(proc.stdout),
    }


def span_bytes(directory: Path, session: str) -> dict[str, Any]:
    """The files and the byte span the session's records cover, from the sidecars."""
    files, span = [], 0
    for path in audit_files(directory):
        idx = path.with_name(path.name + INDEX_SUFFIX)
        if not idx.exists():
            continue
        for line in idx.read_text().splitlines()[1:]:
            entry = json.loads(line)
            if entry["session"] == session:
                files.append(path.name)
                span += entry["last"] - entry["first"]
    return {"files": files, "span_bytes": span}


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def directory_stats(directory: Path) -> dict[str, Any]:
    files = audit_files(directory)
    sidecars = [p.with_name(p.name + INDEX_SUFFIX) for p in files]
    return {
        "files": [p.name for p in files],
        "file_bytes": [p.stat().st_size for p in files],
        "total_bytes": sum(p.stat().st_size for p in files),
        "sidecar_bytes": sum(p.stat().st_size for p in sidecars if p.exists()),
    }


def markdown(results: dict[str, Any]) -> str:
    gen = results["generated"]
    lines = [
        f"Audit directory: {gen['total_bytes'] / GIB:.2f} GiB in {len(gen['files'])} files "
        f"({gen['sidecar_bytes'] / 1024:.0f} KiB of .idx), {gen['records']:,} records, "
        f"{gen['sessions']:,} sessions; on {results['fs']['type']}.",
        "",
        "| command | session (stmts, span) | median s | max s | CPU median s | < 1 s |",
        "|---|---|---:|---:|---:|---|",
    ]
    for t in results["timings"]:
        who = t.get("session_label", "")
        if who:
            info = t["session_info"]
            who = (
                f"{who}: {info['statements']} stmts, {info['span_bytes'] / 2**20:.0f} MiB "
                f"in {len(info['files'])} file(s)"
            )
        under = "-" if not t.get("target") else ("yes" if t["max_s"] < TARGET_SECONDS else "NO")
        lines.append(
            f"| {t['name']} | {who} | {t['median_s']:.3f} | {t['max_s']:.3f} "
            f"| {t['cpu_median_s']:.3f} | {under} |"
        )
    rx = results.get("reindex")
    if rx:
        lines.append(
            f"| audit reindex (after deleting .idx) | all | {rx['wall_s']:.3f} | {rx['wall_s']:.3f} "
            f"| {rx['cpu_s']:.3f} | - |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.audit_lookup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--size-gb", type=float, default=1.0, help="audit size in GiB (1.0)")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="the audit directory to create (or reuse, if made by an earlier --keep run); "
        "default: a temp dir under /var/tmp",
    )
    p.add_argument("--keep", action="store_true", help="keep the audit directory afterwards")
    p.add_argument("--reps", type=int, default=5, help="timed runs per command (5)")
    p.add_argument("--scan-reps", type=int, default=2, help="timed runs without sidecars (2)")
    p.add_argument("--concurrent", type=int, default=50, help="sessions open at a time (50)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-wait", action="store_true", help="do not wait for running pytest")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.dir is None:
        directory = Path(tempfile.mkdtemp(prefix="hoopy-audit-lookup-", dir="/var/tmp"))
    else:
        directory = args.dir.resolve()
    manifest_path = directory / MANIFEST
    reuse = manifest_path.exists()
    if not reuse and directory.exists() and any(directory.iterdir()):
        _log(f"{directory} is not empty and has no {MANIFEST}; give a new or empty --dir")
        return 2
    directory.mkdir(parents=True, exist_ok=True)
    fs = filesystem_of(directory)
    results: dict[str, Any] = {
        "started": started,
        "command": [
            sys.executable,
            "-m",
            "bench.audit_lookup",
            *(sys.argv[1:] if argv is None else argv),
        ],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "directory": str(directory),
        "fs": {"path": str(directory), **fs},
    }
    try:
        results.update(measure(args, directory, reuse))
    finally:
        if args.keep or reuse:
            _log(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    table = markdown(results)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"audit-lookup-{started}.json"
    results["markdown"] = table
    out.write_text(json.dumps(results, indent=2))
    print(table)
    print(f"\nJSON: {out}")
    failed = any(t["failed"] for t in results["timings"]) or not all(
        c["ok"] for c in results["checks"].values()
    )
    return 1 if failed else 0


def measure(args: argparse.Namespace, directory: Path, reuse: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if not args.no_wait:
        wait_for_quiet_machine()
    manifest_path = directory / MANIFEST
    if reuse:
        _log(f"reusing {directory} (made by an earlier --keep run)")
        manifest = json.loads(manifest_path.read_text())
    else:
        _log(f"writing {args.size_gb:g} GiB of audit records to {directory} ...")
        gen = Generator(
            directory, int(args.size_gb * GIB), seed=args.seed, concurrent=args.concurrent
        )
        t0 = time.perf_counter()
        gen.run()
        gen_seconds = time.perf_counter() - t0
        manifest = gen.manifest()
        manifest["generation_seconds"] = gen_seconds
        manifest_path.write_text(json.dumps(manifest))
        _log(f"  done in {gen_seconds:.0f} s ({gen.records / gen_seconds:,.0f} records/s)")
    stats = directory_stats(directory)
    results["generated"] = {
        **stats,
        "records": manifest["records"],
        "sessions": len(manifest["sessions"]),
        "open_sessions": sum(1 for s in manifest["sessions"] if not s["ended"]),
        "generation_seconds": manifest.get("generation_seconds"),
        "rotate_bytes": DEFAULT_ROTATE_BYTES,
    }
    picks = pick_sessions(manifest)
    for pick in picks.values():
        pick.update(span_bytes(directory, pick["session"]))
    results["picks"] = picks

    if not args.no_wait:
        wait_for_quiet_machine()
    results["machine"] = machine_info()
    d = str(directory)
    timings: list[dict[str, Any]] = []
    _log("checking the replays against what was generated ...")
    results["checks"] = {label: check_replay(directory, pick) for label, pick in picks.items()}
    for label, check in results["checks"].items():
        _log(f"  {label}: {check}")

    _log("timing (warm page cache, fresh process each run) ...")
    timings.append(timed("python -m hoopy --help (startup)", hoopy_argv("--help"), args.reps))
    for label, pick in picks.items():
        t = timed(
            f"replay --json ({label})",
            hoopy_argv("replay", pick["session"], "--audit-dir", d, "--json"),
            args.reps,
        )
        timings.append({**t, "session_label": label, "session_info": pick, "target": True})
    pick = picks["middle"]
    t = timed(
        "replay, text timeline (middle)",
        hoopy_argv("replay", pick["session"], "--audit-dir", d),
        args.reps,
    )
    timings.append({**t, "session_label": "middle", "session_info": pick, "target": True})
    t = timed(
        "sessions --json --limit 20",
        hoopy_argv("sessions", "--audit-dir", d, "--json", "--limit", "20"),
        args.reps,
    )
    timings.append({**t, "target": True})

    _log("without the .idx sidecars (fallback scan) ...")
    sidecars = sorted(directory.glob(f"*{INDEX_SUFFIX}"))
    for path in sidecars:
        path.unlink()
    for label in ("early", "late"):
        pick = picks[label]
        t = timed(
            f"replay --json, no .idx ({label})",
            hoopy_argv("replay", pick["session"], "--audit-dir", d, "--json"),
            args.scan_reps,
            warm=False,
        )
        timings.append({**t, "session_label": label, "session_info": pick})
    t = timed(
        "sessions --json --limit 20, no .idx",
        hoopy_argv("sessions", "--audit-dir", d, "--json", "--limit", "20"),
        1,
        warm=False,
    )
    timings.append(t)
    _log("hoopy audit reindex ...")
    reindex = run_once(hoopy_argv("audit", "reindex", d))
    results["reindex"] = {**reindex, "sidecars_deleted": len(sidecars)}
    results["sidecars_after_reindex"] = len(list(directory.glob(f"*{INDEX_SUFFIX}")))
    _log(f"  reindex: {reindex['wall_s']:.2f} s (rc {reindex['rc']})")
    pick = picks["middle"]
    t = timed(
        "replay --json after reindex (middle)",
        hoopy_argv("replay", pick["session"], "--audit-dir", d, "--json"),
        args.reps,
        warm=False,
    )
    timings.append({**t, "session_label": "middle", "session_info": pick, "target": True})
    results["timings"] = timings
    results["target"] = {
        "bound_s": TARGET_SECONDS,
        "met": all(t["max_s"] < TARGET_SECONDS for t in timings if t.get("target")),
    }
    return results


if __name__ == "__main__":
    sys.exit(main())
