"""Where a statement carries credentials, read from its tokens (MySQL 8/9 and MariaDB).

``find_credentials(data, server)`` returns the byte spans of the literals that are (or may be)
credentials, and whether the statement is *credential-bearing*: it uses credential syntax at
all, so that the parameters of a prepared statement with that text are credentials too
(``SELECT PASSWORD(?)``, ``UPDATE app_users SET password = ?``).

The syntaxes, and what is redacted (every literal: strings, hex, bit and numbers):

- ``IDENTIFIED ...`` (``CREATE USER``, ``ALTER USER``, ``GRANT ... IDENTIFIED BY`` of MariaDB
  and old MySQL, MySQL's ``CLONE INSTANCE ... IDENTIFIED BY``): every literal from
  ``IDENTIFIED`` to the end of that account's clause (a ``,`` outside parentheses, or the
  clauses that follow: ``REQUIRE``, ``WITH``, ``PASSWORD EXPIRE|HISTORY|REUSE|REQUIRE``,
  ``ACCOUNT``, ``COMMENT``, ``ATTRIBUTE``, ``DEFAULT ROLE``, ``FAILED_LOGIN_ATTEMPTS``,
  ``PASSWORD_LOCK_TIME``), except the plugin named after ``WITH``, ``VIA`` or ``OR``. That
  covers ``BY 'pw'``, ``BY PASSWORD 'hash'``, ``WITH plugin BY|AS '...'``, MariaDB's
  ``VIA plugin USING|AS '...' OR plugin2 ...``, MySQL's multi-factor ``AND IDENTIFIED ...``
  and ``REPLACE 'current password'``; ``BY RANDOM PASSWORD`` has no literal.
- ``SET PASSWORD [FOR user] = ...`` / ``TO ...``: every literal after the ``=``.
- ``PASSWORD(...)``, ``OLD_PASSWORD(...)``, ``ENCRYPT(...)`` and
  ``VALIDATE_PASSWORD_STRENGTH(...)`` anywhere: every literal inside the parentheses.
- Key material: ``AES_ENCRYPT``, ``AES_DECRYPT``, ``DES_ENCRYPT``, ``DES_DECRYPT``,
  ``ENCODE``, ``DECODE``: every literal after the first argument (key, init vector, KDF
  salt and options).
- ``PASSWORD``, or any name ending in ``_PASSWORD`` (``MASTER_PASSWORD`` and
  ``SOURCE_PASSWORD`` of ``CHANGE MASTER`` / ``CHANGE REPLICATION SOURCE``, ``START SLAVE |
  REPLICA | GROUP_REPLICATION ... PASSWORD = ...``, ``CREATE | ALTER SERVER ... OPTIONS
  (PASSWORD '...')``, ``@db_password := ...``, a column named ``password``), followed by an
  optional ``=`` or ``:=`` and a literal or ``?``.
- ``CONNECTION = '...'`` (FEDERATED, CONNECT and Spider tables: the URL carries a password)
  and MySQL's ``CHALLENGE_RESPONSE AS '...'``.
- SQL inside a string or hex literal (``PREPARE s FROM '...'``, ``SET @s = '...'``, MariaDB's
  ``EXECUTE IMMEDIATE '...'``): a literal whose value mentions a credential keyword is read
  as SQL itself (to ``MAX_NESTING`` levels); if that is credential-bearing, the literal is
  replaced by its redacted text, and every other literal of the statement is redacted as
  well, since the text may be assembled from pieces (``CONCAT('... IDENTIFIED BY ',
  '''pw''')``).

Every syntax is looked for under every reading of ``readings_for`` (backslash escapes on and
off, ``"`` as a string and as an identifier, executable comments and hints as code and as
comments, and as the server runs them), and the spans of all readings are combined, so no
reading of the text leaves a credential visible. A statement that has both credential syntax
and an executable comment or hint has every literal redacted: which comments run is a fact
of the server that a mixture of them could exploit.

Not covered (documented in docs/security.md): a secret moved through a user variable set by
an expression that is not a literal mentioning a keyword (``SET @p = CONCAT(...)`` followed
by ``EXECUTE s USING @p``); a password in a free-form string (a ``COMMENT``, a Spider table's
``COMMENT 'password "..."'``); hash functions (``SHA2('pw', 256)``, which also hash ordinary
data).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hoopy.sql.lexer import (
    COMMENT,
    EXEC_CLOSE,
    EXEC_OPEN,
    HEX,
    LITERALS,
    PARAM,
    PUNCT,
    STRING,
    WORD,
    Reading,
    ServerVersion,
    Token,
    readings_for,
    slices,
    string_value,
    tokenize,
)

CREDENTIAL = "credential"
# Strings inside strings: PREPARE FROM '...' holds SQL; that SQL may hold another level
# (EXECUTE IMMEDIATE 'PREPARE s FROM ''...'''); deeper is redacted whole.
MAX_NESTING = 3

_PASSWORD_FUNCTIONS = frozenset(
    (b"PASSWORD", b"OLD_PASSWORD", b"ENCRYPT", b"VALIDATE_PASSWORD_STRENGTH")
)
_KEY_FUNCTIONS = frozenset(
    (b"AES_ENCRYPT", b"AES_DECRYPT", b"DES_ENCRYPT", b"DES_DECRYPT", b"ENCODE", b"DECODE")
)
# Clauses that follow an account's authentication in CREATE / ALTER USER and GRANT.
_IDENTIFIED_ENDS = frozenset(
    (
        b"REQUIRE",
        b"WITH",
        b"ACCOUNT",
        b"COMMENT",
        b"ATTRIBUTE",
        b"DEFAULT",
        b"FAILED_LOGIN_ATTEMPTS",
        b"PASSWORD_LOCK_TIME",
    )
)
_PASSWORD_OPTIONS = frozenset((b"EXPIRE", b"HISTORY", b"REUSE", b"REQUIRE", b"LOCK"))
# Lower-case keywords whose presence in a string literal makes it worth reading as SQL.
_NESTED_TRIGGERS = (
    b"identified",
    b"password",
    b"aes_",
    b"des_",
    b"encode",
    b"decode",
    b"encrypt",
    b"connection",
    b"challenge_response",
)
# Statements whose literals may be SQL for a later PREPARE (or hold it themselves).
_SQL_HOLDERS = frozenset((b"PREPARE", b"EXECUTE", b"SET"))
_LONGEST_TRIGGER = max(len(t) for t in _NESTED_TRIGGERS)
# A short statement is scanned once for all of them: nine substring tests cost 0.3 us each
# there (the search's set-up), the alternation 0.9 us in all (on lower-cased bytes: a case-
# insensitive pattern is four times slower). Per byte the alternation is slower (32 ms per
# MiB against 9 for the nine tests), so longer text gets the substring tests.
_TRIGGER = re.compile(b"|".join(re.escape(t) for t in _NESTED_TRIGGERS))
_SHORT = 1024  # where the two cost the same: about 900 bytes
SHORT = _SHORT


@dataclass(frozen=True, slots=True)
class Span:
    """A byte range to replace: by ``replacement`` (a literal's redacted SQL, already
    quoted) if given, else by the marker of ``kind``."""

    start: int
    end: int
    kind: str = CREDENTIAL
    replacement: bytes | None = None
    closed: bool = True  # the literal had its closing quote


@dataclass(frozen=True, slots=True)
class Findings:
    bearing: bool  # credential syntax was found (prepared parameters are credentials)
    spans: tuple[Span, ...] = ()  # sorted by start, not overlapping
    kinds: frozenset[str] = field(default_factory=frozenset)


# A literal's second look, by the audit's detectors: the kind found, or None.
LiteralCheck = Callable[[bytes, Token, Reading], "str | None"]


def find_credentials(
    data: bytes,
    server: ServerVersion | None = None,
    *,
    check_literal: LiteralCheck | None = None,
    depth: int = 0,
    mentions_credentials: bool | None = None,
    multibyte: bool = False,
) -> Findings:
    """The credential literals of ``data`` (one or several statements) under every reading.

    ``check_literal`` is called for each literal of each reading (the audit's pattern
    detectors), so that a caller needs one lexing pass per reading for both; the spans it
    names carry its kind. ``mentions_credentials``: ``may_carry_credentials(data)``, if
    the caller knows it already. ``multibyte``: the client character set may be one of
    ``lexer.MULTIBYTE_CHARSETS`` (its readings are added).
    """
    spans: list[Span] = []
    bearing = False
    analyse = may_carry_credentials(data) if mentions_credentials is None else mentions_credentials
    if not analyse and check_literal is None:
        return Findings(False)
    for reading in readings_for(data, server, multibyte=multibyte):
        found, reading_spans = _one_reading(data, reading, server, check_literal, depth, analyse)
        bearing = bearing or found
        spans.extend(reading_spans)
    merged = _merge(spans)
    return Findings(bearing, tuple(merged), frozenset(s.kind for s in merged))


def _one_reading(
    data: bytes,
    reading: Reading,
    server: ServerVersion | None,
    check_literal: LiteralCheck | None,
    depth: int,
    analyse: bool,
) -> tuple[bool, list[Span]]:
    """``analyse``: look for credential syntax (else only let ``check_literal`` look)."""
    spans: list[Span] = []
    bearing = False
    statement: list[Token] = []
    commented = False  # the statement has an executable comment or a hint
    for token in tokenize(data, reading, literals_only=not analyse):
        kind = token.kind
        if kind is COMMENT:
            continue
        if kind is EXEC_OPEN or kind is EXEC_CLOSE:
            commented = True
            continue
        if not analyse:
            if check_literal is not None and kind in LITERALS:
                detected = check_literal(data, token, reading)
                if detected is not None:
                    spans.append(Span(token.start, token.end, detected, None, token.closed))
            continue
        if kind is PUNCT and data[token.start] == 59:  # ";" ends a statement
            found = _statement(data, statement, reading, server, commented, depth, spans)
            bearing = bearing or found
            statement = []
            commented = False
            continue
        if check_literal is not None and kind in LITERALS:
            detected = check_literal(data, token, reading)
            if detected is not None:
                spans.append(Span(token.start, token.end, detected, None, token.closed))
        statement.append(token)
    if analyse and statement:
        found = _statement(data, statement, reading, server, commented, depth, spans)
        bearing = bearing or found
    return bearing, spans


def _word(data: bytes, tokens: Sequence[Token], i: int) -> bytes | None:
    if 0 <= i < len(tokens) and tokens[i].kind is WORD:
        return bytes(data[tokens[i].start : tokens[i].end]).upper()
    return None


def _is_punct(data: bytes, tokens: Sequence[Token], i: int, char: int) -> bool:
    return 0 <= i < len(tokens) and tokens[i].kind is PUNCT and data[tokens[i].start] == char


def _literal_after(data: bytes, tokens: Sequence[Token], i: int) -> int | None:
    """The index of the literal (or ``?``) at ``i``, past a charset introducer."""
    if i < len(tokens) and tokens[i].kind is WORD and data[tokens[i].start] == 95:  # "_"
        i += 1
    if i < len(tokens) and (tokens[i].kind in LITERALS or tokens[i].kind is PARAM):
        return i
    return None


def _closing(data: bytes, tokens: Sequence[Token], open_at: int) -> int:
    """The index of the ``)`` matching the ``(`` at ``open_at`` (or the end)."""
    depth = 0
    for i in range(open_at, len(tokens)):
        if tokens[i].kind is PUNCT:
            c = data[tokens[i].start]
            if c == 40:
                depth += 1
            elif c == 41:
                depth -= 1
                if depth == 0:
                    return i
    return len(tokens)


def _statement(
    data: bytes,
    tokens: list[Token],
    reading: Reading,
    server: ServerVersion | None,
    commented: bool,
    depth: int,
    spans: list[Span],
) -> bool:
    """Add the credential spans of one statement; True if it is credential-bearing."""
    marked: set[int] = set()  # indexes of the literals to redact
    bearing = False
    n = len(tokens)
    first, second = _word(data, tokens, 0), _word(data, tokens, 1)
    if first == b"SET" and second == b"PASSWORD":
        bearing = True
        for i in range(2, n):
            if _is_punct(data, tokens, i, 61) or _word(data, tokens, i) == b"TO":  # "="
                marked.update(j for j in range(i + 1, n) if tokens[j].kind in LITERALS)
                break
    i = 0
    while i < n:
        word = _word(data, tokens, i)
        if word is None:
            i += 1
            continue
        if word == b"IDENTIFIED":
            bearing = True
            i = _identified(data, tokens, i, marked)
            continue
        if (word in _PASSWORD_FUNCTIONS or word in _KEY_FUNCTIONS) and _is_punct(
            data, tokens, i + 1, 40
        ):  # a function call: NAME (
            bearing = True
            close = _closing(data, tokens, i + 1)
            start = i + 2
            if word in _KEY_FUNCTIONS:  # from the second argument on
                start = _after_first_argument(data, tokens, i + 1, close)
            literals = [j for j in range(start, close) if tokens[j].kind in LITERALS]
            if literals:
                # From the first literal of the arguments to the last, replaced as one: each
                # may be the secret or a piece of it (CONCAT('a', 'b'), UNHEX('...')).
                spans.append(Span(tokens[literals[0]].start, tokens[literals[-1]].end))
            i = close
            continue
        if (
            (word == b"PASSWORD" or word.endswith(b"_PASSWORD") or word == b"CONNECTION")
            and (j := _assigned_literal(data, tokens, i + 1)) is not None
        ) or (
            word == b"CHALLENGE_RESPONSE"
            and _word(data, tokens, i + 1) == b"AS"
            and (j := _literal_after(data, tokens, i + 2)) is not None
        ):
            bearing = True
            if tokens[j].kind is not PARAM:
                marked.add(j)
        i += 1
    # SQL in strings: in statements that can hand text to PREPARE (PREPARE, EXECUTE
    # IMMEDIATE, SET @s, anything that assigns a user variable: "@").
    assembled = False
    read_as_sql: set[int] = set()  # literals whose SQL was looked at: not redacted whole
    holds_sql = first in _SQL_HOLDERS or any(
        t.kind is PUNCT and data[t.start] == 64 for t in tokens
    )
    for j, token in enumerate(tokens if holds_sql else ()):
        if j in marked or (value := _sql_value(data, token, reading)) is None:
            continue
        if not may_carry_credentials(value):
            continue
        if depth + 1 >= MAX_NESTING:
            inner = Findings(True, (Span(0, len(value)),))
        else:
            inner = find_credentials(value, server, depth=depth + 1)
        if not inner.bearing:
            continue
        bearing = assembled = True
        read_as_sql.add(j)
        if inner.spans:
            replacement = _requote(_apply(value, inner.spans))
            spans.append(Span(token.start, token.end, CREDENTIAL, replacement))
    if bearing and (assembled or commented):
        # Assembled from pieces, or read differently by comments that may or may not run:
        # every literal is a credential.
        marked.update(j for j, t in enumerate(tokens) if t.kind in LITERALS)
    for j in sorted(marked - read_as_sql):
        spans.append(Span(tokens[j].start, tokens[j].end))
    return bearing


def _identified(data: bytes, tokens: list[Token], i: int, marked: set[int]) -> int:
    """Mark the literals of the authentication clause starting at ``IDENTIFIED`` (index
    ``i``); return where the scan goes on."""
    n = len(tokens)
    j = i + 1
    plugin_next = _word(data, tokens, j) in (b"WITH", b"VIA")
    if plugin_next:
        j += 2  # WITH/VIA and the plugin's name
    depth = 0
    while j < n:
        token = tokens[j]
        if token.kind is PUNCT:
            c = data[token.start]
            if c == 40:
                depth += 1
            elif c == 41:
                depth -= 1
            elif c == 44 and depth <= 0:  # "," : the next account
                return j + 1
        elif token.kind is WORD and depth <= 0:
            word = bytes(data[token.start : token.end]).upper()
            if word in _IDENTIFIED_ENDS:
                return j
            if word == b"PASSWORD" and _word(data, tokens, j + 1) in _PASSWORD_OPTIONS:
                return j
            if word == b"OR":  # MariaDB: IDENTIFIED VIA a USING '...' OR b ...
                j += 2
                continue
            if word == b"IDENTIFIED":  # MySQL multi-factor: AND IDENTIFIED ...
                return j
        elif token.kind in LITERALS:
            marked.add(j)
        j += 1
    return j


def _after_first_argument(data: bytes, tokens: Sequence[Token], open_at: int, close: int) -> int:
    depth = 0
    for i in range(open_at, close):
        if tokens[i].kind is PUNCT:
            c = data[tokens[i].start]
            if c == 40:
                depth += 1
            elif c == 41:
                depth -= 1
            elif c == 44 and depth == 1:
                return i + 1
    return close


def _assigned_literal(data: bytes, tokens: Sequence[Token], i: int) -> int | None:
    """``[=|:=] literal`` at ``i``: the literal's index."""
    if _is_punct(data, tokens, i, 58) and _is_punct(data, tokens, i + 1, 61):  # ":="
        i += 2
    elif _is_punct(data, tokens, i, 61):
        i += 1
    return _literal_after(data, tokens, i)


def may_carry_credentials(data: bytes) -> bool:
    """Whether ``data`` mentions a credential keyword at all (when not, ``find_credentials``
    finds nothing): the cheap test that spares most statements the lexer.

    A keyword is one token, never split by a comment; inside a string literal a backslash
    may split it (``'IDENT\\IFIED'`` is ``IDENTIFIED``), so backslashes are ignored.
    """
    # A keyword across a slice boundary, with a backslash in every gap.
    return any(mentions_trigger(piece) for piece in slices(data, _LONGEST_TRIGGER * 2))


def mentions_trigger(chunk: bytes) -> bool:
    """Whether one slice of text (at most ``SCAN_STEP`` bytes) mentions a credential keyword:
    ``may_carry_credentials`` for text that short."""
    if b"\\" in chunk:
        chunk = chunk.replace(b"\\", b"")
    chunk = chunk.lower()
    if len(chunk) <= _SHORT:
        return _TRIGGER.search(chunk) is not None
    for trigger in _NESTED_TRIGGERS:  # noqa: SIM110 (no generator per chunk)
        if trigger in chunk:
            return True
    return False


def _sql_value(data: bytes, token: Token, reading: Reading) -> bytes | None:
    """What a string or hex literal holds, as text that may be SQL (PREPARE FROM x'...')."""
    if token.kind is STRING:
        return string_value(data, token, reading)
    if token.kind is HEX:
        body = data[token.body_start : token.body_end]
        if body[:2] in (b"0x", b"0X"):
            body = body[2:]
        try:
            return bytes.fromhex(body.decode("ascii"))
        except ValueError:
            return None
    return None


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted, overlaps joined. A joined span is a credential if any part is, and keeps a
    replacement text only if every part agrees on it (otherwise readings disagree on the
    literal, or a detector found something in it: it is redacted whole)."""
    if not spans:
        return []
    spans.sort(key=lambda s: (s.start, -s.end))
    out = [spans[0]]
    for span in spans[1:]:
        last = out[-1]
        if span.start >= last.end:
            out.append(span)
        elif span != last:
            same = span.start == last.start and span.end == last.end
            kind = CREDENTIAL if CREDENTIAL in (last.kind, span.kind) else last.kind
            keep = last.replacement if same and last.replacement == span.replacement else None
            out[-1] = Span(last.start, max(last.end, span.end), kind, keep)
    return out


def marker(kind: str) -> bytes:
    return b"'<redacted:" + kind.encode("ascii") + b">'"


def _apply(value: bytes, spans: Sequence[Span]) -> bytes:
    pieces: list[bytes] = []
    done = 0
    for span in spans:
        pieces += (value[done : span.start], span.replacement or marker(span.kind))
        done = span.end
    pieces.append(value[done:])
    return b"".join(pieces)


def _requote(sql: bytes) -> bytes:
    """A string literal whose value is ``sql`` in the default sql_mode (and, its backslashes
    doubled, a harmless one under NO_BACKSLASH_ESCAPES)."""
    return b"'" + sql.replace(b"\\", b"\\\\").replace(b"'", b"''") + b"'"
