"""``[gateway] workers = N`` end to end: N gateway processes on the same listeners, each with
its own audit chain that every reader treats as one trail; a dead worker restarted while the
others serve; the supervisor's stop and its death; a worker that cannot start."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from hoopy.audit.reader import iter_records
from tests.gateway.test_audit_replay import cli_json, hoopy_cli
from tests.gateway_rig import HoopyProcess, HoopyStartError

Start = Any


def start_workers(
    hoopy_factory: Start, tmp_path: Path, workers: int = 2, **overrides: Any
) -> tuple[HoopyProcess, Path]:
    directory = tmp_path / "audit"
    hoopy = hoopy_factory(
        gateway={"workers": workers, "shutdown_grace": 2.0},
        audit={"directory": str(directory)},
        **overrides,
    )
    return hoopy, directory


def worker_pids(hoopy: HoopyProcess) -> dict[int, int]:
    ready = json.loads(hoopy.ready_path.read_text())
    return {w["worker"]: w["pid"] for w in ready["workers"]}


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """A worker that cannot accept (SIGSTOP): new connections go to the others."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped yet) is gone for our purposes.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return False


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run(hoopy: HoopyProcess, sql: str, **kw: Any) -> Any:
    conn = hoopy.connect(**kw)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def test_workers_share_the_listeners_and_the_audit_reads_as_one_trail(
    hoopy_factory: Start, tmp_path: Path
) -> None:
    hoopy, directory = start_workers(hoopy_factory, tmp_path)
    pids = worker_pids(hoopy)
    assert sorted(pids) == [1, 2] and len(set(pids.values())) == 2
    assert hoopy.pid not in pids.values()
    # Each worker in turn is the only one accepting: both serve TCP and the unix socket.
    for number in pids:
        other = pids[3 - number]
        with stopped(other):
            assert run(hoopy, f"SELECT 'via tcp {number}'", program_name=f"w{number}") == (
                (f"via tcp {number}",),
            )
            sock = hoopy.unix_socket["app"]
            assert run(hoopy, "SELECT 'via unix'", unix_socket=sock, ssl=None) == (("via unix",),)
    hoopy.stop()
    assert hoopy.returncode == 0
    assert not Path(str(hoopy.unix_socket["app"])).exists(), "the supervisor removes it"

    trails = sorted(p.name for p in directory.iterdir() if p.is_dir())
    assert trails == ["worker-1", "worker-2"]
    sessions: dict[str, str] = {}  # program -> session
    for trail in trails:
        records = list(iter_records(directory / trail))
        starts = [r for r in records if r["kind"] == "file_start"]
        assert starts and all(r["worker"] == int(trail[-1]) and r["workers"] == 2 for r in starts)
        assert {r["pid"] for r in starts} == {pids[int(trail[-1])]}
        for r in records:
            if r["kind"] == "session_start":
                program = r["connect_attrs"].get("program_name")
                if program:
                    sessions[program] = r["session"]
    # Worker K's trail holds the session opened while only K accepted.
    for number in (1, 2):
        trail_sessions = {r.get("session") for r in iter_records(directory / f"worker-{number}")}
        assert sessions[f"w{number}"] in trail_sessions
        assert sessions[f"w{3 - number}"] not in trail_sessions

    # Every reader reads the directory as one trail.
    listed = cli_json("sessions", "--audit-dir", str(directory))
    assert {s["session"] for s in listed} >= set(sessions.values())
    assert len(listed) == 4
    hits = cli_json("audit", "search", "--audit-dir", str(directory), "--sql", "'via tcp")
    assert sorted(h["statement"]["sql"] for h in hits) == [
        "SELECT 'via tcp 1'",
        "SELECT 'via tcp 2'",
    ]
    limited = cli_json(
        "audit", "search", "--audit-dir", str(directory), "--limit", "1", "--sql", "'via"
    )
    assert limited[0]["statement"]["sql"] == "SELECT 'via tcp 1'", "merged in time order"
    for program, session in sessions.items():
        timeline = cli_json("replay", session, "--audit-dir", str(directory))
        sqls = [s["statement"].get("sql") for s in timeline["steps"]]
        assert f"SELECT 'via tcp {program[-1]}'" in sqls
    verified = cli_json("audit", "verify", str(directory))
    assert verified["ok"] and verified["missing_trails"] == []
    assert [t["trail"] for t in verified["trails"]] == ["worker-1", "worker-2"]
    assert all(t["head"]["problem"] is None for t in verified["trails"])
    text = hoopy_cli("audit", "verify", str(directory))
    assert text.returncode == 0 and "worker-1" in text.stdout and "worker-2" in text.stdout

    # A single-process gateway later on the same directory: a third chain, the directory's.
    single = hoopy_factory(audit={"directory": str(directory)})
    assert run(single, "SELECT 'single'") == (("single",),)
    single.stop()
    verified = cli_json("audit", "verify", str(directory))
    assert verified["ok"] and [t["trail"] for t in verified["trails"]] == [
        "audit",
        "worker-1",
        "worker-2",
    ]
    # Its files removed: its head state still names its last record.
    for path in directory.glob("audit-*"):
        path.unlink()
    cut = hoopy_cli("audit", "verify", str(directory), "--json")
    assert cut.returncode == 1
    report = json.loads(cut.stdout)
    assert report["trails"][0]["trail"] == "audit"
    assert "trail ends before" in report["trails"][0]["head"]["problem"]
    (tmp_path / "audit.head").unlink()

    # A worker's whole chain removed, with its head state: verify says so.
    shutil.rmtree(directory / "worker-2")
    (tmp_path / "audit.worker-2.head").unlink()
    gone = hoopy_cli("audit", "verify", str(directory), "--json")
    report = json.loads(gone.stdout)
    assert gone.returncode == 1 and not report["ok"]
    assert report["missing_trails"] and "worker-2" in report["missing_trails"][0]
    # Every worker's chain removed, one head state left: still reported.
    shutil.rmtree(directory / "worker-1")
    gone = hoopy_cli("audit", "verify", str(directory), "--json")
    report = json.loads(gone.stdout)
    assert gone.returncode == 1 and [m.split(":")[0] for m in report["missing_trails"]] == [
        "worker-1"
    ]


