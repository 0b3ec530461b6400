"""Facts the gateway refuses statements for, read from tokens under every reading.

A check that refuses must see what the server would run: it looks under every reading of
``lexer.readings_for`` (executable comments as code, as comments and as the target runs
them; each ``sql_mode`` quoting) and refuses if any reading shows the statement. A reading
the server would not take can only add refusals of statements that hide the refused syntax
in a comment, which no legitimate client writes.
"""

from __future__ import annotations

from hoopy.sql.lexer import (
    WORD,
    ServerVersion,
    Token,
    code_tokens,
    readings_for,
    slices,
    statements,
)

# MySQL 8.4 reference 15.2.9 "LOAD DATA Statement" and 15.2.10 "LOAD XML Statement":
# LOAD {DATA | XML} [LOW_PRIORITY | CONCURRENT] [LOCAL] INFILE ...
_LOAD_PRIORITIES = frozenset((b"LOW_PRIORITY", b"CONCURRENT"))


def loads_local_file(data: bytes, server: ServerVersion | None = None) -> bool:
    """Whether any statement of ``data`` (a COM_QUERY's text, possibly several statements)
    is a ``LOAD DATA|XML ... LOCAL INFILE`` under some reading.

    Cheap for every other statement: without a ``local`` in the bytes (a keyword is never
    split by a comment or a quote) nothing is lexed.
    """
    if not _has_word_local(data):
        return False
    for reading in readings_for(data, server):
        for statement in statements(data, code_tokens(data, reading)):
            if _is_load_local(data, statement):
                return True
    return False


def _is_load_local(data: bytes, tokens: list[Token]) -> bool:
    words = []
    for token in tokens[:6]:
        if token.kind is not WORD:
            break
        words.append(bytes(data[token.start : token.end]).upper())
    if len(words) < 3 or words[0] != b"LOAD" or words[1] not in (b"DATA", b"XML"):
        return False
    rest = words[2:]
    while rest and rest[0] in _LOAD_PRIORITIES:
        rest = rest[1:]
    return bool(rest) and rest[0] == b"LOCAL"


def _has_word_local(data: bytes) -> bool:
    # Case-insensitive regular expressions scan at a few ns per byte; lower() and find() over
    # slices are ten times faster and hold the interpreter briefly.
    return any(b"local" in piece.lower() for piece in slices(data, len(b"local") - 1))
