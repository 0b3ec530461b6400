"""Masking rules, the strategies that rewrite a value, and the plan for one result set.

Pure (no I/O): ``MaskingPolicy.plan`` takes a result set's column definitions (wire/rows.py)
and says which columns are masked, by which rule and how; ``MaskingPlan.text_row`` and
``binary_row`` rewrite one row's cells. The gateway calls these only for result sets whose
plan masks something; every other result set passes byte for byte.

Columns are matched by their **physical** origin as the server reports it in the column
definition (schema, ``org_table``, ``org_name``), so ``SELECT email AS e`` stays masked. A
pattern is ``schema.table.column``, ``table.column`` or ``column``, each part a glob matched
case-insensitively (``*.email``, ``*ssn*``, ``shop.customers.card_*``); fewer parts match any
schema or table. A column the server reports no origin for (an expression: ``CONCAT(email,
'')``, ``UPPER(ssn)``) is matched by the name the client sees only for patterns that leave
schema and table open; tracing what feeds an expression is the statement analysis's job.

A masked value keeps its column's type (DESIGN.md; the masking issue): strings become the
strategy's text, numbers a number, dates a date, so clients that parse values by type keep
working; a type that cannot carry a stand-in (BIT, GEOMETRY) becomes NULL. A value that
cannot be read for masking (a charset hoopy cannot decode, a malformed number) raises
``MaskingError``: the gateway then ends the result with an ERR, never an unmasked value.
"""

from __future__ import annotations

import codecs
import enum
import fnmatch
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, cast

from mysql_mimic.charset import CharacterSet, Collation

from hoopy.audit.redact import Detector
from hoopy.policy.classifiers import MAX_CLASSIFIED_BYTES, classify
from hoopy.policy.lineage import Source, StatementLineage, lineage
from hoopy.sql.lexer import ServerVersion
from hoopy.wire import _rowmask
from hoopy.wire.packets import ProtocolError, Reader, lenenc_str
from hoopy.wire.params import (
    MYSQL_TYPE_BIT,
    MYSQL_TYPE_DATE,
    MYSQL_TYPE_DATETIME,
    MYSQL_TYPE_DECIMAL,
    MYSQL_TYPE_DOUBLE,
    MYSQL_TYPE_FLOAT,
    MYSQL_TYPE_GEOMETRY,
    MYSQL_TYPE_INT24,
    MYSQL_TYPE_JSON,
    MYSQL_TYPE_LONG,
    MYSQL_TYPE_LONGLONG,
    MYSQL_TYPE_NEWDATE,
    MYSQL_TYPE_NEWDECIMAL,
    MYSQL_TYPE_SHORT,
    MYSQL_TYPE_TIME,
    MYSQL_TYPE_TIMESTAMP,
    MYSQL_TYPE_TINY,
    MYSQL_TYPE_YEAR,
)
from hoopy.wire.rows import (
    ColumnDefinition,
    binary_encoding,
    binary_value,
    binary_widths,
    decode_binary_row,
    decode_column_definition,
    encode_binary_row,
    encode_column_definition,
    text_row_spans,
    with_room_for,
)

_TEXT_NULL_BYTE: Final = b"\xfb"


class MaskingError(Exception):
    """A value could not be masked: the result must end with an error instead."""


class Strategy(enum.Enum):
    REDACT = "redact"  # a fixed stand-in
    KEEP_LAST = "keep_last"  # all but the last N characters replaced
    HMAC = "hmac"  # a keyed hash: stable, so joins and GROUP BY on masked values still work
    NULL = "null"


DEFAULT_REPLACEMENT: Final = "****"
DEFAULT_KEEP: Final = 4
KEEP_FILL: Final = "*"
# Hex digits of the keyed hash shown (64 bits: collisions need ~4 billion distinct values).
HMAC_HEX_DIGITS: Final = 16
HMAC_PREFIX: Final = "h:"

# --- what a column's type can carry -------------------------------------------------------

_INTEGERS: Final = {
    MYSQL_TYPE_TINY: 8,
    MYSQL_TYPE_SHORT: 16,
    MYSQL_TYPE_INT24: 24,
    MYSQL_TYPE_LONG: 32,
    MYSQL_TYPE_LONGLONG: 64,
    MYSQL_TYPE_YEAR: 16,
}
_FLOATS: Final = frozenset({MYSQL_TYPE_FLOAT, MYSQL_TYPE_DOUBLE})
_DECIMALS: Final = frozenset({MYSQL_TYPE_DECIMAL, MYSQL_TYPE_NEWDECIMAL})
_DATES: Final = frozenset({MYSQL_TYPE_DATE, MYSQL_TYPE_NEWDATE})
_DATETIMES: Final = frozenset({MYSQL_TYPE_DATETIME, MYSQL_TYPE_TIMESTAMP})
# Types whose values no stand-in can imitate (bit strings, WKB geometry): masked to NULL.
_NULL_ONLY: Final = frozenset({MYSQL_TYPE_BIT, MYSQL_TYPE_GEOMETRY})

