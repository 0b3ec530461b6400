"""A MySQL/MariaDB tokenizer over the bytes of a statement, reading it as the server does.

Sans-IO and pure. ``tokenize(data, reading)`` yields ``Token`` tuples: words (keywords and
unquoted identifiers), numbers, strings, hex and bit literals, quoted identifiers, ``?``
placeholders, single-byte punctuation, comments, and the opening and closing of executable
comments. Each token carries its byte span; literals also the span of their body (between
the quotes, undecoded: ``string_value`` decodes it under the reading's rules).

It follows the server's lexer (``lex_one_token`` in MySQL's and MariaDB's ``sql/sql_lex.cc``;
MySQL 8.4 reference manual 11.1 "Literal Values", 11.2 "Schema Object Names" and 11.7
"Comments"):

- Comments: ``#`` and ``-- `` (two dashes and a space or control character) to the end of
  the line, where a NUL byte also ends them, as in the server's loop; ``/* */`` does not
  nest. An unterminated comment runs to the end of the text (the server rejects it).
- Executable comments. ``/*!`` without a version, and ``/*!NNNNN`` with a version the server
  has reached, are code: their content is tokenized like the rest (a ``*/`` inside a string
  there does not end them) until the first ``*/``; a ``/* */`` inside one is a comment. A
  version comment the server has not reached is a comment that may hold one level of
  ``/* */``. The version is five digits; MySQL 8.1 and later also read six digits followed by
  whitespace ("Are you ready for MySQL 10?", MySQL blog, 2023); MariaDB reads five or six
  digits, also after ``/*M!``, which MySQL takes for an ordinary comment, and ignores MySQL's
  ``/*!50700`` to ``/*!99999`` comments (MariaDB knowledge base, "Comment Syntax", and its
  ``sql_lex.cc``). Optimizer hints ``/*+ */`` are comments to the statement's grammar.
- Strings ``'...'`` and ``"..."`` with doubled quotes and, unless ``NO_BACKSLASH_ESCAPES``,
  backslash escapes; ``N'...'``; under ``ANSI_QUOTES`` ``"..."`` is an identifier (doubled
  quotes, no escapes). A charset introducer (``_utf8mb4'...'``) is a word before a string.
  Backquoted identifiers double their backquote.

What the reading cannot know from the text (the ``sql_mode`` quoting, whether a comment runs
on this server) is a ``Reading``: callers that must not be fooled lex under several readings
(``readings_for``) and combine the results: a check refuses if any reading shows what it
refuses, a redaction redacts what any reading shows to be sensitive.

Cost: linear in the input and cheap per byte. Each token is one regular-expression match;
the body of a literal or a comment is skipped with ``bytes.find`` (memchr speed), falling back
to a bounded regular-expression step only over runs of escapes or doubled quotes, so a 64 MiB
literal costs milliseconds and no single call into C holds the interpreter for long. A text
of many tiny tokens costs about a microsecond per token.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

# Token kinds (plain strings: compared by identity in hot loops).
WORD = "word"  # keyword or unquoted identifier, also a charset introducer such as _utf8mb4
NUMBER = "number"  # 12, 1.5, .5e3
STRING = "string"  # '...', "..." (without ANSI_QUOTES), N'...'
HEX = "hex"  # X'4142', 0x4142
BIT = "bit"  # B'0101', 0b0101
QIDENT = "qident"  # `...`, and "..." under ANSI_QUOTES
PARAM = "param"  # ? (a placeholder in a prepared statement)
PUNCT = "punct"  # any other single byte: ; ( ) , = @ . * ...
COMMENT = "comment"  # a comment, or an executable comment that does not run
EXEC_OPEN = "exec_open"  # /*!, /*!NNNNN, /*M!NNNNNN or /*+ read as code
EXEC_CLOSE = "exec_close"  # the */ that ends it

LITERALS = frozenset((STRING, NUMBER, HEX, BIT))
_NOT_CODE = frozenset((COMMENT, EXEC_OPEN, EXEC_CLOSE))


class Token(NamedTuple):
    kind: str
    start: int
    end: int
    body_start: int  # literals and quoted identifiers: between the quotes; else start
    body_end: int  # else end
    closed: bool  # literal, identifier or comment terminated (False: ran to the end)

    def text(self, data: bytes) -> bytes:
        return data[self.start : self.end]


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """The target's flavour and version, as ``MYSQL_VERSION_ID`` (8.0.36 is 80036, MariaDB
    10.11.6 is 101106): what the executable comments' version numbers compare against."""

    mariadb: bool
    version: int

    @classmethod
    def from_greeting(cls, server_version: bytes) -> ServerVersion | None:
        """From the greeting's version string: ``8.0.36``, ``5.5.5-10.11.6-MariaDB-log``
        (MariaDB prefixes 5.5.5- for old clients), ``11.4.2-MariaDB``. None if unreadable."""
        mariadb = b"mariadb" in server_version.lower()
        text = server_version
        if mariadb and text.startswith(b"5.5.5-"):
            text = text[len(b"5.5.5-") :]
        m = _VERSION.match(text)
        if m is None:
            return None
        major, minor, patch = (int(g) for g in m.groups())
        if minor > 99 or patch > 99:
            return None
        return cls(mariadb, major * 10000 + minor * 100 + patch)


