"""The audit record format: JSON lines chained by SHA-256, optionally signed with HMAC.

Each line is one JSON object: the record's fields in canonical form (keys sorted, no spaces,
UTF-8), then ``hash`` and ``sig`` as the last keys (so the body is encoded once). Besides its
own fields every record carries:

- ``v``: the schema version (``SCHEMA_VERSION``),
- ``prev``: the ``hash`` of the record before it (across files; ``""`` for the very first),
- ``hash``: ``SHA-256(prev + "\\n" + canonical JSON of the record without hash and sig)``,
- ``sig`` (only with a key): ``HMAC-SHA-256(key, hash)``, so rewriting the whole chain from
  some point on is detectable by whoever holds the key.

Editing, deleting, inserting or reordering lines breaks the chain at the first changed record.
Sans-IO: this module formats and checks lines; ``writer.py`` and ``reader.py`` do the files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import json.encoder
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hoopy.audit import _canon

SCHEMA_VERSION = _canon.SCHEMA_VERSION
GENESIS = ""  # the ``prev`` of the first record ever written to an audit directory
CHAIN_FIELDS = ("hash", "sig")
_SET_BY_CHAIN = frozenset(("v", "prev", *CHAIN_FIELDS))


def _not_serialisable(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The canonical form is json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
# allow_nan=False). Its C encoder, made once: json.dumps builds a new encoder per call, which
# cost half of every record's encoding time (two records per statement). No circular-
# reference markers: records are built by hoopy (a cycle would be a RecursionError).
_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encoder = (
    _make_encoder(
        None, _not_serialisable, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )
    if _make_encoder is not None
    else None
)


def canonical_json(record: Mapping[str, Any]) -> bytes:
    if _c_encoder is not None and type(record) is dict:
        return "".join(_c_encoder(record, 0)).encode("utf-8")
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def chain_hash(prev: str, record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k not in CHAIN_FIELDS}
    return hashlib.sha256(prev.encode("ascii") + b"\n" + canonical_json(body)).hexdigest()


def signature(key: bytes, record_hash: str) -> str:
    return hmac.new(key, record_hash.encode("ascii"), hashlib.sha256).hexdigest()


def encode_record(record: Mapping[str, Any]) -> bytes:
    """A record's line (without the newline): the canonical JSON of its body, then ``hash``
    and ``sig`` as the last keys. The body is encoded once, for the hash and for the line."""
    body = canonical_json({k: v for k, v in record.items() if k not in CHAIN_FIELDS})
    return _with_chain_fields(body, record.get("hash"), record.get("sig"))


def _with_chain_fields(body: bytes, record_hash: Any, sig: Any) -> bytes:
    tail = b""
    for name, value in (("hash", record_hash), ("sig", sig)):
        if value is not None:
            tail += b"," + canonical_json({name: value})[1:-1]
    if not tail:
        return body
    return body[:-1] + (tail if body != b"{}" else tail[1:]) + b"}"


class AuditChain:
    """Turns records into chained lines. Holds the last hash; one per audit directory."""

    def __init__(self, last_hash: str = GENESIS, key: bytes | None = None) -> None:
        self.last_hash = last_hash
        self._key = key

    def line(self, record: Mapping[str, Any], ts: str | None = None) -> bytes:
        """The complete line (with its newline) for ``record``, with ``ts`` added when given
        and the record has none; advances the chain."""
        if not _SET_BY_CHAIN.isdisjoint(record):
            raise ValueError("v, prev, hash and sig are set by the chain")
        if type(record) is dict:
            try:
                line, self.last_hash = _canon.chain_line(record, ts, self.last_hash, self._key)
                return line
            except (TypeError, ValueError):
                pass  # json.dumps below says what (or converts what it can, as it always did)
        fields = {**record, "v": SCHEMA_VERSION, "prev": self.last_hash}
        if ts is not None:
            fields.setdefault("ts", ts)
        body = canonical_json(fields)
        record_hash = hashlib.sha256(self.last_hash.encode("ascii") + b"\n" + body).hexdigest()
        self.last_hash = record_hash
        # Hex digests need no JSON escaping: format the chain fields directly.
        tail = b',"hash":"' + record_hash.encode("ascii") + b'"'
        if self._key is not None:
            tail += b',"sig":"' + signature(self._key, record_hash).encode("ascii") + b'"'
        return body[:-1] + tail + b"}\n"


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """Why a record does not verify (what ``hoopy audit verify`` reports)."""

    reason: str


def check_record(
    record: Mapping[str, Any], expected_prev: str, key: bytes | None = None
) -> ChainProblem | None:
    """Check one parsed record against the chain so far; None when it verifies."""
    if record.get("v") != SCHEMA_VERSION:
        return ChainProblem(f"unknown schema version {record.get('v')!r}")
    if record.get("prev") != expected_prev:
        return ChainProblem("prev does not match the hash of the record before it")
    if record.get("hash") != chain_hash(expected_prev, record):
        return ChainProblem("hash does not match the record's content")
    if key is not None:
        sig = record.get("sig")
        if not isinstance(sig, str) or not hmac.compare_digest(
            sig, signature(key, str(record["hash"]))
        ):
            return ChainProblem("signature does not match (wrong key, or the chain was rewritten)")
    return None
