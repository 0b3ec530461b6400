"""The head state: removing the newest records or files is detected against it, with and
without the key, and the writer records a gap when it starts on a trail cut short."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopy.audit.head import (
    HEAD_BYTES,
    HeadError,
    HeadFile,
    TrailPosition,
    decode_head,
    default_head_path,
    encode_head,
    load_head,
)
from hoopy.audit.index import IndexKeeper
from hoopy.audit.reader import audit_files, iter_records, verify
from hoopy.audit.writer import AuditWriter

T0 = 1_795_000_000.0
KEY = b"h" * 32
KEYS = [None, KEY]


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def open_writer(directory: Path, key: bytes | None, **kw: object) -> AuditWriter:
    writer = AuditWriter(
        directory,
        key=key,
        clock=kw.pop("clock", Clock()),  # type: ignore[arg-type]
        index=IndexKeeper(),
        head=HeadFile(default_head_path(directory), key),
        **kw,  # type: ignore[arg-type]
    )
    writer.open()
    return writer


def write_trail(directory: Path, key: bytes | None, statements: int = 6, **kw: object) -> None:
    writer = open_writer(directory, key, **kw)
    for i in range(statements):
        writer.append({"kind": "statement", "session": "s1", "seq": i, "sql": "x" * 80})
        writer.append({"kind": "outcome", "session": "s1", "seq": i}, write_now=False)
        writer.sync()  # what the gateway's fsync batches do
    writer.close()


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".idx")


def check(directory: Path, key: bytes | None) -> str | None:
    report = verify(directory, key, default_head_path(directory))
    assert report.first_problem is None and report.head is not None
    return report.head.problem


@pytest.mark.parametrize("key", KEYS)
def test_an_intact_trail_reaches_its_head(tmp_path: Path, key: bytes | None) -> None:
    directory = tmp_path / "audit"
    write_trail(directory, key, rotate_bytes=700)
    assert len(audit_files(directory)) > 2
    report = verify(directory, key, default_head_path(directory))
    assert report.ok, report
    assert report.head is not None and report.head.state is not None
    assert report.head.state.signed is (key is not None)
    assert report.head.state.position.file == audit_files(directory)[-1].name


@pytest.mark.parametrize("key", KEYS)
def test_removing_the_newest_records_is_detected(tmp_path: Path, key: bytes | None) -> None:
    directory = tmp_path / "audit"
    write_trail(directory, key)
    newest = audit_files(directory)[-1]
    lines = newest.read_bytes().splitlines(keepends=True)
    newest.write_bytes(b"".join(lines[:-3]))  # cut at a line boundary: a valid, shorter chain
    sidecar(newest).unlink()  # its binding was cut off too: a careful attacker removes it
    assert verify(directory, key).ok, "the chain alone cannot tell"
    problem = check(directory, key)
    assert problem is not None and "the trail ends before the last record" in problem


@pytest.mark.parametrize("key", KEYS)
def test_deleting_the_newest_file_is_detected(tmp_path: Path, key: bytes | None) -> None:
    directory = tmp_path / "audit"
    write_trail(directory, key, rotate_bytes=700)
    files = audit_files(directory)
    files[-1].unlink()
    sidecar(files[-1]).unlink()
    assert verify(directory, key).ok, "the chain alone cannot tell"
    problem = check(directory, key)
    assert problem is not None and "that file is missing" in problem


def test_without_the_key_a_rewritten_head_goes_unseen_with_it_a_forged_one_is_caught(
    tmp_path: Path,
) -> None:
    for key in KEYS:
        directory = tmp_path / f"audit-{key is not None}"
        write_trail(directory, key)
        newest = audit_files(directory)[-1]
        lines = newest.read_bytes().splitlines(keepends=True)
        kept = lines[:-2]
        newest.write_bytes(b"".join(kept))
        sidecar(newest).unlink()
        forged = TrailPosition(newest.name, len(b"".join(kept)), json.loads(kept[-1])["hash"])
        # The forger has no key: the best they can do is an unsigned (or wrongly signed) head.
        default_head_path(directory).write_bytes(encode_head(forged, b"not the key", T0))
        problem = check(directory, key)
        if key is None:
            assert problem is None  # the documented limit: rewrite both, without a key
        else:
            assert problem is not None and "signature does not match" in problem
        default_head_path(directory).write_bytes(encode_head(forged, None, T0))
        problem = check(directory, key)
        assert (problem is None) is (key is None)


def test_an_old_copy_of_the_head_is_the_limit_a_copy_kept_elsewhere_closes(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "audit"
    writer = open_writer(directory, KEY)
    writer.append({"kind": "statement", "session": "s1", "seq": 1})
    writer.sync()
    old_head = default_head_path(directory).read_bytes()
    old_size = audit_files(directory)[-1].stat().st_size
    writer.append({"kind": "statement", "session": "s1", "seq": 2})
    writer.close()
    shipped = tmp_path / "elsewhere.head"
    shutil.copy(default_head_path(directory), shipped)
    # Cut the trail back to the old head and put the old (validly signed) head back.
    newest = audit_files(directory)[-1]
    newest.write_bytes(newest.read_bytes()[:old_size])
    sidecar(newest).unlink()
    default_head_path(directory).write_bytes(old_head)
    assert check(directory, KEY) is None  # a replayed head: the limit
    report = verify(directory, KEY, shipped)
    assert report.head is not None and report.head.problem is not None


def test_the_writer_records_a_gap_when_it_starts_on_a_cut_trail(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_trail(directory, KEY)
    newest = audit_files(directory)[-1]
    lines = newest.read_bytes().splitlines(keepends=True)
    newest.write_bytes(b"".join(lines[:-3]))
    sidecar(newest).unlink()
    write_trail(directory, KEY, statements=1)  # the gateway starts again
    report = verify(directory, KEY, default_head_path(directory))
    assert report.ok, "the gap is documented in the chain, and the new head is reached"
    (gap,) = report.gaps
    assert gap.kind == "trail_truncated" and gap.file == audit_files(directory)[-1]
    assert gap.detail["head"]["file"] == newest.name
    assert "records were removed while it was stopped" in str(gap)


def test_a_missing_head_is_a_problem_for_verify_and_a_gap_for_the_writer(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    write_trail(directory, None, statements=2)
    default_head_path(directory).unlink()
    problem = check(directory, None)
    assert problem is not None and "--no-head" in problem
    write_trail(directory, None, statements=1)
    report = verify(directory, None, default_head_path(directory))
    assert report.ok and [g.kind for g in report.gaps] == ["head_unusable"]


def test_a_new_directory_starts_without_a_gap_and_the_head_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    head = default_head_path(directory)
    directory.parent.mkdir(exist_ok=True)
    head.write_bytes(b"")  # left by someone else, world-readable
    head.chmod(0o644)
    shutil.rmtree(directory, ignore_errors=True)
    write_trail(directory, KEY, statements=1)
    assert stat.S_IMODE(head.stat().st_mode) == 0o600
    assert len(head.read_bytes()) == HEAD_BYTES
    assert not [r for r in iter_records(directory) if r.get("gap")]


def test_the_head_is_updated_per_sync_not_per_record(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    writer = open_writer(directory, None)
    before = load_head(default_head_path(directory), None).position
    writer.append({"kind": "statement", "session": "s1", "seq": 1})
    assert load_head(default_head_path(directory), None).position == before
    writer.sync()
    after = load_head(default_head_path(directory), None).position
    assert after.end == audit_files(directory)[-1].stat().st_size and after != before
    writer.close()


@given(
    name_seq=st.integers(0, 10**7),
    end=st.integers(0, 2**40),
    digest=st.binary(min_size=32, max_size=32),
    now=st.floats(0, 4e9),
    key=st.sampled_from(KEYS),
)
def test_heads_round_trip_and_a_flipped_byte_is_never_accepted_as_another_head(
    name_seq: int, end: int, digest: bytes, now: float, key: bytes | None
) -> None:
    position = TrailPosition(f"audit-20261126T101010-{name_seq:06d}.jsonl", end, digest.hex())
    data = encode_head(position, key, now)
    assert len(data) == HEAD_BYTES
    assert decode_head(data, key).position == position
    for i in range(0, len(data.rstrip()), 7):
        damaged = bytearray(data)
        damaged[i] ^= 0x01
        try:
            state = decode_head(bytes(damaged), key)
        except HeadError:
            continue
        # Without a key a flipped byte can still parse (e.g. inside the hash): that is what
        # the key is for. With one, never.
        assert key is None or state.position == position
