"""Prepared-statement parameters and query attributes, decoded and encoded without I/O.

MySQL protocol docs, "COM_STMT_EXECUTE": after the statement id, the cursor flags and the
iteration count come, when the statement has parameters, a NULL bitmap of
``(count + 7) // 8`` bytes (bit ``i % 8`` of byte ``i // 8`` is parameter ``i``), the
``new_params_bound_flag`` byte, then (if that flag is set) two bytes per parameter: the type
from ``enum_field_types`` and a flag byte whose 0x80 bit means unsigned, then the value of
every parameter that is neither NULL nor sent earlier with COM_STMT_SEND_LONG_DATA, in
"Binary Protocol Value" form. The packet does not say how many parameters it holds: that
number comes from the statement's COM_STMT_PREPARE_OK, and so do the types when the flag is 0
(they are the ones bound at the previous execute).

With ``CLIENT_QUERY_ATTRIBUTES`` (MySQL 8.0.23 for COM_QUERY, 8.0.26 for prepared
statements; MariaDB has no query attributes) COM_STMT_EXECUTE carries a
``parameter_count`` (lenenc) before the NULL bitmap and a name (lenenc string) after each
type; parameters past the statement's own are query attributes. COM_QUERY then starts with
the same block ("COM_QUERY": ``parameter_count``, ``parameter_set_count`` which is always 1,
bitmap, flag, types and names, values) before the SQL text.

Where the docs are vague this module follows the server, ``parse_query_bind_params`` and
``get_ps_param_len`` in sql/protocol_classic.cc (MySQL 8.4):

- the server reads ``parameter_count`` whenever the client has CLIENT_QUERY_ATTRIBUTES and
  the statement has parameters, whether or not the PARAMETER_COUNT_AVAILABLE flag is set;
  the flag only matters for a statement without parameters;
- a type the server does not know is read as a length-encoded string;
- a parameter sent with COM_STMT_SEND_LONG_DATA has no bytes here, and its long data wins
  over its NULL bit (``Prepared_statement::insert_parameters``).

Every malformed or short packet raises ``ProtocolError``; values that cannot be encoded
raise ``ValueError``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from hoopy.wire.handshake import CLIENT_QUERY_ATTRIBUTES
from hoopy.wire.packets import ProtocolError, Reader, copy_from, lenenc_int, lenenc_str
from hoopy.wire.response import COM_QUERY, COM_STMT_EXECUTE

# Column types ("enum_field_types" in field_types.h). Parameters only ever use some of them,
# but an audit record names whatever the client sent.
MYSQL_TYPE_DECIMAL = 0x00
MYSQL_TYPE_TINY = 0x01
MYSQL_TYPE_SHORT = 0x02
MYSQL_TYPE_LONG = 0x03
MYSQL_TYPE_FLOAT = 0x04
MYSQL_TYPE_DOUBLE = 0x05
MYSQL_TYPE_NULL = 0x06
MYSQL_TYPE_TIMESTAMP = 0x07
MYSQL_TYPE_LONGLONG = 0x08
MYSQL_TYPE_INT24 = 0x09
MYSQL_TYPE_DATE = 0x0A
MYSQL_TYPE_TIME = 0x0B
MYSQL_TYPE_DATETIME = 0x0C
MYSQL_TYPE_YEAR = 0x0D
MYSQL_TYPE_NEWDATE = 0x0E
MYSQL_TYPE_VARCHAR = 0x0F
MYSQL_TYPE_BIT = 0x10
MYSQL_TYPE_TIMESTAMP2 = 0x11
MYSQL_TYPE_DATETIME2 = 0x12
MYSQL_TYPE_TIME2 = 0x13
MYSQL_TYPE_VECTOR = 0xF2
MYSQL_TYPE_JSON = 0xF5
MYSQL_TYPE_NEWDECIMAL = 0xF6
MYSQL_TYPE_ENUM = 0xF7
MYSQL_TYPE_SET = 0xF8
MYSQL_TYPE_TINY_BLOB = 0xF9
MYSQL_TYPE_MEDIUM_BLOB = 0xFA
MYSQL_TYPE_LONG_BLOB = 0xFB
MYSQL_TYPE_BLOB = 0xFC
MYSQL_TYPE_VAR_STRING = 0xFD
MYSQL_TYPE_STRING = 0xFE
MYSQL_TYPE_GEOMETRY = 0xFF

TYPE_NAMES: Final[dict[int, str]] = {
    code: name.removeprefix("MYSQL_TYPE_")
    for name, code in globals().items()
    if name.startswith("MYSQL_TYPE_")
}
TYPE_CODES: Final[dict[str, int]] = {name: code for code, name in TYPE_NAMES.items()}

# "COM_STMT_EXECUTE": the flag byte after each type; only the unsigned bit is defined.
UNSIGNED_FLAG = 0x80

# enum_cursor_type (mysql_com.h): the COM_STMT_EXECUTE flags byte.
CURSOR_TYPE_NO_CURSOR = 0x00
CURSOR_TYPE_READ_ONLY = 0x01
CURSOR_TYPE_FOR_UPDATE = 0x02
CURSOR_TYPE_SCROLLABLE = 0x04
PARAMETER_COUNT_AVAILABLE = 0x08

# parse_query_bind_params: "Cap the param count to 64k. Should be enough for everybody!"
# A larger count is a malformed packet; the cap also bounds what a peer can make us loop over.
MAX_PARAMETER_COUNT = 0xFFFF

# "Binary Protocol Value": fixed-width integers. INT24 travels in 4 bytes and YEAR in 2, as
# in binary result rows (MySQL's server rejects both as parameter types; MariaDB and its
# Connector/C use these widths).
_INT_WIDTHS: Final[dict[int, int]] = {
    MYSQL_TYPE_TINY: 1,
    MYSQL_TYPE_SHORT: 2,
    MYSQL_TYPE_YEAR: 2,
    MYSQL_TYPE_LONG: 4,
    MYSQL_TYPE_INT24: 4,
    MYSQL_TYPE_LONGLONG: 8,
}
_FLOAT_FORMATS: Final[dict[int, struct.Struct]] = {
    MYSQL_TYPE_FLOAT: struct.Struct("<f"),
    MYSQL_TYPE_DOUBLE: struct.Struct("<d"),
}
_DATE_TYPES: Final = frozenset({MYSQL_TYPE_DATE, MYSQL_TYPE_DATETIME, MYSQL_TYPE_TIMESTAMP})

# "ProtocolBinary::MYSQL_TYPE_DATETIME": 0, 4 (date), 7 (+ time), 11 (+ microseconds);
# MySQL 8.0.19+ adds 13 (+ a signed time zone displacement in minutes).
_DATETIME_LENGTHS: Final = frozenset({0, 4, 7, 11, 13})
# "ProtocolBinary::MYSQL_TYPE_TIME": 0, 8 (sign, days, h, m, s), 12 (+ microseconds).
# (The docs' example "01 -- time 0d 00:00:00" is wrong: a zero time is length 0.)
_TIME_LENGTHS: Final = frozenset({0, 8, 12})


class _LongData:
    """The value of a parameter sent earlier with COM_STMT_SEND_LONG_DATA."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LONG_DATA"

    def __reduce__(self) -> str:
        return "LONG_DATA"