_VERSION = re.compile(rb"(\d{1,2})\.(\d{1,2})\.(\d{1,2})")
# MySQL 8.1 reads six-digit version comments.
MYSQL_SIX_DIGIT_VERSIONS = 80100


class Executable(enum.Enum):
    """How executable comments and optimizer hints are read."""

    SERVER = "server"  # as the reading's server would; as CODE when it is unknown
    CODE = "code"  # every /*!, /*M! and /*+ comment is code
    COMMENT = "comment"  # none is


@dataclass(frozen=True, slots=True)
class Reading:
    """The facts the text alone does not tell."""

    backslash_escapes: bool = True  # False under sql_mode NO_BACKSLASH_ESCAPES
    ansi_quotes: bool = False  # sql_mode ANSI_QUOTES: "..." is an identifier
    executable: Executable = Executable.SERVER
    server: ServerVersion | None = None
    # The client character set family whose two-byte characters are read as one (MULTIBYTE
    # below: "gbk", "big5", "sjis"), or None for a byte-wise reading.
    multibyte: str | None = None


# Client character sets in which the second byte of a character can be a backslash, a
# backquote or other punctuation (0x40-0x7E): the server reads the pair as one character, a
# byte-wise reading does not. (ucs2, utf16 and utf32 cannot be client character sets.)
MULTIBYTE_CHARSETS = frozenset(("big5", "sjis", "cp932", "gbk", "gb18030"))
# Their two-byte characters, (lead byte, trail byte), per family (MySQL's strings/ctype-gbk.c,
# ctype-big5.c, ctype-sjis.c and ctype-cp932.c; gb18030's two-byte form is gbk's).
MULTIBYTE = {
    "gbk": re.compile(rb"[\x81-\xfe][\x40-\x7e\x80-\xfe]"),
    "big5": re.compile(rb"[\xa1-\xf9][\x40-\x7e\xa1-\xfe]"),
    "sjis": re.compile(rb"[\x81-\x9f\xe0-\xfc][\x40-\x7e\x80-\xfc]"),
}


def masked(data: bytes, family: str) -> bytes:
    """``data`` with each two-byte character of ``family`` having its trail byte replaced
    by 0x80 (an identifier byte here): same offsets, and no byte of a character reads as a
    quote, a backslash or punctuation. Tokens' spans index the original bytes too."""
    return MULTIBYTE[family].sub(lambda m: m.group(0)[:1] + b"\x80", data)