def test_a_dead_worker_is_restarted_while_the_others_serve(
    hoopy_factory: Start, tmp_path: Path
) -> None:
    hoopy, directory = start_workers(hoopy_factory, tmp_path)
    pids = worker_pids(hoopy)
    survivor = hoopy.connect()  # a session somewhere; whichever worker it is in
    with survivor.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
    # Kill worker 1 (SIGKILL: no drain) and connect at once: worker 2 serves meanwhile.
    with stopped(pids[2]):
        in_one = hoopy.connect(program_name="in-worker-1")
    os.kill(pids[1], signal.SIGKILL)
    with pytest.raises(pymysql.err.OperationalError), in_one.cursor() as cur:
        cur.execute("SELECT 1")  # its worker is gone, and its session with it
    for _ in range(5):
        assert run(hoopy, "SELECT 'still served'") == (("still served",),)
    wait_for(
        lambda: worker_pids(hoopy)[1] not in (None, pids[1]), what="worker 1 to be restarted"
    )
    restarted = worker_pids(hoopy)[1]
    assert alive(restarted) and worker_pids(hoopy)[2] == pids[2]
    with stopped(pids[2]):  # the new worker 1 serves, and writes on worker 1's chain
        assert run(hoopy, "SELECT 'after restart'") == (("after restart",),)
    survivor.close()
    assert "worker 1 (pid" in hoopy.stderr_text() and "SIGKILL" in hoopy.stderr_text()
    hoopy.stop()
    verified = cli_json("audit", "verify", str(directory))
    assert verified["ok"], verified
    # The restarted worker chained on from its predecessor's last record.
    assert "SELECT 'after restart'" in {
        r.get("sql") for r in iter_records(directory / "worker-1")
    }