LONG_DATA: Final = _LongData()


@dataclass(frozen=True, slots=True)
class Param:
    """One bound parameter or query attribute.

    ``value`` is None for NULL; an int for the integer types; a float for FLOAT and DOUBLE;
    text for DATE ("YYYY-MM-DD"), DATETIME and TIMESTAMP ("YYYY-MM-DD HH:MM:SS[.ffffff]",
    with "+HH:MM" when the client sent a time zone) and TIME ("[-]HH:MM:SS[.ffffff]", hours
    past 24 as in MySQL's own text form "-838:59:59"), the fraction only when it is not
    zero; str for everything else when it is valid UTF-8, else bytes; ``LONG_DATA`` when
    the value went ahead in COM_STMT_SEND_LONG_DATA.
    ``name`` is the query-attribute name (None when the client sent none).
    """

    type: int
    unsigned: bool
    value: object
    name: str | None = None

    @property
    def is_long_data(self) -> bool:
        return self.value is LONG_DATA

    @property
    def type_name(self) -> str:
        return type_name(self.type)


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    """A decoded COM_STMT_EXECUTE.

    ``types`` are the (type, unsigned) pairs now bound to the statement's own parameters:
    keep them and pass them as ``previous_types`` to decode the next execute, which may send
    ``new_params_bound_flag`` 0 and no types.
    """

    statement_id: int
    flags: int
    iteration_count: int
    params: tuple[Param, ...]
    types: tuple[tuple[int, bool], ...]
    new_params_bound: bool


