"""hoopy/audit/_canon.py (the audit's canonical JSON and chained lines, compiled with mypyc
when possible) against what it stands in for: ``json.dumps`` with the canonical settings, and
the generic chaining in ``records.py``; the compiled build against its source."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.audit import _canon as loaded
from hoopy.audit.records import AuditChain, canonical_json, check_record
from tests.wire.builds import build_is_current, compiled, pure

SOURCE = Path(__file__).resolve().parents[2] / "hoopy" / "audit" / "_canon.py"
PURE = pure(SOURCE, "_canon_pure")
COMPILED = compiled(loaded)
BUILDS = [PURE, loaded] if COMPILED else [PURE]

# Everything JSON can hold, and the odd values records never should but a bug might put in.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and the infinities included: both must refuse them
    | st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x7F))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
odd = st.sampled_from([b"bytes", {1: "int key"}, {None: 1}, {1.5: 2}, object(), {1, 2}])


def reference(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", f(*args)
    except (TypeError, ValueError) as exc:
        return "error", type(exc)


@pytest.mark.parametrize("module", BUILDS, ids=lambda m: m.__name__)
@given(value=values)
@settings(max_examples=150)
def test_canonical_is_json_dumps(module: Any, value: Any) -> None:
    assert outcome(module.canonical, value) == outcome(reference, value)


@pytest.mark.parametrize("module", BUILDS, ids=lambda m: m.__name__)
@given(value=st.lists(values, max_size=2).flatmap(lambda vs: st.tuples(st.just(vs), odd)))
def test_odd_values_refused_or_as_json_dumps(module: Any, value: Any) -> None:
    got = outcome(module.canonical, value)
    # Refusing what json.dumps would convert (an int key) is allowed: the caller then uses
    # json.dumps. Never a different text.
    assert got[0] == "error" or got == outcome(reference, value)


@given(value=values)
@settings(max_examples=120)
def test_compiled_and_pure_agree(value: Any) -> None:
    assert outcome(loaded.canonical, value) == outcome(PURE.canonical, value)


record_keys = st.sampled_from(
    ["kind", "session", "seq", "sql", "params", "rule", "verdict", "ts", "digest", "é", 'a"b']
)
records = st.dictionaries(record_keys | st.text(max_size=6), values, max_size=8).filter(
    lambda r: not {"v", "prev", "hash", "sig"} & set(r)
)


def generic_line(record: dict[str, Any], ts: str | None, prev: str, key: bytes | None) -> bytes:
    """What AuditChain wrote before _canon: the merged record through json.dumps."""
    fields = {**record, "v": 1, "prev": prev}
    if ts is not None:
        fields.setdefault("ts", ts)
    body = canonical_json(fields)
    digest = hashlib.sha256(prev.encode("ascii") + b"\n" + body).hexdigest()
    tail = b',"hash":"' + digest.encode() + b'"'
    if key is not None:
        tail += b',"sig":"' + hmac.new(key, digest.encode(), hashlib.sha256).hexdigest().encode()
        tail += b'"'
    return body[:-1] + tail + b"}\n"


@pytest.mark.parametrize("module", BUILDS, ids=lambda m: m.__name__)
@given(
    record=records,
    ts=st.none() | st.just("2026-12-03T12:00:00.000001Z"),
    prev=st.just("") | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    key=st.none() | st.binary(min_size=1, max_size=40),
)
@settings(max_examples=120)
def test_chain_line_is_the_generic_line(
    module: Any, record: dict[str, Any], ts: str | None, prev: str, key: bytes | None
) -> None:
    got = outcome(module.chain_line, record, ts, prev, key)
    want = outcome(generic_line, record, ts, prev, key)
    if got[0] == "ok":
        assert want[0] == "ok"
        line, digest = got[1]
        assert line == want[1]
        parsed = json.loads(line)
        assert parsed["hash"] == digest
        assert check_record(parsed, prev, key) is None  # what verify checks


def test_chain_writes_the_same_lines_whichever_path() -> None:
    """AuditChain.line takes _canon's path for plain dicts and json.dumps for other
    mappings: both chain on."""
    chain = AuditChain()
    first = json.loads(chain.line({"kind": "x", "n": 1}, "t1"))
    second = json.loads(chain.line(MappingProxyType({"kind": "y", "n": 2}), "t2"))
    assert first["ts"] == "t1" and second["n"] == 2 and second["ts"] == "t2"
    assert check_record(first, "") is None
    assert check_record(second, first["hash"]) is None
    with pytest.raises(ValueError):
        chain.line({"kind": "z", "bad": float("nan")})
    with pytest.raises(TypeError):
        chain.line({"kind": "z", "bad": b"bytes"})
    assert chain.last_hash == second["hash"]  # refused records do not advance it


def test_compiled_build_is_current() -> None:
    result = build_is_current()
    assert result.returncode == 0, result.stdout


OUTCOME_KEYS = (
    "kind",
    "session",
    "seq",
    "duration_ms",
    "rows",
    "affected_rows",
    "last_insert_id",
    "warnings",
    "results",
)


@pytest.mark.parametrize("module", BUILDS, ids=lambda m: m.__name__)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["outcome", "statement", "x"]),
            # Scalars and flat lists: the deep values' encoding is the other tests' (with
            # nine deep values a record, input generation failed hypothesis's health check
            # on a loaded CI machine).
            st.lists(
                scalars | st.lists(scalars, max_size=3),
                min_size=len(OUTCOME_KEYS),
                max_size=len(OUTCOME_KEYS),
            ),
            st.booleans(),  # the record carries its own ts
            st.booleans(),  # and a digest
        ),
        min_size=1,
        max_size=12,
    ),
    prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
@settings(max_examples=60)
def test_records_of_a_shape_seen_before_encode_the_same(
    module: Any, rows: list[tuple[str, list[Any], bool, bool]], prev: str
) -> None:
    """The second and later records of a key set take the learned shape: values, kinds and
    whether ts is the record's own all vary between records of one shape."""
    for kind, vals, own_ts, digest in rows:
        record: dict[str, Any] = dict(zip(OUTCOME_KEYS, vals, strict=True))
        record["kind"] = kind
        if own_ts:
            record["ts"] = vals[0]
        if digest:
            record["digest"] = "ab" * 32
        got = outcome(module.chain_line, record, "2026-12-03T12:00:00.000001Z", prev, None)
        want = outcome(generic_line, record, "2026-12-03T12:00:00.000001Z", prev, None)
        assert got[0] == want[0]
        if got[0] == "ok":
            assert got[1][0] == want[1]