def readings_for(
    data: bytes, server: ServerVersion | None = None, *, multibyte: bool = False
) -> tuple[Reading, ...]:
    """The readings under which ``data`` may differ, for callers that must not be fooled.

    The session's ``sql_mode`` is not tracked: a client can change it at any time (``SET``,
    a stored procedure's saved mode, the server's default) and ``ANSI_QUOTES`` shows in no
    status flag, and a backslash may be the second byte of a multi-byte character in client
    charsets such as GBK or SJIS. So the quoting readings that can differ are all returned:
    backslash escapes on and off, and ``"`` as an identifier (which, lexed like a string
    without escapes, only adds a reading when backslashes stay escapes). Executable comments
    are read as code, as comments, and as ``server`` runs them; read as code, a six-digit
    version is also split both ways (MariaDB reads six digits, MySQL before 8.1 five), so
    a greeting that misstates the server does not decide where the code starts.
    ``multibyte``: the session's client character set is, or may be, one of
    ``MULTIBYTE_CHARSETS``; a text with non-ASCII bytes is then also read as each of their
    families reads it. Only readings that can differ for these bytes are returned (most
    statements have one).
    """
    has_exec = contains(data, b"/*") and (
        contains(data, b"/*!") or contains(data, b"/*M!") or contains(data, b"/*+")
    )
    six = has_exec and search(_SIX_DIGIT_VERSION, data, 10)
    readings = _readings(contains(data, b"\\"), contains(data, b'"'), has_exec, server, six)
    if not multibyte or data.isascii():
        return readings
    # Masked, a backslash or double quote may vanish; the byte-wise readings keep theirs.
    return readings + tuple(
        replace(r, multibyte=family) for family in MULTIBYTE for r in readings
    )


_SIX_DIGIT_VERSION = re.compile(rb"/\*M?![0-9]{6}")
# Read as code, a server that takes five digits (MySQL 8.0) and one that takes six.
_FIVE_DIGITS = ServerVersion(False, 80000)
_SIX_DIGITS = ServerVersion(True, 999999)


# Scans of a whole statement go at most this many bytes per call into C: a huge statement is
# read in a worker thread (gateway/offload.py), and one search over 20 MiB holds the
# interpreter lock, so the event loop and every other session, for 20 ms or more.
SCAN_STEP = 256 * 1024


def slices(data: bytes, overlap: int) -> Iterator[bytes]:
    """``data`` in ``SCAN_STEP`` slices, each running ``overlap`` bytes into the next (so
    that a match of up to ``overlap + 1`` bytes lies whole in one of them)."""
    if len(data) <= SCAN_STEP:
        yield data
        return
    for start in range(0, len(data), SCAN_STEP):
        yield data[start : start + SCAN_STEP + overlap]


def contains(data: bytes, needle: bytes) -> bool:
    """``needle in data``, ``SCAN_STEP`` bytes per call."""
    if len(data) <= SCAN_STEP:
        return needle in data
    return any(
        data.find(needle, start, start + SCAN_STEP + len(needle) - 1) >= 0
        for start in range(0, len(data), SCAN_STEP)
    )


def search(pattern: re.Pattern[bytes], data: bytes, longest: int) -> bool:
    """Whether ``pattern`` (whose matches are at most ``longest`` bytes) occurs in ``data``,
    ``SCAN_STEP`` bytes per call."""
    if len(data) <= SCAN_STEP:
        return pattern.search(data) is not None
    return any(
        pattern.search(data, start, start + SCAN_STEP + longest) is not None
        for start in range(0, len(data), SCAN_STEP)
    )


@functools.lru_cache(maxsize=64)
def _readings(
    has_backslash: bool,
    has_dquote: bool,
    has_exec: bool,
    server: ServerVersion | None,
    six_digits: bool = False,
) -> tuple[Reading, ...]:
    quotings = [(True, False)]
    if has_backslash:
        quotings.append((False, False))
        if has_dquote:
            quotings.append((True, True))
    executables = [Executable.CODE]
    if has_exec:
        executables.append(Executable.COMMENT)
        if server is not None:
            executables.append(Executable.SERVER)
    readings = [
        Reading(backslash, ansi, executable, server)
        for executable in executables
        for backslash, ansi in quotings
    ]
    if six_digits:
        for split in (_FIVE_DIGITS, _SIX_DIGITS):
            readings += [
                Reading(backslash, ansi, Executable.CODE, split) for backslash, ansi in quotings
            ]
    return tuple(dict.fromkeys(readings))


# -- the tokenizer ---------------------------------------------------------------------------

