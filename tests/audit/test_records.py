"""The line layout: canonical body, then hash and sig last; the body is what is hashed."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from hoopy.audit.records import (
    GENESIS,
    AuditChain,
    canonical_json,
    chain_hash,
    check_record,
    encode_record,
)

values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in ("v", "prev", "hash", "sig")),
        values,
        max_size=6,
    ),
    st.booleans(),
)
def test_lines_round_trip_and_verify(fields: dict[str, object], signed: bool) -> None:
    key = b"k" if signed else None
    chain = AuditChain(GENESIS, key)
    line = chain.line(fields)
    record = json.loads(line)
    assert encode_record(record) + b"\n" == line
    assert check_record(record, GENESIS, key) is None
    assert record["hash"] == chain_hash(GENESIS, record) == chain.last_hash
    keys = list(record)
    assert keys[-1] == ("sig" if signed else "hash")
    assert "hash" in keys[-2:]


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_the_reused_encoder_is_exactly_canonical_json(record: dict[str, object]) -> None:
    expected = json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    assert canonical_json(record) == expected


def test_the_reused_encoder_refuses_what_json_refuses() -> None:
    import pytest

    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError):
        canonical_json({"x": object()})