def type_name(code: int) -> str:
    """The MYSQL_TYPE_* name without its prefix, or "0x.." for a code it does not know."""
    return TYPE_NAMES.get(code) or f"0x{code:02x}"


def type_code(name: str) -> int:
    code = TYPE_CODES.get(name)
    if code is not None:
        return code
    if re.fullmatch(r"0x[0-9a-f]{2}", name):
        return int(name, 16)
    raise ValueError(f"unknown parameter type {name!r}")


# --- decoding ----------------------------------------------------------------------------


def decode_execute(
    payload: bytes,
    num_params: int,
    previous_types: Sequence[tuple[int, bool]] | None,
    long_data: Collection[int] = (),
    *,
    capabilities: int,
) -> ExecuteRequest:
    """Decode a COM_STMT_EXECUTE payload (command byte included).

    ``num_params`` is the statement's parameter count from its COM_STMT_PREPARE_OK,
    ``previous_types`` the ``types`` of its previous execute (None if there was none) and
    ``long_data`` the indexes of the parameters sent with COM_STMT_SEND_LONG_DATA since its
    last execute or COM_STMT_RESET.
    ``capabilities`` are the ones the client and the server agreed on.
    """
    if not payload or payload[0] != COM_STMT_EXECUTE:
        raise ProtocolError("not a COM_STMT_EXECUTE packet")
    r = Reader(payload, 1)
    if r.remaining() < 9:
        raise ProtocolError("COM_STMT_EXECUTE is shorter than its fixed fields")
    statement_id = r.uint(4)
    flags = r.uint(1)
    iteration_count = r.uint(4)
    attributes = bool(capabilities & CLIENT_QUERY_ATTRIBUTES)
    # "COM_STMT_EXECUTE": if num_params > 0 || (CLIENT_QUERY_ATTRIBUTES &&
    # (flags & PARAMETER_COUNT_AVAILABLE)). Anything after that is ignored, as the server does.
    if num_params == 0 and not (attributes and flags & PARAMETER_COUNT_AVAILABLE):
        return ExecuteRequest(statement_id, flags, iteration_count, (), (), False)
    count = num_params
    if attributes:
        count = _read_count(r, "COM_STMT_EXECUTE")
        if count < num_params:
            raise ProtocolError(
                f"COM_STMT_EXECUTE sends {count} parameters for {num_params} placeholders"
            )
    if count == 0:
        return ExecuteRequest(statement_id, flags, iteration_count, (), (), False)
    null_bitmap = _read_null_bitmap(r, count, "COM_STMT_EXECUTE")
    bound = r.uint(1) != 0
    names: list[str | None]
    if bound:
        types, names = _read_types(r, count, attributes, "COM_STMT_EXECUTE")
        remembered = tuple(types[:num_params])
    else:
        if previous_types is None or len(previous_types) < num_params:
            raise ProtocolError(
                f"COM_STMT_EXECUTE of statement {statement_id} reuses parameter types, but "
                "no earlier execute of it bound any"
            )
        remembered = tuple((t, bool(u)) for t, u in previous_types[:num_params])
        # Query attributes past the statement's parameters have no type to reuse: the server
        # accepts them only as NULLs (parse_query_bind_params).
        types = [*remembered, *[(MYSQL_TYPE_NULL, False)] * (count - num_params)]
        names = [None] * count
    params: list[Param] = []
    for i in range(count):
        ptype, unsigned = types[i]
        if i < num_params and i in long_data:
            value: object = LONG_DATA
        elif null_bitmap[i >> 3] & (1 << (i & 7)):
            value = None
        elif not bound and i >= num_params:
            raise ProtocolError(
                f"COM_STMT_EXECUTE query attribute {i} has a value but no type "
                "(new_params_bound_flag is 0)"
            )
        else:
            value = _read_value(r, ptype, unsigned, i, "COM_STMT_EXECUTE")
        params.append(Param(ptype, unsigned, value, names[i]))
    return ExecuteRequest(statement_id, flags, iteration_count, tuple(params), remembered, bound)


