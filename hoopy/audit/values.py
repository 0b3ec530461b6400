"""The audit record's JSON form of a prepared-statement parameter (``hoopy/wire/params.py``
decodes them from the wire); documented in docs/audit-format.md, "Parameters".

``{"type": "LONGLONG", "value": 5}``; bytes that are not UTF-8 as ``"hex"``; a value sent
with COM_STMT_SEND_LONG_DATA as ``"long_data": true``; values longer than the configured
limit cut, with ``"truncated"`` and the full ``"length"``. ``param_from_json`` turns a
record back into a ``Param`` for ``hoopy replay``.
"""

from __future__ import annotations

import math
from typing import Any, Final

from hoopy.wire.params import (
    LONG_DATA,
    MYSQL_TYPE_DOUBLE,
    MYSQL_TYPE_FLOAT,
    Param,
    type_code,
    type_name,
)

_FLOAT_TYPES: Final = frozenset({MYSQL_TYPE_FLOAT, MYSQL_TYPE_DOUBLE})


_NON_FINITE: Final[dict[str, float]] = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}


def param_to_json(p: Param, *, max_bytes: int | None = None) -> dict[str, Any]:
    """The audit form of a parameter.

    ``{"type": "LONGLONG", "value": 5}``, with ``"unsigned": true`` and ``"name"`` only when
    set; bytes as ``"hex"``; ``{"long_data": true}`` in place of a value sent with
    COM_STMT_SEND_LONG_DATA. NaN and infinities (which JSON lacks) are the strings "NaN",
    "Infinity" and "-Infinity". With ``max_bytes``, a str or bytes value longer than that
    (counted in UTF-8 bytes) is cut to at most ``max_bytes`` bytes and marked
    ``"truncated": true`` with its full ``"length"``.
    """
    d: dict[str, Any] = {"type": type_name(p.type)}
    if p.unsigned:
        d["unsigned"] = True
    if p.name is not None:
        d["name"] = p.name
    value = p.value
    if value is LONG_DATA:
        d["long_data"] = True
    elif isinstance(value, bytes):
        if max_bytes is not None and len(value) > max_bytes:
            d["hex"] = value[:max_bytes].hex()
            d["truncated"] = True
            d["length"] = len(value)
        else:
            d["hex"] = value.hex()
    elif isinstance(value, str):
        d["value"] = value
        # A character is at most 4 UTF-8 bytes: most values need no encoding to be measured.
        if max_bytes is not None and len(value) * 4 > max_bytes:
            data = value.encode("utf-8")
            if len(data) > max_bytes:
                # Cut on a character boundary: drop a partial character at the end.
                d["value"] = data[:max_bytes].decode("utf-8", "ignore")
                d["truncated"] = True
                d["length"] = len(data)
    elif isinstance(value, float):
        d["value"] = value if math.isfinite(value) else _non_finite_name(value)
    elif value is None or isinstance(value, int):
        d["value"] = None if value is None else int(value)  # a bool is recorded as 0 or 1
    else:
        raise ValueError(f"a {type(value).__name__} is not a parameter value")
    return d


def _non_finite_name(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def param_from_json(d: dict[str, Any]) -> Param:
    """The parameter an audit record describes, ready for ``encode_execute``.

    Raises ValueError for a record that is not one, and for a truncated value: the record
    no longer holds what the client sent, so the statement cannot be re-executed from it.
    """
    if not isinstance(d, dict) or not isinstance(d.get("type"), str):
        raise ValueError("a parameter record is an object with a string 'type'")
    if d.get("truncated"):
        raise ValueError(
            f"the {d['type']} value was truncated in the audit record ({d.get('length')} "
            "bytes); it cannot be re-executed"
        )
    ptype = type_code(d["type"])
    unsigned = d.get("unsigned", False)
    name = d.get("name")
    if not isinstance(unsigned, bool) or not (name is None or isinstance(name, str)):
        raise ValueError("'unsigned' is a boolean and 'name' a string")
    value: object
    if d.get("long_data") is True:
        value = LONG_DATA
    elif "hex" in d:
        if not isinstance(d["hex"], str):
            raise ValueError("'hex' is a string of hex digits")
        value = bytes.fromhex(d["hex"])
    elif "value" in d:
        value = d["value"]
        if isinstance(value, bool) or not (value is None or isinstance(value, int | float | str)):
            raise ValueError("'value' is null, a number or a string")
        if ptype in _FLOAT_TYPES and isinstance(value, str):
            if value not in _NON_FINITE:
                raise ValueError(f"{value!r} is not a {d['type']} value")
            value = _NON_FINITE[value]
        elif ptype in _FLOAT_TYPES and isinstance(value, int):
            value = float(value)
    else:
        raise ValueError("a parameter record has a 'value', a 'hex' or 'long_data'")
    return Param(ptype, unsigned, value, name)