# --- statement_line and outcome_line: the records events builds, encoded from their fields --

texts = st.text() | st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=12)
hashes = st.just("") | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
keys = st.none() | st.binary(min_size=1, max_size=40)
counts = st.integers(min_value=0, max_value=2**64 - 1)
stamps = st.just("2026-12-03T12:00:00.000001Z") | texts
params = st.lists(st.dictionaries(st.sampled_from(["type", "value", "hex", "é"]), scalars))


def _json(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


@pytest.mark.parametrize("module", BUILDS, ids=lambda m: m.__name__)
@given(
    command=st.sampled_from(["COM_QUERY", "COM_STMT_EXECUTE"]) | texts,
    principal=texts,
    session=texts,
    seq=counts,
    sql=texts,
    verdict=st.sampled_from(["allow", "log", "approved"]) | texts,
    rule=st.none() | texts,
    params=st.none() | params,
    statement_id=st.integers(min_value=-1, max_value=2**32 - 1),
    cursor=st.integers(min_value=0, max_value=255),
    redacted=st.none() | st.lists(texts, max_size=3),
    ts=stamps,
    prev=hashes,
    key=keys,
)
@settings(max_examples=200)
def test_statement_line_is_the_generic_line(
    module: Any,
    command: str,
    principal: str,
    session: str,
    seq: int,
    sql: str,
    verdict: str,
    rule: str | None,
    params: list[Any] | None,
    statement_id: int,
    cursor: int,
    redacted: list[str] | None,
    ts: str,
    prev: str,
    key: bytes | None,
) -> None:
    record: dict[str, Any] = {
        "kind": "statement",
        "session": session,
        "seq": seq,
        "principal": principal,
        "command": command,
        "verdict": verdict,
        "rule": rule,
        "sql": sql,
    }
    if params:
        record["params"] = params
    if statement_id >= 0:
        record["statement_id"] = statement_id
    if cursor:
        record["cursor"] = cursor
    if redacted:
        record["redacted"] = redacted
    got = outcome(
        module.statement_line,
        _json(command),
        _json(principal),
        _json(session),
        seq,
        sql,
        _json(verdict),
        "null" if rule is None else _json(rule),
        params,
        statement_id,
        cursor,
        redacted,
        ts,
        prev,
        key,
    )
    want = outcome(generic_line, record, ts, prev, key)
    assert got[0] == want[0]
    if got[0] == "ok":
        line, digest = got[1]
        assert line == want[1]
        parsed = json.loads(line)
        assert parsed["hash"] == digest
        assert check_record(parsed, prev, key) is None


@pytest.mark.parametrize("module", BUILDS, ids=lambda m: m.__name__)
@given(
    us=st.integers(min_value=0, max_value=10**6)
    | st.integers(min_value=0, max_value=10**16)
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.sampled_from([0, 1, 10, 100, 999, 1000, 1001, 1010, 1100, 10**15 - 1, 10**15])
)
@settings(max_examples=500)
def test_milliseconds_is_the_repr_of_the_float(module: Any, us: int) -> None:
    assert module.milliseconds(us) == float.__repr__(us / 1000)


@pytest.mark.parametrize("module", BUILDS, ids=lambda m: m.__name__)
def test_milliseconds_near_every_rounding(module: Any) -> None:
    for us in [*range(0, 3001), *range(10**12 - 1500, 10**12 + 1500)]:
        assert module.milliseconds(us) == float.__repr__(us / 1000), us


@pytest.mark.parametrize("module", BUILDS, ids=lambda m: m.__name__)
@given(
    session=texts,
    seq=counts,
    duration=st.integers(min_value=0, max_value=10**13) | st.integers(),
    rows=counts,
    affected=counts,
    insert_id=counts,
    warnings=st.integers(min_value=0, max_value=65535),
    digest=st.none() | hashes,
    ts=stamps,
    prev=hashes,
    key=keys,
)
@settings(max_examples=200)
def test_outcome_line_is_the_generic_line(
    module: Any,
    session: str,
    seq: int,
    duration: int,
    rows: int,
    affected: int,
    insert_id: int,
    warnings: int,
    digest: str | None,
    ts: str,
    prev: str,
    key: bytes | None,
) -> None:
    record: dict[str, Any] = {
        "kind": "outcome",
        "session": session,
        "seq": seq,
        "duration_ms": duration / 1000,
        "rows": rows,
        "affected_rows": affected,
        "last_insert_id": insert_id,
        "warnings": warnings,
        "results": 1,
    }
    if digest is not None:
        record["digest"] = digest
    got = outcome(
        module.outcome_line,
        _json(session),
        seq,
        duration,
        rows,
        affected,
        insert_id,
        warnings,
        digest,
        ts,
        prev,
        key,
    )
    want = outcome(generic_line, record, ts, prev, key)
    assert got[0] == want[0]
    if got[0] == "ok":
        line, chained = got[1]
        assert line == want[1]
        assert check_record(json.loads(line), prev, key) is None
        assert json.loads(line)["hash"] == chained