def bind_types(
    payload: bytes, num_params: int, types: Sequence[tuple[int, bool]], *, capabilities: int
) -> bytes | None:
    """A COM_STMT_EXECUTE that reuses the bound types (``new_params_bound_flag`` 0), with
    ``types`` bound explicitly instead; None when it binds its own or has no parameters.

    For a statement whose types the server never saw: hoopy refused the EXECUTE that bound
    them (a guardrail's review), while the client, as with a direct server that rejected the
    execution after binding, holds them bound. The values that follow are unchanged: they
    are encoded by these types already.
    """
    attributes = bool(capabilities & CLIENT_QUERY_ATTRIBUTES)
    if len(payload) < 10 or num_params == 0 or len(types) < num_params:
        return None
    r = Reader(payload, 10)
    count = num_params
    if attributes:
        count = _read_count(r, "COM_STMT_EXECUTE")
        if count < num_params:
            return None
    _read_null_bitmap(r, count, "COM_STMT_EXECUTE")
    at = r.pos
    if at >= len(payload) or payload[at] != 0:
        return None
    typed = [*types[:num_params], *[(MYSQL_TYPE_NULL, False)] * (count - num_params)]
    out = bytearray(payload[:at])
    out.append(1)
    for ptype, unsigned in typed:
        out += bytes((ptype, UNSIGNED_FLAG if unsigned else 0))
        if attributes:
            out.append(0)  # no name: a length-encoded empty string
    out += payload[at + 1 :]
    return bytes(out)


# MariaDB reads statement id 0xFFFFFFFF as "the statement last prepared on this connection"
# (sql_prepare.cc, LAST_STMT_ID; used by libmariadb's mariadb_stmt_execute_direct and
# COM_STMT_BULK_EXECUTE).
LAST_STATEMENT_ID = 0xFFFFFFFF
# Statement-id commands carry the id in payload bytes 1-4 (COM_STMT_* in the protocol docs).
STATEMENT_ID_END = 5


def named_statement(payload: bytes, last_prepared: int | None) -> int | None:
    """The prepared statement a COM_STMT_* payload names (``last_prepared`` for
    LAST_STATEMENT_ID, when there is one), or None for a payload too short to name one."""
    if len(payload) < STATEMENT_ID_END:
        return None
    statement_id = int.from_bytes(payload[1:STATEMENT_ID_END], "little")
    if statement_id == LAST_STATEMENT_ID and last_prepared is not None:
        return last_prepared
    return statement_id


def decode_query_attributes(payload: bytes, capabilities: int) -> tuple[tuple[Param, ...], bytes]:
    """Split a COM_QUERY payload into its query attributes and its SQL text (bytes).

    Without CLIENT_QUERY_ATTRIBUTES there are no attributes and the SQL is ``payload[1:]``.
    """
    if not payload or payload[0] != COM_QUERY:
        raise ProtocolError("not a COM_QUERY packet")
    if not capabilities & CLIENT_QUERY_ATTRIBUTES:
        return (), copy_from(payload, 1)
    r = Reader(payload, 1)
    count = _read_count(r, "COM_QUERY")
    # "COM_QUERY": parameter_set_count, "Number of parameter sets. Currently always 1".
    sets = _lenenc(r, "COM_QUERY parameter_set_count")
    if sets != 1:
        raise ProtocolError(f"COM_QUERY parameter_set_count is {sets}; it is always 1")
    params: list[Param] = []
    if count:
        null_bitmap = _read_null_bitmap(r, count, "COM_QUERY")
        if r.uint(1) == 0:
            # There is no earlier binding to reuse (the server's ER_MALFORMED_PACKET).
            raise ProtocolError("COM_QUERY query attributes were sent without their types")
        types, names = _read_types(r, count, True, "COM_QUERY")
        for i, (ptype, unsigned) in enumerate(types):
            value: object = None
            if not null_bitmap[i >> 3] & (1 << (i & 7)):
                value = _read_value(r, ptype, unsigned, i, "COM_QUERY")
            params.append(Param(ptype, unsigned, value, names[i]))
    return tuple(params), copy_from(payload, r.pos)