# Python codecs for the character sets a result can be sent in (character_set_results).
_CODECS: Final = {
    "utf8mb4": "utf-8",
    "utf8": "utf-8",
    "latin1": "cp1252",  # MySQL's latin1 is Windows-1252
    "ascii": "ascii",
    "latin2": "iso8859-2",
    "latin5": "iso8859-9",
    "latin7": "iso8859-13",
    "greek": "iso8859-7",
    "hebrew": "iso8859-8",
    "cp1250": "cp1250",
    "cp1251": "cp1251",
    "cp1256": "cp1256",
    "cp1257": "cp1257",
    "cp850": "cp850",
    "cp852": "cp852",
    "cp866": "cp866",
    "koi8r": "koi8-r",
    "koi8u": "koi8-u",
    "macroman": "mac-roman",
    "tis620": "tis-620",
    "big5": "big5",
    "sjis": "shift_jis",
    "cp932": "cp932",
    "gbk": "gbk",
    "gb2312": "gb2312",
    "gb18030": "gb18030",
    "euckr": "euc-kr",
    "ujis": "euc-jp",
    "eucjpms": "euc-jp",
    "ucs2": "utf-16-be",
    "utf16": "utf-16-be",
    "utf16le": "utf-16-le",
    "utf32": "utf-32-be",
}
BINARY_CHARSET: Final = 63
# MySQL's latin1 is Windows-1252 with the five bytes that code page leaves undefined (0x81,
# 0x8D, 0x8F, 0x90, 0x9D) read as the C1 controls of the same number, as ISO-8859-1 reads
# them (strings/ctype-latin1.c): Python's cp1252 refuses those, so this handler maps them.
_LATIN1_ERRORS: Final = "hoopy-mysql-latin1"


def _latin1_errors(exc: UnicodeError) -> tuple[str | bytes, int]:
    if isinstance(exc, UnicodeDecodeError):
        return "".join(chr(b) for b in exc.object[exc.start : exc.end]), exc.end
    if isinstance(exc, UnicodeEncodeError):
        chars = exc.object[exc.start : exc.end]
        if all(ord(c) in (0x81, 0x8D, 0x8F, 0x90, 0x9D) for c in chars):
            return bytes(ord(c) for c in chars), exc.end
    raise exc


codecs.register_error(_LATIN1_ERRORS, _latin1_errors)


def _errors(codec: str) -> str:
    return _LATIN1_ERRORS if codec == "cp1252" else "strict"