_IDENT_CHARS = rb"0-9A-Za-z_$\x80-\xff"
_TOKEN = re.compile(
    # MySQL's whitespace (my_isspace): space, \t, \n, \v, \f, \r.
    rb"[ \t\n\x0b\x0c\r]*+(?:"
    rb"(?P<line>\#|--(?=[\x00-\x20\x7f]|\Z))"
    rb"|(?P<block>/\*)"
    rb"|(?P<close>\*/)"
    rb"|(?P<xstr>[xX]')"
    rb"|(?P<bstr>[bB]')"
    rb"|(?P<nstr>[nN]')"
    rb"|(?P<squote>')"
    rb'|(?P<dquote>")'
    rb"|(?P<bquote>`)"
    rb"|(?P<number>(?:[0-9]++(?:\.[0-9]*+)?|\.[0-9]++)(?:[eE][-+]?[0-9]++)?)"
    rb"(?![" + _IDENT_CHARS + rb"])"
    rb"|(?P<word>[" + _IDENT_CHARS + rb"]++)"
    rb"|(?P<param>\?)"
    rb"|(?P<punct>.)"
    rb"|(?P<end>\Z))",
    re.DOTALL,
)
# For callers that only look at literals: words not followed by a quote (an introducer or
# N'...' must still be seen) and punctuation that starts nothing are skipped inside the
# regular-expression engine, so a statement costs a Python step per literal, not per token.
# A repeated group that must not give back is written as an atomic group, (?>(?:...)*),
# never as a possessive repeat (?:...)*+: before 3.11.5 (Debian 12 ships 3.11.2) CPython
# matched possessive repeats of a group that backtracks inside wrongly (gh-106052,
# gh-100061). Possessive repeats of a single character class are not affected.
_BORING = (
    rb"(?>(?:[ \t\n\x0b\x0c\r]++|[A-Za-z_$\x80-\xff][" + _IDENT_CHARS + rb"]*+(?!')"
    rb"|[(),;=<>+!%&|^~.@?:{}\[\]]++)*)"
)
_LITERALS_TOKEN = re.compile(_BORING + _TOKEN.pattern, re.DOTALL)
_HEX_WORD = re.compile(rb"0x[0-9A-Fa-f]++")
_BIT_WORD = re.compile(rb"0b[01]++")
_DIGITS = frozenset(b"0123456789")
_SPACE = frozenset(b" \t\n\x0b\x0c\r")

# Over runs of escapes or doubled quotes the body is stepped by a regular expression, at most
# this many bytes per call (about half a millisecond): bounded time holding the interpreter.
BODY_STEP = 64 * 1024
_BODY = {
    (quote, backslash): re.compile(
        (rb"(?>(?:[^" + q + rb"\\]++|\\.|" + q + q + rb")*)")
        if backslash
        else (rb"(?>(?:[^" + q + rb"]++|" + q + q + rb")*)"),
        re.DOTALL,
    )
    for quote, q in ((b"'"[0], b"'"), (b'"'[0], b'"'), (b"`"[0], b"`"))
    for backslash in (True, False)
}


def _body_step(data: bytes, pos: int, quote: int, backslash: bool) -> int:
    """Past a run of ordinary bytes, escapes and doubled quotes: at most ``BODY_STEP``."""
    m = _BODY[quote, backslash].match(data, pos, min(len(data), pos + BODY_STEP))
    assert m is not None  # the pattern matches the empty string
    return m.end()


def _skip_quoted(data: bytes, pos: int, quote: int, backslash: bool) -> tuple[int, bool]:
    """From just after an opening quote: (the end of the literal, whether it is closed)."""
    n = len(data)
    q = bytes((quote,))
    while True:
        j = data.find(q, pos)
        stop = n if j < 0 else j
        if backslash:
            k = data.find(b"\\", pos, stop)
            if k >= 0:
                if k + 1 >= n:
                    return n, False
                pos = _body_step(data, k + 2, quote, True)
                continue
        if j < 0:
            return n, False
        if j + 1 < n and data[j + 1] == quote:  # a doubled quote
            pos = _body_step(data, j + 2, quote, backslash)
            continue
        return j + 1, True


