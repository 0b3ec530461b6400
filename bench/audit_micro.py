"""The audit's per-statement CPU in isolation: the same code path the gateway runs, in one
process, without sockets or a database.

    .venv/bin/python -m bench.audit_micro                   # os durability, 50,000 statements
    .venv/bin/python -m bench.audit_micro --durability strict --statements 5000
    .venv/bin/python -m bench.audit_micro --profile         # cProfile, top functions

Per statement it does what a session does for a point select: ``SessionAudit.before`` (build
and write the statement record), feed a one-row response through ``ResponseTracker`` with a
digest, ``SessionAudit.after`` (the outcome record, held back until the next write). It
prints process CPU per statement with and without the audit work (the tracker alone), so
the difference is what the audit adds. The audit directory goes under ``--dir`` (default
/var/tmp), which should be a disk filesystem for ``strict`` to mean anything.

    .venv/bin/python -m bench.audit_micro --cold            # caches evicted before each call

``--cold`` models the gateway, where sysbench, MariaDB and the kernel's loopback path run
between two statements and leave hoopy's caches cold: before each of ``before`` and
``after`` it writes through a 16 MiB buffer, and it times the two calls alone
(``perf_counter_ns``; the eviction is not counted). In the running gateway
(``bench.audit_insitu``) the two cost 3-5x what they cost in the warm loop; with ``--cold``
this loop shows the same. It is how a change to the record path is tried before
``bench.ab`` measures it in the gateway.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from hoopy.config.model import AuditSettings
from hoopy.gateway.audit_log import AuditLog
from hoopy.gateway.session_audit import SessionAudit
from hoopy.identity.principal import Principal
from hoopy.wire.handshake import CLIENT_DEPRECATE_EOF, CLIENT_PROTOCOL_41
from hoopy.wire.messages import build_ok
from hoopy.wire.packets import frame, lenenc_str
from hoopy.wire.response import COM_QUERY, ResponseTracker

CAPS = CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF
QUERY = b"\x03SELECT c FROM sbtest1 WHERE id=4321"


def point_select_response() -> bytes:
    """Column count, one column definition, one row, the closing OK (DEPRECATE_EOF)."""
    column = b"".join(
        lenenc_str(x) for x in (b"def", b"sbtest", b"sbtest1", b"sbtest1", b"c", b"c")
    )
    column += b"\x0c\x21\x00\x78\x00\x00\x00\xfe\x00\x00\x00\x00\x00"
    payloads = [b"\x01", column, lenenc_str(b"x" * 119), build_ok(status=2, header_byte=0xFE)]
    out, seq = b"", 1
    for payload in payloads:
        data, seq = frame(payload, seq)
        out += data
    return out


EVICT = bytearray(16 * 1024 * 1024)
EVICT_BYTES = b"\x01" * (len(EVICT) // 64)


def evict() -> None:
    """Touch one byte per cache line of 16 MiB: L1 and L2 hold none of the audit's code
    and data afterwards, and L3 little."""
    EVICT[::64] = EVICT_BYTES


async def run_cold(durability: str, statements: int, directory: Path) -> None:
    settings = AuditSettings(directory=directory / "audit", durability=durability)
    log = AuditLog(settings, None)
    log.open()
    audit = SessionAudit(log, "19ab3c0d1e2-5f3e9a10", settings, CAPS)
    principal = Principal(name="dev", method="gateway_user")
    response = point_select_response()
    before_ns: list[int] = []
    after_ns: list[int] = []
    clock = time.perf_counter_ns
    for seq in range(statements):
        evict()
        t0 = clock()
        await audit.before(seq, principal, QUERY)
        before_ns.append(clock() - t0)
        digest = audit.new_digest()
        tracker = ResponseTracker(COM_QUERY, CAPS, digest)
        tracker.feed(response)
        evict()
        t0 = clock()
        audit.after(seq, COM_QUERY, tracker.summary, digest)
        after_ns.append(clock() - t0)
    empty: list[int] = []
    for _ in range(statements):
        evict()
        t0 = clock()
        empty.append(clock() - t0)
    await log.close()
    b, a, e = (statistics.median(x) / 1000 for x in (before_ns, after_ns, empty))
    print(f"durability {durability}, {statements} statements, caches evicted before each call,")
    print("wall time per call (median):")
    print(f"  before (statement record, written)  {b:6.1f} us")
    print(f"  after (outcome record, held back)   {a:6.1f} us")
    print(f"  the clock alone                     {e:6.1f} us")


async def run(durability: str, statements: int, directory: Path, profile: bool) -> None:
    settings = AuditSettings(directory=directory / "audit", durability=durability)
    log = AuditLog(settings, None)
    log.open()
    audit = SessionAudit(log, "19ab3c0d1e2-5f3e9a10", settings, CAPS)
    principal = Principal(name="dev", method="gateway_user")
    response = point_select_response()

    async def audited(n: int) -> None:
        for seq in range(n):
            await audit.before(seq, principal, QUERY)
            digest = audit.new_digest()
            tracker = ResponseTracker(COM_QUERY, CAPS, digest)
            tracker.feed(response)
            audit.after(seq, COM_QUERY, tracker.summary, digest)

    def bare(n: int) -> None:
        for _ in range(n):
            ResponseTracker(COM_QUERY, CAPS, None).feed(response)

    started = time.process_time()
    bare(statements)
    tracker_only = (time.process_time() - started) / statements * 1e6
    started = time.process_time()
    await audited(statements)
    with_audit = (time.process_time() - started) / statements * 1e6
    print(f"durability {durability}, {statements} statements, process CPU per statement:")
    print(f"  response tracking alone  {tracker_only:7.1f} us")
    print(f"  with the audit           {with_audit:7.1f} us")
    print(f"  the audit adds           {with_audit - tracker_only:7.1f} us")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await audited(min(statements, 20000))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    await log.close()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.audit_micro", description=__doc__)
    p.add_argument("--durability", choices=("os", "strict"), default="os")
    p.add_argument("--statements", type=int, default=50_000)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--profile", action="store_true")
    p.add_argument("--cold", action="store_true", help="evict the caches before each call")
    args = p.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="hoopy-audit-micro-", dir=args.dir))
    try:
        if args.cold:
            trio.run(run_cold, args.durability, min(args.statements, 5000), directory)
        else:
            trio.run(run, args.durability, args.statements, directory, args.profile)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