def test_kill_reaches_a_session_of_another_worker(hoopy_factory: Start, tmp_path: Path) -> None:
    """The mysql CLI's Ctrl-C: a new connection (on whichever worker) kills the query of a
    session on another worker, by the id hoopy greeted that session with."""
    hoopy, _ = start_workers(hoopy_factory, tmp_path)
    pids = worker_pids(hoopy)
    with stopped(pids[2]):
        victim = hoopy.connect(read_timeout=60)  # on worker 1
    result: list[Any] = []

    def sleep() -> None:
        try:
            with victim.cursor() as cur:
                cur.execute("SELECT SLEEP(30)")
                result.extend(cur.fetchall())
        except pymysql.err.OperationalError as exc:
            result.append(exc.args[0])

    thread = threading.Thread(target=sleep)
    thread.start()
    try:
        with stopped(pids[1]):
            killer = hoopy.connect()  # on worker 2
        time.sleep(0.3)  # the SLEEP is running
        with killer.cursor() as cur:
            cur.execute(f"KILL QUERY {victim.thread_id()}")
        thread.join(10)
        assert not thread.is_alive(), "KILL QUERY from worker 2 did not reach worker 1's query"
        assert result in ([(1,)], [1317])  # SLEEP cut short, or "Query execution was interrupted"
        killer.close()
    finally:
        thread.join(40)
        victim.close()
    assert "names no open connection" not in hoopy.stderr_text()


def test_the_supervisor_stops_its_workers(hoopy_factory: Start, tmp_path: Path) -> None:
    hoopy, _ = start_workers(hoopy_factory, tmp_path, workers=3)
    pids = worker_pids(hoopy)
    assert len(pids) == 3
    assert run(hoopy, "SELECT 1") == ((1,),)
    assert hoopy.proc is not None
    hoopy.proc.send_signal(signal.SIGTERM)
    hoopy.proc.wait(30)
    assert hoopy.returncode == 0
    assert not any(alive(pid) for pid in pids.values())


def test_workers_end_when_their_supervisor_is_killed(hoopy_factory: Start, tmp_path: Path) -> None:
    hoopy, directory = start_workers(hoopy_factory, tmp_path)
    pids = worker_pids(hoopy)
    assert hoopy.proc is not None
    hoopy.proc.kill()
    hoopy.proc.wait(10)
    wait_for(
        lambda: not any(alive(pid) for pid in pids.values()), what="the orphaned workers to end"
    )
    # They shut down as on SIGTERM: their chains end cleanly and verify.
    assert cli_json("audit", "verify", str(directory), "--no-head")["ok"]