def _comment_end(data: bytes, pos: int, nested: bool) -> tuple[int, bool]:
    """From just after ``/*``: the end of the comment. ``nested``: a version comment that does
    not run may contain ``/* */`` comments (``consume_comment(lip, 1)`` in sql_lex.cc)."""
    while True:
        close = data.find(b"*/", pos)
        if close < 0:
            return len(data), False
        if nested:
            # "/*/" opens a nested comment: the opener may share the close's "*".
            opener = data.find(b"/*", pos, close + 1)
            if opener >= 0:
                inner = data.find(b"*/", opener + 2)
                if inner < 0:
                    return len(data), False
                pos = inner + 2
                continue
        return close + 2, True


def _line_end(data: bytes, pos: int) -> int:
    newline = data.find(b"\n", pos)
    nul = data.find(b"\x00", pos, len(data) if newline < 0 else newline)
    if nul >= 0:
        return nul
    return len(data) if newline < 0 else newline


def _version_comment(
    data: bytes, pos: int, mariadb_syntax: bool, reading: Reading
) -> tuple[int, bool]:
    """At the first byte after ``/*!`` or ``/*M!``: (where the content starts, whether the
    comment is code under ``reading``)."""
    server = reading.server
    digits = 0
    while digits < 6 and pos + digits < len(data) and data[pos + digits] in _DIGITS:
        digits += 1
    if reading.executable is Executable.COMMENT:
        return pos, False
    if digits < 5:
        # No version: code on both servers ("Not a version comment"); MySQL does not know
        # /*M! at all and reads it as an ordinary comment.
        runs = not (mariadb_syntax and server is not None and not server.mariadb)
        return pos, runs or reading.executable is Executable.CODE
    length = 5
    if digits == 6:
        if server is None or server.mariadb:
            length = 6
        elif server.version >= MYSQL_SIX_DIGIT_VERSIONS:
            after = pos + 6
            if after >= len(data) or data[after] in _SPACE:
                length = 6
    version = int(data[pos : pos + length])
    content = pos + length
    if reading.executable is Executable.CODE or server is None:
        return content, True
    if server.mariadb:
        runs = version <= server.version and (mariadb_syntax or version < 50700 or version > 99999)
    else:
        runs = not mariadb_syntax and version <= server.version
    return content, runs