def _lenenc(r: Reader, what: str) -> int:
    try:
        return r.lenenc_int()
    except ProtocolError as exc:
        raise ProtocolError(f"{what}: {exc}") from exc


def _read_count(r: Reader, command: str) -> int:
    count = _lenenc(r, f"{command} parameter_count")
    if count > MAX_PARAMETER_COUNT:
        raise ProtocolError(
            f"{command} parameter_count {count} is over the server's {MAX_PARAMETER_COUNT}"
        )
    return count


def _read_null_bitmap(r: Reader, count: int, command: str) -> bytes:
    size = (count + 7) // 8
    # One more byte for new_params_bound_flag, which always follows the bitmap.
    if r.remaining() < size + 1:
        raise ProtocolError(f"{command} ends inside the NULL bitmap of {count} parameters")
    return r.fixed(size)


def _read_types(
    r: Reader, count: int, named: bool, command: str
) -> tuple[list[tuple[int, bool]], list[str | None]]:
    types: list[tuple[int, bool]] = []
    names: list[str | None] = []
    for i in range(count):
        if r.remaining() < 2:
            raise ProtocolError(f"{command} ends inside the type of parameter {i}")
        ptype = r.uint(1)
        types.append((ptype, bool(r.uint(1) & UNSIGNED_FLAG)))
        name = None
        if named:
            try:
                raw = r.lenenc_str()
            except ProtocolError as exc:
                raise ProtocolError(f"{command} name of parameter {i}: {exc}") from exc
            # An empty name is no name (the server stores a null pointer). Names are in the
            # client's character set; one that is not UTF-8 is recorded with U+FFFD.
            name = raw.decode("utf-8", "replace") if raw else None
        names.append(name)
    return types, names


def _read_value(r: Reader, ptype: int, unsigned: bool, index: int, command: str) -> object:
    try:
        return _decode_value(r, ptype, unsigned)
    except ProtocolError as exc:
        raise ProtocolError(f"{command} parameter {index} ({type_name(ptype)}): {exc}") from exc


def _decode_value(r: Reader, ptype: int, unsigned: bool) -> object:
    width = _INT_WIDTHS.get(ptype)
    if width is not None:
        return int.from_bytes(r.fixed(width), "little", signed=not unsigned)
    fmt = _FLOAT_FORMATS.get(ptype)
    if fmt is not None:
        value: float = fmt.unpack(r.fixed(fmt.size))[0]
        return value
    if ptype in _DATE_TYPES:
        return _decode_datetime(ptype, r.lenenc_str())
    if ptype == MYSQL_TYPE_TIME:
        return _decode_time(r.lenenc_str())
    # DECIMAL travels as text; strings, blobs, JSON, BIT, ENUM, SET, GEOMETRY and any type
    # the server does not know as length-encoded bytes (get_ps_param_len's default).
    data = r.lenenc_str()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _decode_datetime(ptype: int, data: bytes) -> str:
    # The text depends on the value only, not on which length the client chose: a
    # fraction appears when there are microseconds, a "+HH:MM" when there is a time zone.
    n = len(data)
    if n not in _DATETIME_LENGTHS:
        raise ProtocolError(f"invalid length {n} for a {type_name(ptype)} value")
    fields = data[:7].ljust(7, b"\x00")
    year = fields[0] | fields[1] << 8
    text = f"{year:04d}-{fields[2]:02d}-{fields[3]:02d}"
    # The server reads only the date of a DATE, whatever else the client sent.
    if ptype == MYSQL_TYPE_DATE:
        return text
    text += f" {fields[4]:02d}:{fields[5]:02d}:{fields[6]:02d}"
    if micros := int.from_bytes(data[7:11], "little"):
        text += f".{micros:06d}"
    if n == 13:
        offset = int.from_bytes(data[11:13], "little", signed=True)
        sign = "-" if offset < 0 else "+"
        text += f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return text