def test_a_worker_that_cannot_start_stops_the_gateway(hoopy_factory: Start, tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    trail = directory / "worker-2"
    trail.mkdir(parents=True, mode=0o700)
    fd = os.open(trail / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process holds worker 2's chain
    try:
        with pytest.raises(HoopyStartError) as failed:
            start_workers(hoopy_factory, tmp_path)
    finally:
        os.close(fd)
    message = str(failed.value)
    assert "worker 2" in message and "in use by another hoopy process" in message
    assert "a worker did not start" in message
    # A single gateway on the directory: the supervisor refuses before starting any worker.
    single = hoopy_factory(audit={"directory": str(directory)})
    with pytest.raises(HoopyStartError) as failed:
        start_workers(hoopy_factory, tmp_path)
    assert "in use by another hoopy process" in str(failed.value)
    assert "worker 1 started" not in str(failed.value)
    single.stop()


def test_exit_statuses_are_described() -> None:
    from hoopy.gateway.workers import describe_status

    assert describe_status(signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_status(3 << 8) == "exited with status 3"
    assert describe_status(signal.SIGRTMIN + 3) == f"was killed by signal {signal.SIGRTMIN + 3}"


# --- approvals with several workers -----------------------------------------------------------


def approval_steps(directory: Path, trail: str, approval: str) -> list[str]:
    return [
        r["step"]
        for r in iter_records(directory / trail)
        if r["kind"] == "approval" and r["approval"] == approval
    ]


def test_approvals_are_decided_through_any_worker(
    hoopy_factory: Start, tmp_path: Path, mariadb: Any
) -> None:
    """A statement held in worker 1 is approved through worker 2's admin API (worker 1
    stopped meanwhile, so only worker 2 can answer) and then runs; a retry approval given
    through one worker is used once through the other; a hold whose worker dies is cancelled
    by the worker that replaces it."""
    from tests.gateway.test_approvals import RULES, approval_id, cli, pending_for

    hoopy, directory = start_workers(
        hoopy_factory, tmp_path, targets={"app": {"guardrails": ["appr"]}}, guardrails=RULES
    )
    pids = worker_pids(hoopy)
    suffix = os.urandom(4).hex()
    held_t, retry_t, dying_t = f"h_w{suffix}", f"r_w{suffix}", f"h_d{suffix}"
    for table in (held_t, retry_t, dying_t):
        mariadb.admin_sql(
            f"CREATE TABLE hoopy_test.{table} (id INT PRIMARY KEY, v INT)",
            f"INSERT INTO hoopy_test.{table} VALUES (1, 10), (2, 20)",
        )

    def rows(table: str) -> list[tuple[Any, ...]]:
        return list(mariadb.admin_sql(f"SELECT id, v FROM hoopy_test.{table} ORDER BY id"))

    def in_thread(conn: Any, sql: str) -> tuple[threading.Thread, list[Any]]:
        got: list[Any] = []

        def go() -> None:
            try:
                with conn.cursor() as cur:
                    got.append(cur.execute(sql))
            except Exception as exc:
                got.append(exc)

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        return thread, got

    # Held in worker 1, approved through worker 2.
    with stopped(pids[2]):
        conn = hoopy.connect(database="hoopy_test")
        thread, got = in_thread(conn, f"DELETE FROM {held_t} WHERE id = 1")
        pending = pending_for(hoopy, held_t)
    assert pending["worker"] == 1 and pending["mode"] == "hold"
    with stopped(pids[1]):
        decided = cli(hoopy, "approve", pending["id"])
        assert decided["approval"]["state"] == "approved", decided
        assert got == [] and rows(held_t) == [(1, 10), (2, 20)], "worker 1 is stopped"
    thread.join(20)
    assert got == [1] and rows(held_t) == [(2, 20)]
    conn.close()
    assert approval_steps(directory, "worker-1", pending["id"]) == ["requested", "used"]
    assert approval_steps(directory, "worker-2", pending["id"]) == ["approved"]

    # Retry mode: asked in worker 1, approved through worker 2, used once.
    update = f"UPDATE {retry_t} SET v = v + 1 WHERE id = 2"
    with stopped(pids[2]):
        conn = hoopy.connect(database="hoopy_test")
        with pytest.raises(pymysql.err.OperationalError) as refused, conn.cursor() as cur:
            cur.execute(update)
        conn.close()
    retry_id = approval_id(refused.value.args[1])
    with stopped(pids[1]):
        assert cli(hoopy, "approve", retry_id)["approval"]["state"] == "approved"
    for number in (1, 2):  # the first retry runs, in whichever worker; the second does not
        with stopped(pids[3 - number]):
            conn = hoopy.connect(database="hoopy_test")
            with conn.cursor() as cur:
                if number == 1:
                    assert cur.execute(update) == 1
                else:
                    with pytest.raises(pymysql.err.OperationalError) as again:
                        cur.execute(update)
                    assert approval_id(again.value.args[1]) != retry_id
            conn.close()
    assert rows(retry_t) == [(1, 10), (2, 21)]
    used = cli(hoopy, "list", "--all")
    assert [a["state"] for a in used if a["id"] == retry_id] == ["used"]

    # A hold in a worker that dies: the worker replacing it cancels it.
    with stopped(pids[2]):
        conn = hoopy.connect(database="hoopy_test")
        thread, got = in_thread(conn, f"DELETE FROM {dying_t} WHERE id = 1")
        dying = pending_for(hoopy, dying_t)
    os.kill(pids[1], signal.SIGKILL)
    thread.join(20)
    assert len(got) == 1 and isinstance(got[0], pymysql.err.OperationalError)
    wait_for(lambda: worker_pids(hoopy)[1] not in (None, pids[1]), what="worker 1 restarted")

    def state_of(request_id: str) -> dict[str, Any]:
        return next(a for a in cli(hoopy, "list", "--all") if a["id"] == request_id)

    wait_for(lambda: state_of(dying["id"])["state"] == "cancelled", what="the hold cancelled")
    assert "worker holding it stopped" in state_of(dying["id"])["reason"]
    assert rows(dying_t) == [(1, 10), (2, 20)]
    assert "cancelled" in approval_steps(directory, "worker-1", dying["id"])
    hoopy.stop()
    assert hoopy.returncode == 0
    assert not Path(hoopy.ready["admin"]["unix_socket"]).exists(), "the supervisor removes it"
    for table in (held_t, retry_t, dying_t):
        mariadb.admin_sql(f"DROP TABLE hoopy_test.{table}")