def tokenize(
    data: bytes, reading: Reading = Reading(), *, literals_only: bool = False
) -> Iterator[Token]:
    """The tokens of ``data`` under ``reading``, comments included. Never raises; an
    unterminated literal, identifier or comment runs to the end of the text.

    ``literals_only``: most words and punctuation are skipped unseen (cheaper); literals,
    quoted identifiers, comments and executable-comment markers are all still yielded.
    """
    if reading.multibyte is not None:
        data = masked(data, reading.multibyte)
    match = (_LITERALS_TOKEN if literals_only else _TOKEN).match
    backslash = reading.backslash_escapes
    dquote_kind = QIDENT if reading.ansi_quotes else STRING
    dquote_escapes = backslash and not reading.ansi_quotes
    hints_run = reading.executable is Executable.CODE or (
        reading.executable is Executable.SERVER and reading.server is None
    )
    in_exec = False
    pos = 0
    n = len(data)
    while True:
        m = match(data, pos)
        assert m is not None  # the last alternatives match any byte and the end
        group = m.lastgroup
        start = m.start(group)  # type: ignore[arg-type]
        if group == "word":
            end = m.end()
            word = data[start:end]
            kind = WORD
            if word[0] == 48:  # "0": 0x... and 0b... literals
                if _HEX_WORD.fullmatch(word):
                    kind = HEX
                elif _BIT_WORD.fullmatch(word):
                    kind = BIT
            yield Token(kind, start, end, start, end, True)
        elif group == "punct" or group == "param":
            end = start + 1
            yield Token(PUNCT if group == "punct" else PARAM, start, end, start, end, True)
        elif group == "number":
            end = m.end()
            yield Token(NUMBER, start, end, start, end, True)
        elif group == "squote" or group == "nstr":
            body = m.end()
            end, closed = _skip_quoted(data, body, 39, backslash)
            yield Token(STRING, start, end, body, end - 1 if closed else end, closed)
        elif group == "dquote":
            body = m.end()
            end, closed = _skip_quoted(data, body, 34, dquote_escapes)
            yield Token(dquote_kind, start, end, body, end - 1 if closed else end, closed)
        elif group == "bquote":
            body = m.end()
            end, closed = _skip_quoted(data, body, 96, False)
            yield Token(QIDENT, start, end, body, end - 1 if closed else end, closed)
        elif group == "xstr" or group == "bstr":
            body = m.end()
            close = data.find(b"'", body)
            end, closed = (n, False) if close < 0 else (close + 1, True)
            kind = HEX if group == "xstr" else BIT
            yield Token(kind, start, end, body, end - 1 if closed else end, closed)
        elif group == "line":
            end = _line_end(data, m.end())
            yield Token(COMMENT, start, end, start, end, True)
        elif group == "block":
            after = m.end()
            marker = data[after : after + 2]
            if marker[:1] == b"!" or marker == b"M!":
                mariadb_syntax = marker[:1] == b"M"
                content, runs = _version_comment(
                    data, after + (2 if mariadb_syntax else 1), mariadb_syntax, reading
                )
                if runs:
                    in_exec = True
                    yield Token(EXEC_OPEN, start, content, start, content, True)
                    end = content
                else:
                    end, closed = _comment_end(data, content, nested=True)
                    yield Token(COMMENT, start, end, start, end, closed)
            elif marker[:1] == b"+" and hints_run:
                in_exec = True
                end = after + 1
                yield Token(EXEC_OPEN, start, end, start, end, True)
            else:
                end, closed = _comment_end(data, after, nested=False)
                yield Token(COMMENT, start, end, start, end, closed)
        elif group == "close":
            if in_exec:
                in_exec = False
                end = m.end()
                yield Token(EXEC_CLOSE, start, end, start, end, True)
            else:  # "*" then "/": an operator, not a comment's end
                end = start + 1
                yield Token(PUNCT, start, end, start, end, True)
        else:  # end
            return
        pos = end


def code_tokens(data: bytes, reading: Reading = Reading()) -> Iterator[Token]:
    """The tokens the server parses: without comments and executable-comment markers."""
    for token in tokenize(data, reading):
        if token.kind not in _NOT_CODE:
            yield token


def statements(data: bytes, tokens: Iterator[Token]) -> Iterator[list[Token]]:
    """Code tokens grouped by statement (split at ``;``, which is not part of any)."""
    current: list[Token] = []
    for token in tokens:
        if token.kind is PUNCT and data[token.start] == 59:  # ";"
            if current:
                yield current
            current = []
        else:
            current.append(token)
    if current:
        yield current


# -- values ----------------------------------------------------------------------------------

# MySQL 8.4 reference, 11.1.1, table 11.1: "\%" and "\_" keep their backslash (for LIKE); any
# other unlisted character loses it.
_ESCAPES = {
    ord("0"): b"\x00",
    ord("b"): b"\b",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("Z"): b"\x1a",
    ord("%"): b"\\%",
    ord("_"): b"\\_",
}
_ESCAPE = {q: re.compile(rb"\\(.?)|" + q + q, re.DOTALL) for q in (b"'", b'"', b"`")}


def string_value(data: bytes, token: Token, reading: Reading = Reading()) -> bytes:
    """The value of a string literal or quoted identifier (the bytes the server sees)."""
    body = data[token.body_start : token.body_end]
    quote = data[token.start : token.start + 1]
    if quote in (b"n", b"N"):
        quote = b"'"
    escapes = reading.backslash_escapes and token.kind is STRING and quote != b"`"
    if not escapes:
        return body.replace(quote + quote, quote)
    if b"\\" not in body and quote + quote not in body:
        return body

    def unescape(m: re.Match[bytes]) -> bytes:
        if m.group(0)[:1] == quote:
            return quote
        char = m.group(1)  # b"" for a trailing backslash of unterminated input
        return _ESCAPES.get(char[0], char) if char else b""

    return _ESCAPE[quote].sub(unescape, body)