def _decode_time(data: bytes) -> str:
    n = len(data)
    if n not in _TIME_LENGTHS:
        raise ProtocolError(f"invalid length {n} for a TIME value")
    if n == 0:
        return "00:00:00"
    sign = "-" if data[0] else ""
    hours = int.from_bytes(data[1:5], "little") * 24 + data[5]
    text = f"{sign}{hours:02d}:{data[6]:02d}:{data[7]:02d}"
    if micros := int.from_bytes(data[8:12], "little"):
        text += f".{micros:06d}"
    return text


# --- encoding ----------------------------------------------------------------------------


def encode_execute(
    statement_id: int, params: Sequence[Param], *, flags: int = 0, capabilities: int = 0
) -> bytes:
    """A complete COM_STMT_EXECUTE payload that binds ``params`` (new_params_bound_flag 1).

    ``capabilities`` must be the connection's: with CLIENT_QUERY_ATTRIBUTES the server
    expects ``parameter_count`` and a name per parameter, so this sets
    PARAMETER_COUNT_AVAILABLE and sends them.
    """
    if not 0 <= statement_id <= 0xFFFFFFFF:
        raise ValueError(f"statement id {statement_id} does not fit in 4 bytes")
    if not 0 <= flags <= 0xFF:
        raise ValueError(f"flags {flags} do not fit in a byte")
    attributes = bool(capabilities & CLIENT_QUERY_ATTRIBUTES)
    if attributes:
        flags |= PARAMETER_COUNT_AVAILABLE
    out = bytearray((COM_STMT_EXECUTE,))
    out += statement_id.to_bytes(4, "little")
    out.append(flags)
    out += b"\x01\x00\x00\x00"  # iteration_count: "Currently always 1"
    if attributes:
        out += lenenc_int(len(params))
    if params:
        out += _encode_bound(params, attributes, "COM_STMT_EXECUTE")
    return bytes(out)


def encode_query(sql: bytes, attributes: Sequence[Param] = (), *, capabilities: int) -> bytes:
    """A complete COM_QUERY payload, with query attributes if the connection has them."""
    if not capabilities & CLIENT_QUERY_ATTRIBUTES:
        if attributes:
            raise ValueError("query attributes need CLIENT_QUERY_ATTRIBUTES")
        return bytes((COM_QUERY,)) + sql
    out = bytearray((COM_QUERY,))
    out += lenenc_int(len(attributes))
    out += b"\x01"  # parameter_set_count
    if attributes:
        out += _encode_bound(attributes, True, "COM_QUERY")
    return bytes(out + sql)