@functools.lru_cache(maxsize=64)
def _hmac_pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 states after the HMAC inner and outer pads of ``key`` (RFC 2104): each value
    then costs two copies instead of two fresh hashes of the pads (measured 0.8 against 2.1
    µs per value)."""
    block = hashlib.sha256(key).digest() if len(key) > 64 else key
    block = block.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    return inner, outer


@functools.lru_cache(maxsize=512)
def codec_of(collation_id: int) -> str | None:
    """The Python codec of a column's collation id; None for binary. Raises MaskingError for
    a character set hoopy cannot decode (masking fails closed)."""
    if collation_id == BINARY_CHARSET:
        return None
    try:
        name = CharacterSet(Collation(collation_id).charset).name
    except ValueError:
        raise MaskingError(f"unknown collation {collation_id}") from None
    codec = _CODECS.get(name)
    if codec is None:
        raise MaskingError(f"character set {name} cannot be masked")
    return codec


# --- patterns -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColumnPattern:
    """``schema.table.column`` with globs; None parts match anything."""

    schema: str | None
    table: str | None
    column: str

    @classmethod
    def parse(cls, text: str) -> ColumnPattern:
        parts = text.split(".")
        if not 1 <= len(parts) <= 3 or any(not p for p in parts):
            raise ValueError(
                f"column pattern {text!r} must be column, table.column or schema.table.column"
            )
        parts = [p.lower() for p in parts]
        if len(parts) == 1:
            return cls(None, None, parts[0])
        if len(parts) == 2:
            return cls(None, parts[0], parts[1])
        return cls(parts[0], parts[1], parts[2])

    @property
    def open_origin(self) -> bool:
        """Whether the pattern leaves schema and table open (so it may match a name alone)."""
        return self.schema in (None, "*") and self.table in (None, "*")

    def matches(self, schema: str, table: str, column: str) -> bool:
        return (
            fnmatch.fnmatchcase(column, self.column)
            and (self.table is None or fnmatch.fnmatchcase(table, self.table))
            and (self.schema is None or fnmatch.fnmatchcase(schema, self.schema))
        )

    def matches_source(self, schema: str | None, table: str, column: str) -> bool:
        """``matches`` for a source whose schema may be unknown (None: then any schema), or
        whose column is ``*`` (every column of its table: then any column)."""
        return (
            (column == "*" or fnmatch.fnmatchcase(column, self.column))
            and (self.table is None or fnmatch.fnmatchcase(table, self.table))
            and (schema is None or self.schema is None or fnmatch.fnmatchcase(schema, self.schema))
        )

    def __str__(self) -> str:
        return ".".join(p for p in (self.schema, self.table, self.column) if p is not None)


def _name(data: bytes) -> str:
    # Identifiers come in character_set_results; utf-8 covers the names rules can write.
    return data.decode("utf-8", "replace").lower()


# --- strategies ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Masker:
    """How a rule rewrites a value (``key`` for HMAC)."""

    strategy: Strategy
    replacement: str = DEFAULT_REPLACEMENT
    keep: int = DEFAULT_KEEP
    key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.strategy is Strategy.HMAC and not self.key:
            raise ValueError("the hmac strategy needs a key")
        if self.keep < 0:
            raise ValueError("keep must be 0 or more")

    def nullable(self, column: ColumnDefinition) -> bool:
        return self.strategy is Strategy.NULL or column.type in _NULL_ONLY

    def _digest(self, data: bytes) -> bytes:
        """HMAC-SHA256(key, data) (RFC 2104), from the key's pads hashed once."""
        assert self.key is not None
        inner, outer = _hmac_pads(self.key)
        i = inner.copy()
        i.update(data)
        o = outer.copy()
        o.update(i.digest())
        digest: bytes = o.digest()
        return digest

    # The value as text (strings in the column's charset, numbers and dates as their text
    # form), masked; None for NULL. The protocols' codecs convert to and from this form.

    def mask_text(self, column: ColumnDefinition, value: bytes) -> bytes | None:
        if self.nullable(column):
            return None
        ctype = column.type
        if ctype in _INTEGERS or ctype in _FLOATS or ctype in _DECIMALS:
            return self._number(column, value)
        if ctype in _DATES or ctype in _DATETIMES or ctype == MYSQL_TYPE_TIME:
            return self._temporal(column, value)
        return self._string(column, value)

    def _string(self, column: ColumnDefinition, value: bytes) -> bytes:
        codec = codec_of(column.charset)
        if self.strategy is Strategy.HMAC:
            text = HMAC_PREFIX + self._digest(value).hex()[:HMAC_HEX_DIGITS]
        elif self.strategy is Strategy.KEEP_LAST:
            if codec is None:
                kept = value[-self.keep :] if self.keep else b""
                return KEEP_FILL.encode() * (len(value) - len(kept)) + kept
            try:
                decoded = value.decode(codec, _errors(codec))
            except UnicodeDecodeError:
                raise MaskingError(f"a value of column {_name(column.name)!r} is not valid "
                                   f"{codec}") from None  # fmt: skip
            kept_text = decoded[-self.keep :] if self.keep else ""
            text = KEEP_FILL * (len(decoded) - len(kept_text)) + kept_text
        else:
            text = self.replacement
        if column.type == MYSQL_TYPE_JSON:
            text = json.dumps(text)  # a JSON column holds JSON: a string document
        try:
            return text.encode(codec or "utf-8", _errors(codec or "utf-8"))
        except UnicodeEncodeError:
            raise MaskingError(
                f"the stand-in for column {_name(column.name)!r} cannot be written in {codec}"
            ) from None

    def _number(self, column: ColumnDefinition, value: bytes) -> bytes:
        ctype = column.type
        try:
            text = value.decode("ascii")
            Decimal(text)  # only a number is masked as one
        except (UnicodeDecodeError, InvalidOperation):
            raise MaskingError(f"column {_name(column.name)!r} holds a malformed number") from None
        if self.strategy is Strategy.KEEP_LAST:
            digits = [i for i, ch in enumerate(text) if ch.isdigit()]
            hidden = set(digits[: max(len(digits) - self.keep, 0)])
            return "".join("0" if i in hidden else ch for i, ch in enumerate(text)).encode()
        if self.strategy is Strategy.HMAC:
            bits = _INTEGERS.get(ctype, 32)
            unsigned = column.unsigned or ctype == MYSQL_TYPE_YEAR
            # A non-negative value that fits the type (31 bits for a signed INT...).
            limit = 1 << (bits - (0 if unsigned else 1))
            if ctype == MYSQL_TYPE_YEAR:
                stand_in = 1901 + int.from_bytes(self._digest(value)[:8], "big") % 255
                return str(stand_in).encode()
            if ctype in _DECIMALS:
                whole = max(column.length - column.decimals - 2, 1)
                limit = 10 ** min(whole, 18)
            stand_in = int.from_bytes(self._digest(value)[:8], "big") % limit
            if ctype in _DECIMALS and column.decimals:
                return f"{stand_in}.{'0' * column.decimals}".encode()
            return str(stand_in).encode()
        if ctype in _DECIMALS and column.decimals:
            return f"0.{'0' * column.decimals}".encode()
        if ctype == MYSQL_TYPE_YEAR:
            return b"0000"
        return b"0"

    def _temporal(self, column: ColumnDefinition, value: bytes) -> bytes:
        ctype = column.type
        if self.strategy is Strategy.HMAC:
            days = int.from_bytes(self._digest(value)[:8], "big") % 24_837  # 1970 .. 2037
            if ctype == MYSQL_TYPE_TIME:
                seconds = days % 86_400
                h, rest = divmod(seconds, 3600)
                return f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}".encode()
            from datetime import date, timedelta

            day = (date(1970, 1, 1) + timedelta(days=days)).isoformat()
            return (day if ctype in _DATES else f"{day} 00:00:00").encode()
        if ctype == MYSQL_TYPE_TIME:
            return b"00:00:00"
        return b"1970-01-01" if ctype in _DATES else b"1970-01-01 00:00:00"

    def loop_form(self, column: ColumnDefinition) -> tuple[int, object]:
        """How the compiled row loop (wire/_rowmask.py) masks a text value of ``column``:
        the strategies a result streams most (a keyed hash or a fixed stand-in for a string
        column, NULL) with the column's decisions made once, the others (``VALUE``) by
        ``mask_text``. Each gives what ``mask_text`` gives, and raises what it raises
        (tests/wire/test_rowmask.py checks both for every strategy, type and charset)."""
        general: tuple[int, object] = (_rowmask.VALUE, functools.partial(self.mask_text, column))
        if self.nullable(column):
            return _rowmask.NULL, None
        ctype = column.type
        if ctype in _RAW_BINARY or ctype in _DECIMALS or ctype == MYSQL_TYPE_JSON:
            return general
        try:
            codec = codec_of(column.charset)
        except MaskingError:
            return general  # raises the same error for the first value
        if self.strategy is Strategy.REDACT:
            try:
                return _rowmask.CONSTANT, self._string(column, b"")
            except MaskingError:
                return general
        if self.strategy is Strategy.HMAC and codec not in _WIDE_CODECS:
            # The stand-in is ASCII, which every other codec hoopy writes encodes as itself.
            assert self.key is not None
            inner, outer = _hmac_pads(self.key)
            return _rowmask.HMAC, (inner, outer, HMAC_PREFIX.encode(), HMAC_HEX_DIGITS // 2)
        return general

    def text_function(self, column: ColumnDefinition) -> Callable[[bytes], bytes | None]:
        """``loop_form`` as a function of the value (what the loop computes, for tests)."""
        kind, arg = self.loop_form(column)
        if kind == _rowmask.VALUE:
            return cast(Callable[[bytes], bytes | None], arg)
        return functools.partial(_rowmask._masked, kind, arg) if kind == _rowmask.HMAC else (
            lambda value: cast(bytes | None, arg)
        )

    def room(self, column: ColumnDefinition) -> int:
        """The most bytes a stand-in for ``column`` takes (for its column length)."""
        if self.strategy is Strategy.HMAC:
            return len(HMAC_PREFIX) + HMAC_HEX_DIGITS + 2
        if self.strategy is Strategy.REDACT:
            return len(self.replacement.encode("utf-8")) * 4 + 2
        return 0  # keep_last writes no more than it read (one fill byte per character)


_WIDE_CODECS: Final = frozenset({"utf-16-be", "utf-16-le", "utf-32-be"})


# --- rules, policy, plan ------------------------------------------------------------------


class Probe(enum.Enum):
    """What a statement may do with a masked column outside its output (WHERE, JOIN ... ON,
    GROUP BY, HAVING, ORDER BY), where a value can be found by probing (``WHERE email LIKE
    'a%'``) without ever being returned."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class MaskingRule:
    """``columns`` says which columns the rule covers; with ``classifiers`` it masks a value
    of those only when a classifier finds something in it (policy/classifiers.py)."""

    name: str  # "set/rule"
    columns: tuple[ColumnPattern, ...]
    masker: Masker
    probe: Probe = Probe.ALLOW
    classifiers: tuple[Detector, ...] = ()

    @property
    def classifying(self) -> bool:
        return bool(self.classifiers)

    def matches_source(self, source: Source, database: str | None) -> bool:
        schema = source.schema or database
        return any(p.matches_source(schema, source.table, source.column) for p in self.columns)

    @property
    def covers_all(self) -> bool:
        """Whether the rule's patterns cover every column (``*``), expressions included."""
        return any(p.column == "*" and p.open_origin for p in self.columns)

    def may_name_table(self, word: str) -> bool:
        """Whether ``word`` could be a table (or schema) this rule covers columns of: a
        statement hoopy cannot trace that names one may read them through a ``*``."""
        return any(
            p.table is None
            or fnmatch.fnmatchcase(word, p.table)
            or (p.schema is not None and fnmatch.fnmatchcase(word, p.schema))
            for p in self.columns
        )

    def may_name(self, word: str) -> bool:
        """Whether ``word`` could be the column part of a column this rule masks."""
        return any(fnmatch.fnmatchcase(word, p.column) for p in self.columns)

    def matches(self, column: ColumnDefinition) -> bool:
        if column.org_name:
            schema, table = _name(column.schema), _name(column.org_table)
            name = _name(column.org_name)
            return any(p.matches(schema, table, name) for p in self.columns)
        alias = _name(column.name)
        return any(p.open_origin and p.matches("", "", alias) for p in self.columns)


@dataclass(frozen=True, slots=True)
class MaskingSet:
    """``[masking.NAME]``: rules in order (config/masking.py)."""

    name: str
    rules: tuple[MaskingRule, ...]


@dataclass(frozen=True, slots=True)
class MaskedColumn:
    """A masked column: every value by ``masker`` (``rule``), or, when ``classified`` is
    set, each value the first of those rules whose classifiers find something in it."""

    index: int
    rule: str
    masker: Masker
    classified: tuple[MaskingRule, ...] = ()


@dataclass(frozen=True, slots=True)
class RowRewriter:
    """A plan in the form the compiled row loop takes (wire/_rowmask.py ``mask_rows``): per
    column, the index of how it is masked (-1: not masked) and, for binary rows, its width;
    per masked column, how (``kinds``, ``args``) and the rule whose count it adds to."""

    slots: list[int]
    widths: list[int]
    kinds: list[int]
    args: list[object]
    rules: tuple[str, ...]


# Rows that pass unchanged (re-framed only): no column is looked at.
UNMASKED: Final = RowRewriter([], [], [], [], ())


@dataclass(frozen=True, slots=True)
class MaskingPlan:
    """The masked columns of one result set, and its column definitions as rewritten."""

    columns: tuple[ColumnDefinition, ...]
    masked: tuple[MaskedColumn, ...]
    definitions: tuple[bytes, ...]  # the column definition payloads the client gets
    _rewriters: dict[bool, RowRewriter | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def rewriter(self, binary: bool) -> RowRewriter | None:
        """The plan for the compiled row loop (made once per plan); None when a column is
        masked by classifiers (its rows take ``text_row``/``binary_row``)."""
        if binary in self._rewriters:
            return self._rewriters[binary]
        rewriter: RowRewriter | None = None
        if not any(m.classified for m in self.masked):
            slots = [-1] * len(self.columns)
            kinds: list[int] = []
            args: list[object] = []
            for m in self.masked:
                column = self.columns[m.index]
                slots[m.index] = len(kinds)
                arg: object
                if binary and column.type in _RAW_BINARY and not m.masker.nullable(column):
                    kind, arg = _rowmask.CELL, functools.partial(_mask_binary, m.masker, column)
                else:
                    kind, arg = m.masker.loop_form(column)
                kinds.append(kind)
                args.append(arg)
            widths = binary_widths(self.types) if binary else []
            rules = tuple(m.rule for m in self.masked)
            rewriter = RowRewriter(slots, widths, kinds, args, rules)
        self._rewriters[binary] = rewriter
        return rewriter

    @property
    def rules(self) -> dict[str, list[str]]:
        """Masked column names by rule (for the audit: names, never values)."""
        out: dict[str, list[str]] = {}
        for m in self.masked:
            c = self.columns[m.index]
            for name in [r.name for r in m.classified] or [m.rule]:
                out.setdefault(name, []).append(_name(c.name))
        return out

    def text_row(self, payload: bytes) -> tuple[bytes, dict[str, int]]:
        """A text row with its masked cells rewritten, and how many values each rule
        masked (NULLs stay NULL and are not counted). Raises MaskingError.

        Only the masked cells are re-encoded; the bytes around them are copied."""
        try:
            spans = text_row_spans(payload, len(self.columns))
        except ProtocolError as exc:
            raise MaskingError(str(exc)) from None
        counts: dict[str, int] = {}
        parts: list[bytes] = []
        copied = 0
        for m in self.masked:
            start, value_start, end = spans[m.index]
            if value_start < 0:
                continue  # NULL stays NULL
            cell = payload[value_start:end]
            column = self.columns[m.index]
            if m.classified:
                rule = _classified_by(m.classified, column, cell)
                if rule is None:
                    continue
                new = rule.masker.mask_text(column, cell)
                name = rule.name
            else:
                new = m.masker.mask_text(column, cell)
                name = m.rule
            counts[name] = counts.get(name, 0) + 1
            parts.append(payload[copied:start])
            parts.append(_TEXT_NULL_BYTE if new is None else lenenc_str(new))
            copied = end
        if not parts:
            return payload, counts
        parts.append(payload[copied:])
        return b"".join(parts), counts

    def binary_row(self, payload: bytes) -> tuple[bytes, dict[str, int]]:
        """``text_row`` for a binary-protocol row."""
        try:
            cells = decode_binary_row(payload, self.types)
        except ProtocolError as exc:
            raise MaskingError(str(exc)) from None
        counts: dict[str, int] = {}
        for m in self.masked:
            cell = cells[m.index]
            if cell is None:
                continue
            column = self.columns[m.index]
            if m.classified:
                try:
                    data = Reader(cell).lenenc_str()  # classified columns are strings
                except ProtocolError as exc:
                    raise MaskingError(str(exc)) from None
                rule = _classified_by(m.classified, column, data)
                if rule is None:
                    continue
                masked = rule.masker.mask_text(column, data)
                cells[m.index] = None if masked is None else lenenc_str(masked)
                counts[rule.name] = counts.get(rule.name, 0) + 1
                continue
            cells[m.index] = _mask_binary(m.masker, column, cell)
            counts[m.rule] = counts.get(m.rule, 0) + 1
        return encode_binary_row(cells), counts

    @property
    def types(self) -> list[int]:
        return [c.type for c in self.columns]


# Types whose values content classifiers read (text and blobs; numbers and dates are not).
_CLASSIFIED_TYPES: Final = frozenset(
    {
        0x0F,  # VARCHAR
        0xF5,  # JSON
        0xF7,  # ENUM
        0xF8,  # SET
        0xF9,  # TINY_BLOB
        0xFA,  # MEDIUM_BLOB
        0xFB,  # LONG_BLOB
        0xFC,  # BLOB
        0xFD,  # VAR_STRING
        0xFE,  # STRING
    }
)


def _classified_by(
    rules: Sequence[MaskingRule], column: ColumnDefinition, value: bytes
) -> MaskingRule | None:
    """The first rule whose classifiers find something in ``value``. A value too long to
    scan counts as found by the first rule (fail closed)."""
    if len(value) > MAX_CLASSIFIED_BYTES:
        return rules[0]
    codec = codec_of(column.charset) or "utf-8"
    text = value.decode(codec, "replace")  # for reading only: what is masked is the bytes
    for rule in rules:
        if classify(text, rule.classifiers) is not None:
            return rule
    return None


# Types whose binary-protocol values are not length-prefixed strings (numbers, dates, times).
_RAW_BINARY: Final = frozenset({*_INTEGERS, *_FLOATS, *_DATES, *_DATETIMES, MYSQL_TYPE_TIME})


def _mask_binary(masker: Masker, column: ColumnDefinition, cell: bytes) -> bytes | None:
    """A binary cell masked through its text form, re-encoded in the column's type."""
    ctype = column.type
    try:
        if ctype in _RAW_BINARY:
            value = binary_value(ctype, column.unsigned, cell)
            text = repr(value) if isinstance(value, float) else str(value)
            masked = masker.mask_text(column, text.encode())
            if masked is None:
                return None
            out: object = masked.decode()
            if ctype in _INTEGERS:
                out = int(masked)
            elif ctype in _FLOATS:
                out = float(masked)
            return binary_encoding(ctype, column.unsigned, out)
        # Strings, decimals, JSON, ENUM, SET: length-encoded bytes.
        r = Reader(cell)
        data = r.lenenc_str()
    except (ProtocolError, ValueError) as exc:
        raise MaskingError(f"column {_name(column.name)!r}: {exc}") from None
    masked = masker.mask_text(column, data)
    return None if masked is None else lenenc_str(masked)


def result_lineage(
    lineages: Sequence[StatementLineage], result: int
) -> StatementLineage | None:
    """What feeds the ``result``-th result of a command whose statements have ``lineages``
    (results line up with statements, one each, until a CALL or something opaque, after
    which nothing is known); None when it cannot be traced."""
    for earlier in lineages[:result]:
        if earlier.calls or earlier.opaque:
            return None
    if result < len(lineages):
        lin = lineages[result]
        return None if lin.calls or lin.opaque or lin.unknown else lin
    return None


# character_set_results values that are not ASCII-compatible, and the words that set them.
_WIDE_CHARSETS = (b"ucs2", b"utf16", b"utf32")
_CHARSET_WORDS = (b"names", b"character_set_results", b"charset", b"character set")
_PLAN_CACHE = 4096
_LINEAGE_CACHE = 4096
_LINEAGE_MAX_TEXT = 16 * 1024
_WORD = re.compile(rb"[A-Za-z0-9_$\x80-\xff]+")


@dataclass(frozen=True, slots=True)
class MaskingRefusal:
    """A statement masking does not let run, and why (the client gets the message)."""

    rule: str
    message: str


@dataclass(frozen=True)
class MaskingPolicy:
    """The masking rules that apply to one session (its role's sets for its target), first
    matching rule per column."""

    rules: tuple[MaskingRule, ...]
    _cache: dict[Any, MaskingPlan | None] = field(default_factory=dict, compare=False, repr=False)
    _lineages: dict[Any, tuple[StatementLineage, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    # --- before the statement runs --------------------------------------------------------

    def trace(
        self, text: bytes, server: ServerVersion | None, *, multibyte: bool
    ) -> tuple[StatementLineage, ...]:
        """The statement's lineage (policy/lineage.py), cached by text."""
        if len(text) > _LINEAGE_MAX_TEXT:
            return lineage(text, server, multibyte=multibyte)
        key = (bytes(text), server, multibyte)
        found = self._lineages.get(key)
        if found is None:
            found = lineage(text, server, multibyte=multibyte)
            if len(self._lineages) >= _LINEAGE_CACHE:
                del self._lineages[next(iter(self._lineages))]
            self._lineages[key] = found
        return found

    def rule_for(self, sources: Iterable[Source], database: str | None) -> MaskingRule | None:
        """The first rule masking any of ``sources`` by column (classifying rules mask by
        content, not by column: they do not count here)."""
        sources = tuple(sources)
        for rule in self.rules:
            if rule.classifying:
                continue
            if any(rule.matches_source(s, database) for s in sources):
                return rule
        return None

    def classified(self, text: str) -> bool:
        """Whether a classifying rule finds something in ``text`` (an error message)."""
        return any(r.classifying and classify(text, r.classifiers) for r in self.rules)

    def touches(self, lin: StatementLineage | None, database: str | None) -> bool:
        """Whether the statement may read a masked column (its errors and warnings may then
        quote masked values): a source some rule masks, or a ``*`` over a table a rule's
        pattern covers. Unknown lineage counts as touching."""
        if lin is None or lin.unknown is not None:
            return True
        if self.rule_for(lin.every_source, database) is not None:
            return True
        if any(o.star for o in lin.outputs):
            for schema, table in lin.tables:
                s = schema or database
                for rule in self.rules:
                    if any(
                        (p.table is None or fnmatch.fnmatchcase(table, p.table))
                        and (p.schema is None or s is None or fnmatch.fnmatchcase(s, p.schema))
                        for p in rule.columns
                    ):
                        return True
        return False

    def refusal(
        self,
        text: bytes,
        lineages: Sequence[StatementLineage],
        database: str | None,
        *,
        diagnostics_masked: bool = False,
    ) -> MaskingRefusal | None:
        """Why the statement must not run, or None: a masked column would flow somewhere
        masking cannot follow (a table, a user variable, a file), a rule forbids probing
        it, or what feeds the result cannot be traced in a text that names a column some
        rule masks."""
        low = bytes(text).lower()
        if any(c in low for c in _WIDE_CHARSETS) and any(k in low for k in _CHARSET_WORDS):
            # Column names would come in a character set hoopy does not read them in.
            return MaskingRefusal(
                "masking/charset",
                "results in ucs2, utf16 or utf32 cannot be masked (column definitions would "
                "name the columns in it), so the statement was not run",
            )
        for lin in lineages:
            if lin.get_diagnostics and diagnostics_masked:
                return MaskingRefusal(
                    "masking/diagnostics",
                    "GET DIAGNOSTICS would copy the messages of a statement that read masked "
                    "columns (they can quote its values) into variables, so it was not run",
                )
            if lin.dynamic:
                return MaskingRefusal(
                    "masking/dynamic_sql",
                    "SQL-level PREPARE and EXECUTE run a text hoopy cannot trace for masking, "
                    "so it was not run (use your client's prepared statements instead)",
                )
            if lin.opaque:
                return MaskingRefusal(
                    "masking/untraceable",
                    f"{lin.opaque} cannot be run in a session that masks, so it was not run",
                )
            if lin.calls:
                return MaskingRefusal(
                    "masking/call",
                    "a stored procedure's results cannot be traced for masking, so CALL was "
                    "not run",
                )
            if lin.unknown is not None:
                words = {w.decode("utf-8", "replace").lower() for w in _WORD.findall(text)}
                named = next(
                    (
                        r
                        for r in self.rules
                        if not r.classifying
                        for w in words
                        if r.may_name(w) or r.may_name_table(w)
                    ),
                    None,
                )
                if named is not None:
                    return MaskingRefusal(
                        named.name,
                        f"{lin.unknown}, and it may read a column masking rule {named.name} "
                        "covers, so it was not run",
                    )
                continue
            writer = self.rule_for(lin.writes, database)
            if writer is not None:
                return MaskingRefusal(
                    writer.name,
                    f"this statement copies a column masking rule {writer.name} covers into a "
                    "table, a user variable or a file, where masking could not follow it, so "
                    "it was not run",
                )
            for rule in self.rules:
                if rule.probe is Probe.DENY and any(
                    rule.matches_source(s, database) for s in lin.filters
                ):
                    return MaskingRefusal(
                        rule.name,
                        f"masking rule {rule.name} does not allow its columns in WHERE, JOIN, "
                        "GROUP BY, HAVING or ORDER BY (probe = \"deny\"), so it was not run",
                    )
        return None

    # --- on the result ----------------------------------------------------------------------

    def plan(
        self,
        definitions: Sequence[bytes],
        *,
        extended_metadata: bool = False,
        lineage: StatementLineage | None = None,
        database: str | None = None,
    ) -> MaskingPlan | None:
        """The plan for a result set with these column definition payloads; None when no
        column is masked. ``lineage``: what the statement's text says feeds each column
        (None: the definitions alone decide). Raises ProtocolError for a malformed
        definition."""
        key = (tuple(definitions), lineage, database)
        if key in self._cache:
            return self._cache[key]
        columns = tuple(
            decode_column_definition(d, extended_metadata=extended_metadata) for d in definitions
        )
        fed = _fed_by(columns, lineage) if lineage is not None else None
        masked = []
        rewritten = list(definitions)
        for i, column in enumerate(columns):
            sources = fed[i] if fed is not None else frozenset()
            rule = next(
                (
                    r
                    for r in self.rules
                    if not r.classifying
                    and (r.matches(column) or any(r.matches_source(s, database) for s in sources))
                ),
                None,
            )
            classified: tuple[MaskingRule, ...] = ()
            if rule is None and column.type in _CLASSIFIED_TYPES:
                classified = tuple(
                    r
                    for r in self.rules
                    if r.classifying
                    and (r.matches(column) or any(r.matches_source(s, database) for s in sources)
                         or r.covers_all)
                )  # fmt: skip
                rule = classified[0] if classified else None
            if rule is None:
                continue
            masked.append(MaskedColumn(i, rule.name, rule.masker, classified))
            for r in classified or (rule,):
                column_room = with_room_for(
                    column, length=r.masker.room(column), nullable=r.masker.nullable(column)
                )
                if column_room is not column:
                    column = column_room
                    rewritten[i] = encode_column_definition(column)
        plan = MaskingPlan(columns, tuple(masked), tuple(rewritten)) if masked else None
        if len(self._cache) >= _PLAN_CACHE:
            del self._cache[next(iter(self._cache))]
        self._cache[key] = plan
        return plan


def _fed_by(
    columns: Sequence[ColumnDefinition], lin: StatementLineage
) -> list[frozenset[Source]]:
    """Per result column, the sources that can feed it: from the lineage's output at its
    position (outputs before the first ``*`` line up from the start, those after the last
    from the end; between stars every source of the statement), and from the origin its
    definition reports, followed through a derived table or CTE of that name."""
    n = len(columns)
    outputs = lin.outputs
    every = frozenset(s for o in outputs for s in o.sources) | frozenset(
        s for _, outs in lin.derived for o in outs for s in o.sources
    )
    by_position: list[frozenset[Source] | None] = [None] * n
    stars = [i for i, o in enumerate(outputs) if o.star]
    if not stars:
        if len(outputs) == n:
            by_position = [o.sources for o in outputs]
    else:
        head = outputs[: stars[0]]
        tail = outputs[stars[-1] + 1 :]
        if len(head) + len(tail) <= n:
            for i, o in enumerate(head):
                by_position[i] = o.sources
            for j, o in enumerate(tail):
                by_position[n - len(tail) + j] = o.sources
    fed: list[frozenset[Source]] = []
    for i, column in enumerate(columns):
        sources = set(by_position[i] or ())
        if column.org_name:
            table, name = _name(column.org_table), _name(column.org_name)
            through = lin.derived_output(table, name) if table else None
            if through is not None:
                sources |= through.sources
            elif table:
                sources.add(Source(_name(column.schema) or None, table, name))
            else:
                # A UNION reports the name but no table: it may come from any table or
                # derived table of the statement.
                sources.update(Source(schema, t, name) for schema, t in lin.tables)
                for derived, _ in lin.derived:
                    found = lin.derived_output(derived, name)
                    if found is not None:
                        sources |= found.sources
        elif by_position[i] is None:
            sources |= every  # an expression hoopy cannot line up: anything it reads
        fed.append(frozenset(sources))
    return fed


# SHOW WARNINGS / SHOW ERRORS after a statement that read masked columns: their messages can
# quote its values ("Truncated incorrect INTEGER value: 'alice@example.com'").
HIDDEN_MESSAGE = "<hidden by hoopy: the statement read masked columns>"
DIAGNOSTICS = MaskingPolicy(
    (
        MaskingRule(
            "masking/diagnostics",
            (ColumnPattern.parse("message"),),
            Masker(Strategy.REDACT, replacement=HIDDEN_MESSAGE),
        ),
    )
)
