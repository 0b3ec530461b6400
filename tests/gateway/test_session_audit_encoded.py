"""The records SessionAudit encodes without a dict (``_encoded`` and ``_canon``'s
``statement_line`` / ``outcome_line``, the hot path) against the general path that builds
each record as a dict (``_statement``, ``events.outcome``): for any run of commands, two
sessions fed the same commands write the same records, and both chains verify."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.audit import events
from hoopy.audit.records import GENESIS, check_record
from hoopy.config.model import AuditSettings
from hoopy.gateway.audit_log import AuditLog
from hoopy.gateway.session_audit import SessionAudit, has_rows
from hoopy.identity.principal import Principal
from hoopy.wire.handshake import CLIENT_QUERY_ATTRIBUTES
from hoopy.wire.messages import ErrPacket
from hoopy.wire.params import Param, encode_execute
from hoopy.wire.response import PreparedInfo, ResponseSummary, ResultInfo

PRINCIPALS = [
    Principal(name="agent", method="gateway_user"),
    Principal(name='ci "bot" é', method="token", issuer="https://issuer.example"),
]
TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"

queries = st.sampled_from(
    [
        b"SELECT 1",
        b"SELECT c FROM sbtest1 WHERE id=4242",
        b"SELECT * FROM u WHERE mail = 'a.b@example.com' AND id = 'x'",
        f"UPDATE bots SET token = '{TOKEN}'".encode(),
        b"SET PASSWORD = PASSWORD('hunter2')",
        b"CREATE USER u IDENTIFIED /**/ BY 'hunter2'",
        b"SELECT '<redacted:email>'",
        b"SELECT 'caf\xc3\xa9', \"q\\\"uote\", x'00ff', 12345678901234567890",
        b"SELECT /*!50000 'hunter2' */ 1",
        b"SELECT " + b"'x', " * 40 + b"1",  # longer than max_sql_bytes below
        b"SELECT '\xff\xfe not utf-8'",
    ]
) | st.binary(max_size=60)
PREPARES = [
    b"SELECT ?",
    b"SELECT ?, ?",
    b"UPDATE app_users SET password = ? WHERE id = ?",  # its parameters are credentials
    b"SELECT ? FROM t WHERE k = AES_ENCRYPT('x', 'hunter2')",  # recorded with <redacted:
]
prepares = st.sampled_from(PREPARES)
values = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=20)
    | st.sampled_from(["4111111111111111", TOKEN, "a@b.example", "<redacted:x>"])
    | st.binary(max_size=10)
    | st.floats(allow_nan=True)
)
commands = st.one_of(
    st.tuples(st.just("query"), queries),
    st.tuples(st.just("prepare"), prepares),
    st.tuples(
        st.just("execute"),
        st.tuples(
            st.integers(min_value=1, max_value=len(PREPARES) + 1),  # the last: not prepared
            st.lists(values, max_size=3),
            st.sampled_from([0, 0, 1]),  # cursor flags
        ),
    ),
    st.tuples(st.just("other"), st.sampled_from([b"\x0e", b"\x02db", b"\x03", b"\x17"])),
)
outcomes = st.one_of(
    st.builds(
        ResultInfo,
        columns=st.integers(0, 3),
        rows=st.integers(0, 2**40),
        affected_rows=st.integers(0, 2**40),
        last_insert_id=st.integers(0, 2**64 - 1),
        warnings=st.integers(0, 65535),
    ).map(lambda r: ResponseSummary(results=[r])),
    st.just(ResponseSummary(error=ErrPacket(1064, "42000", "near 'hunter2'"))),
    st.just(ResponseSummary(results=[ResultInfo(columns=1, rows=2), ResultInfo()])),
)


def _param(value: Any) -> Param:
    if isinstance(value, bool) or value is None:
        return Param(6, False, None)
    if isinstance(value, int):
        return Param(8, value < 0, value if value >= 0 else value + 2**64)
    if isinstance(value, float):
        return Param(5, False, value)
    if isinstance(value, bytes):
        return Param(0xFC, False, value)
    return Param(0xFD, False, value)


def _payload(kind: str, arg: Any, capabilities: int, params_of: dict[int, int]) -> bytes:
    if kind == "query":
        if capabilities & CLIENT_QUERY_ATTRIBUTES:
            return b"\x03\x00\x01" + arg  # no attributes, one parameter set
        return b"\x03" + arg
    if kind == "prepare":
        return b"\x16" + arg
    if kind == "execute":
        statement_id, vals, flags = arg
        count = params_of.get(statement_id, len(vals))
        vals = (vals + [None] * count)[:count]
        return encode_execute(
            statement_id, [_param(v) for v in vals], flags=flags, capabilities=capabilities
        )
    return bytes(arg)


def _records(directory: Path) -> list[dict[str, Any]]:
    lines = [
        json.loads(line)
        for f in sorted(directory.glob("audit-*.jsonl"))
        for line in f.read_text("utf-8").split("\n")  # not splitlines: U+2028 is JSON text
        if line
    ]
    prev = GENESIS
    for record in lines:
        assert check_record(record, prev) is None
        prev = record["hash"]
    return [
        {k: v for k, v in r.items() if k not in ("ts", "prev", "hash", "duration_ms")}
        for r in lines
        if r["kind"] in ("statement", "outcome")
    ]


def _audit(directory: Path, capabilities: int, max_value_bytes: int = 8) -> SessionAudit:
    config = AuditSettings(
        directory=directory,
        redact=("secrets", "personal"),
        max_sql_bytes=120,
        max_value_bytes=max_value_bytes,
    )
    log = AuditLog(config, None)
    log.open()
    return SessionAudit(log, 's-é"1', config, capabilities=capabilities)


@settings(max_examples=120)
@given(
    run=st.lists(st.tuples(commands, outcomes, st.integers(0, 1)), min_size=1, max_size=12),
    attributes=st.booleans(),
    max_value_bytes=st.sampled_from([8, 16384]),  # values cut, or (most) recorded whole
)
def test_encoded_records_are_the_general_path_records(
    run: list[tuple[tuple[str, Any], ResponseSummary, int]], attributes: bool, max_value_bytes: int
) -> None:
    _same_records(run, CLIENT_QUERY_ATTRIBUTES if attributes else 0, max_value_bytes)


def test_parameters_of_every_usual_kind_are_the_general_path_records() -> None:
    ok = ResponseSummary(results=[ResultInfo(columns=1, rows=1)])
    values = [-5, 7, None, 1.5, "abc", "a@b.example", "x" * 30, TOKEN, b"\x00"]
    for limit in (8, 16384):
        _same_records(
            [(("execute", (2, [v, v], flags)), ok, 0) for v in values for flags in (0, 1)], 0, limit
        )


def _same_records(
    run: list[tuple[tuple[str, Any], ResponseSummary, int]], capabilities: int, max_value_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fast = _audit(Path(tmp) / "fast", capabilities, max_value_bytes)
        general = _audit(Path(tmp) / "general", capabilities, max_value_bytes)
        params_of: dict[int, int] = {}
        next_id = 1
        ok = ResponseSummary(results=[ResultInfo()])
        prelude = [(("prepare", sql), ok, 0) for sql in PREPARES]  # ids 1 to 4, in order
        for seq, ((kind, arg), summary, who) in enumerate(prelude + run, start=1):
            principal = PRINCIPALS[who]
            payload = _payload(kind, arg, capabilities, params_of)
            if not payload:
                continue
            a = fast.commands.decode(payload)
            b = general.commands.decode(payload)
            trio.run(lambda: fast.before(seq, principal, payload, command=a))  # noqa: B023
            general.audit.write(general._statement(seq, principal, payload, decoded=b))
            assert fast._hide_error == general._hide_error
            if kind == "prepare" and summary.error is None:
                count = payload.count(b"?")
                summary = ResponseSummary(
                    results=[ResultInfo()], prepared=PreparedInfo(next_id, 1, count, 0)
                )
                params_of[next_id] = count
                next_id += 1
            for audit, command in ((fast, a), (general, b)):
                audit.commands.completed(command, summary)
            digest_a, digest_b = hashlib.sha256(b"rows"), hashlib.sha256(b"rows")
            fast.after(seq, payload[0], summary, digest_a)
            expected = events.outcome(general.session, seq, summary, 0)
            if has_rows(payload[0], summary):
                expected["digest"] = digest_b.hexdigest()
            if general._hide_error and "error" in expected:
                expected["error"]["message"] = "<redacted: the statement carried redacted values>"
            general.audit.write_later(expected)
        for audit in (fast, general):
            trio.run(audit.audit.close)
        written = _records(Path(tmp) / "fast")
        assert len(written) >= 2 * len(prelude)
        assert written == _records(Path(tmp) / "general")


class _Clock:
    def __init__(self, *readings: int) -> None:
        self.readings = list(readings)

    def monotonic_ns(self) -> int:
        return self.readings.pop(0)


def test_durations_are_recorded_in_milliseconds_from_forwarding_to_the_end(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Both paths record the same ``duration_ms``: microseconds of the monotonic clock in
    milliseconds (a unit slip in the encoded path would be a factor of 1000)."""
    from hoopy.gateway import session_audit

    audit = _audit(tmp_path, 0)
    one = ResponseSummary(results=[ResultInfo(columns=1, rows=1)])  # encoded
    two = ResponseSummary(results=[ResultInfo(columns=1, rows=1), ResultInfo()])  # a dict
    for seq, summary in ((1, one), (2, two)):
        start = 7_000_000_000 * seq
        monkeypatch.setattr(session_audit, "time", _Clock(start, start + 2_345_678))
        trio.run(lambda: audit.before(seq, PRINCIPALS[0], b"\x03SELECT 1"))  # noqa: B023
        audit.after(seq, 0x03, summary, hashlib.sha256())
    trio.run(audit.audit.close)
    lines = [
        json.loads(x)
        for f in tmp_path.glob("audit-*.jsonl")
        for x in f.read_text().split("\n")
        if x
    ]
    assert [r["duration_ms"] for r in lines if r["kind"] == "outcome"] == [2.345, 2.345]
