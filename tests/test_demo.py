"""``hoopy demo`` end to end: it starts (a throwaway MariaDB and the gateway), each command
it prints does what it says through the real ``mariadb`` CLI and ``hoopy`` commands, and
Ctrl-C stops everything and removes every file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hoopy.demo import MISSING_SERVER, find_binary
from tests.gateway.clients import require_binary

REPO = Path(__file__).resolve().parents[1]


def _run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, env=env
    )


def test_the_demo_runs_what_it_prints_and_leaves_nothing(tmp_path: Path) -> None:
    require_binary("mariadb")
    if find_binary("mariadbd") is None:
        pytest.skip(MISSING_SERVER)
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hoopy", "demo", "--port", "0", "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the demo did not start within 90 s"
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        workdir = Path(info["workdir"])
        export, select, delete, update, approve, sessions, replay = info["commands"]
        assert export.startswith("export HOOPY_DEMO_TOKEN=")
        env = {**os.environ, "HOOPY_DEMO_TOKEN": info["token"]}

        rows = _run(select, env)
        assert rows.returncode == 0, rows.stderr
        lines = [line.split("\t") for line in rows.stdout.splitlines()]
        assert lines[0] == ["id", "name", "email", "card"] and len(lines) == 5
        for _, _name, email, card in lines[1:]:
            assert re.fullmatch(r"h:[0-9a-f]{16}", email), email  # masked: a keyed hash
            assert card.startswith("*") and "@" not in rows.stdout
        assert lines[1][1] == "Ada Lovelace" and lines[1][3].endswith("1111")

        refused = _run(delete, env)
        assert refused.returncode == 1
        assert "ERROR 1290" in refused.stderr and "default/unbounded-write" in refused.stderr

        held = _run(update, env)
        assert held.returncode == 1 and "needs a human's approval" in held.stderr
        approval = re.search(r"approval (ap-\w+) is pending", held.stderr)
        assert approval is not None, held.stderr
        done = _run(approve.replace(" ID ", f" {approval.group(1)} "), env)
        assert done.returncode == 0 and "approved" in done.stdout, done.stderr
        again = _run(update, env)
        assert again.returncode == 0, again.stderr

        listed = _run(sessions + " --json", env)
        assert listed.returncode == 0, listed.stderr
        timelines = ""
        for entry in json.loads(listed.stdout):  # one session per mariadb command above
            shown = _run(replay.replace(" SESSION ", f" {entry['session']} "), env)
            assert shown.returncode == 0, shown.stderr
            timelines += shown.stdout
        for text in ("SELECT * FROM customers", "DELETE FROM customers", "UPDATE customers",
                     "denied", "approval"):  # fmt: skip
            assert text in timelines, timelines
        assert "ada@example.com" not in timelines  # masked values never reach the trail
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert not workdir.exists(), "the demo left its files"
    with pytest.raises(ProcessLookupError):
        os.kill(info["mariadbd_pid"], 0)