def _encode_bound(params: Sequence[Param], named: bool, command: str) -> bytes:
    if len(params) > MAX_PARAMETER_COUNT:
        raise ValueError(f"{command} carries at most {MAX_PARAMETER_COUNT} parameters")
    bitmap = bytearray((len(params) + 7) // 8)
    types = bytearray()
    values = bytearray()
    for i, p in enumerate(params):
        if not 0 <= p.type <= 0xFF:
            raise ValueError(f"parameter {i}: type code {p.type} does not fit in a byte")
        types.append(p.type)
        types.append(UNSIGNED_FLAG if p.unsigned else 0)
        if named:
            types += lenenc_str(p.name.encode("utf-8") if p.name else b"")
        elif p.name is not None:
            raise ValueError(f"parameter {i} has a name, which needs CLIENT_QUERY_ATTRIBUTES")
        if p.value is None:
            bitmap[i >> 3] |= 1 << (i & 7)
        elif p.value is LONG_DATA:
            # Bound, with no bytes here: the server uses what COM_STMT_SEND_LONG_DATA sent
            # before this EXECUTE (a re-run sends those first).
            pass
        else:
            try:
                values += _encode_value(p)
            except ValueError as exc:
                raise ValueError(f"parameter {i} ({p.type_name}): {exc}") from exc
    return bytes(bitmap) + b"\x01" + bytes(types) + bytes(values)


def _encode_value(p: Param) -> bytes:
    ptype, value = p.type, p.value
    width = _INT_WIDTHS.get(ptype)
    if width is not None:
        if not isinstance(value, int):
            raise ValueError(f"expected an int, not {type(value).__name__}")
        try:
            return value.to_bytes(width, "little", signed=not p.unsigned)
        except OverflowError:
            kind = "unsigned" if p.unsigned else "signed"
            raise ValueError(f"{value} does not fit in {width} {kind} bytes") from None
    fmt = _FLOAT_FORMATS.get(ptype)
    if fmt is not None:
        if not isinstance(value, int | float):
            raise ValueError(f"expected a float, not {type(value).__name__}")
        try:
            return fmt.pack(value)
        except (OverflowError, struct.error) as exc:
            raise ValueError(str(exc)) from None
    if ptype in _DATE_TYPES:
        return _encode_datetime(ptype, value)
    if ptype == MYSQL_TYPE_TIME:
        return _encode_time(value)
    if isinstance(value, str):
        return lenenc_str(value.encode("utf-8"))
    if isinstance(value, bytes | bytearray | memoryview):
        return lenenc_str(bytes(value))
    raise ValueError(f"expected str or bytes, not {type(value).__name__}")


_DATETIME_TEXT = re.compile(
    r"(\d+)-(\d+)-(\d+)(?: (\d+):(\d+):(\d+)(?:\.(\d{1,6}))?)?(?:([+-])(\d+):(\d+))?",
    re.ASCII,
)
_TIME_TEXT = re.compile(r"(-)?(?:(\d+) )?(\d+):(\d+):(\d+)(?:\.(\d{1,6}))?", re.ASCII)


def _micros(fraction: str | None) -> int:
    # SQL text semantics: ".5" is half a second.
    return int(fraction.ljust(6, "0")) if fraction else 0


def _bytes_of(*fields: int) -> bytes:
    if any(not 0 <= f <= 0xFF for f in fields):
        raise ValueError("a date or time field does not fit in a byte")
    return bytes(fields)


def _encode_datetime(ptype: int, value: object) -> bytes:
    m = _DATETIME_TEXT.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"expected 'YYYY-MM-DD[ HH:MM:SS[.ffffff]]', not {value!r}")
    year = int(m[1])
    if year > 0xFFFF:
        raise ValueError(f"year {year} does not fit in 2 bytes")
    date = year.to_bytes(2, "little") + _bytes_of(int(m[2]), int(m[3]))
    time = _bytes_of(*(int(f) for f in m.group(4, 5, 6))) if m[4] else b"\x00\x00\x00"
    micros = _micros(m[7]).to_bytes(4, "little")
    # The shortest form that holds the value, as the server's store_datetime chooses it.
    if m[8] is not None:
        if m[4] is None:
            raise ValueError("a time zone needs a time of day")
        offset = int(m[9]) * 60 + int(m[10])
        if offset > 0x7FFF:
            raise ValueError(f"time zone displacement {m[8]}{m[9]}:{m[10]} is out of range")
        zone = (-offset if m[8] == "-" else offset).to_bytes(2, "little", signed=True)
        body = date + time + micros + zone
    elif any(micros):
        body = date + time + micros
    elif any(time):
        body = date + time
    elif any(date):
        body = date
    else:
        body = b""
    return bytes((len(body),)) + body


def _encode_time(value: object) -> bytes:
    m = _TIME_TEXT.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"expected '[-][D ]HH:MM:SS[.ffffff]', not {value!r}")
    hours = int(m[2] or 0) * 24 + int(m[3])
    days, hour = divmod(hours, 24)
    if days > 0xFFFFFFFF:
        raise ValueError(f"{hours} hours do not fit in a TIME value")
    body = bytes((1 if m[1] else 0,)) + days.to_bytes(4, "little")
    body += _bytes_of(hour, int(m[4]), int(m[5]))
    micros = _micros(m[6])
    if micros:
        body += micros.to_bytes(4, "little")
    elif not any(body):
        body = b""  # the zero time (store_time): a negative zero keeps its sign
    return bytes((len(body),)) + body
