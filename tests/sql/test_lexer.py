"""The MySQL tokenizer: token kinds, executable comments per server, readings, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopy.sql.lexer import (
    BODY_STEP,
    COMMENT,
    EXEC_CLOSE,
    EXEC_OPEN,
    Executable,
    Reading,
    ServerVersion,
    code_tokens,
    readings_for,
    statements,
    string_value,
    tokenize,
)

MARIADB = ServerVersion(mariadb=True, version=101106)
MYSQL80 = ServerVersion(mariadb=False, version=80036)
MYSQL84 = ServerVersion(mariadb=False, version=80400)


DEFAULT = Reading()


def kinds(sql: str, reading: Reading = DEFAULT) -> list[tuple[str, str]]:
    data = sql.encode()
    return [(t.kind, t.text(data).decode()) for t in tokenize(data, reading)]


def code(sql: str, server: ServerVersion | None, **kw: object) -> str:
    """The code tokens' text joined by spaces, as ``server`` reads ``sql``."""
    data = sql.encode()
    reading = Reading(server=server, **kw)  # type: ignore[arg-type]
    return " ".join(t.text(data).decode() for t in code_tokens(data, reading))


def test_token_kinds() -> None:
    sql = "SELECT 'a''b', \"c\\\"d\", `x``y`, N'n', _utf8mb4'u', x'41', 0x41, b'1', 0b1, 1.5e3, ?;"
    assert kinds(sql) == [
        ("word", "SELECT"),
        ("string", "'a''b'"),
        ("punct", ","),
        ("string", '"c\\"d"'),
        ("punct", ","),
        ("qident", "`x``y`"),
        ("punct", ","),
        ("string", "N'n'"),
        ("punct", ","),
        ("word", "_utf8mb4"),
        ("string", "'u'"),
        ("punct", ","),
        ("hex", "x'41'"),
        ("punct", ","),
        ("hex", "0x41"),
        ("punct", ","),
        ("bit", "b'1'"),
        ("punct", ","),
        ("bit", "0b1"),
        ("punct", ","),
        ("number", "1.5e3"),
        ("punct", ","),
        ("param", "?"),
        ("punct", ";"),
    ]


def test_comments() -> None:
    assert kinds("a -- c\nb #x\nc /* d */ e --x") == [
        ("word", "a"),
        ("comment", "-- c"),
        ("word", "b"),
        ("comment", "#x"),
        ("word", "c"),
        ("comment", "/* d */"),
        ("word", "e"),
        ("punct", "-"),
        ("punct", "-"),
        ("word", "x"),
    ]
    # The server's line-comment loop stops at a NUL byte too.
    assert kinds("# c\x00d")[:2] == [("comment", "# c"), ("punct", "\x00")]
    # "*/" outside a comment is two operators.
    assert kinds("2 */ 3") == [("number", "2"), ("punct", "*"), ("punct", "/"), ("number", "3")]


@pytest.mark.parametrize(
    ("sql", "server", "expected"),
    [
        # /*! without a version runs everywhere.
        ("LOAD DATA /*!LOCAL*/ INFILE", MYSQL80, "LOAD DATA LOCAL INFILE"),
        ("LOAD DATA /*!LOCAL*/ INFILE", MARIADB, "LOAD DATA LOCAL INFILE"),
        # A version the server has reached, or not.
        ("a /*!80000 b */ c", MYSQL80, "a b c"),
        ("a /*!80037 b */ c", MYSQL80, "a c"),
        ("a /*!40101 b */ c", MARIADB, "a b c"),
        # MariaDB ignores MySQL's 5.7+ comments, but not its own /*M! ones.
        ("a /*!50701 b */ c", MARIADB, "a c"),
        ("a /*M!50701 b */ c", MARIADB, "a b c"),
        ("a /*!100100 b */ c", MARIADB, "a b c"),
        ("a /*M!101107 b */ c", MARIADB, "a c"),
        # MySQL does not know /*M!: an ordinary comment.
        ("a /*M!100000 b */ c", MYSQL80, "a c"),
        ("a /*M! b */ c", MYSQL80, "a c"),
        ("a /*M! b */ c", MARIADB, "a b c"),
        # Six digits: MySQL 8.1+ with whitespace after them; before 8.1, five digits.
        ("a /*!100000 b */ c", MYSQL84, "a c"),
        ("a /*!100000 b */ c", MYSQL80, "a 0 b c"),
        ("a /*!800001b */ c", MYSQL84, "a 1b c"),
        # A comment that does not run may hold one level of comment; one that runs ends at
        # its first "*/", and a "*/" inside a string is part of the string.
        ("a /*!99999 b /* c */ d */ e", MARIADB, "a e"),
        ("a /*! b /* c */ d */ e", MARIADB, "a b d e"),
        ("a /*! b '*/' */ e", MARIADB, "a b '*/' e"),
        # Optimizer hints are comments to the server's grammar.
        ("SELECT /*+ BKA(t) */ 1", MYSQL80, "SELECT 1"),
        # An unknown server: every executable comment is code (fail closed).
        ("a /*!99999 b */ /*M!999999 c */ /*+ d */ e", None, "a b c d e"),
    ],
)
def test_executable_comments_as_the_server_reads_them(
    sql: str, server: ServerVersion | None, expected: str
) -> None:
    assert code(sql, server) == expected


def test_executable_readings() -> None:
    sql = "a /*!99999 b */ c"
    assert code(sql, MARIADB, executable=Executable.CODE) == "a b c"
    assert code(sql, MARIADB, executable=Executable.COMMENT) == "a c"
    assert [t.kind for t in tokenize(b"/*! x */")] == [EXEC_OPEN, "word", EXEC_CLOSE]
    assert [t.kind for t in tokenize(b"/*! x */", Reading(executable=Executable.COMMENT))] == [
        COMMENT
    ]


def test_quoting_readings() -> None:
    data = b"'a\\' , ' z \"c\\\" d\""  # 'a\' , ' z "c\" d"
    assert [t.text(data) for t in code_tokens(data)] == [b"'a\\' , '", b"z", b'"c\\" d"']
    # Without escapes the first literal ends at its backslash; the next one runs to the end.
    no_escapes = Reading(backslash_escapes=False)
    assert [t.text(data) for t in code_tokens(data, no_escapes)] == [
        b"'a\\'",
        b",",
        b'\' z "c\\" d"',
    ]
    ansi = list(code_tokens(data, Reading(ansi_quotes=True)))
    assert [(t.kind, t.text(data)) for t in ansi] == [
        ("string", b"'a\\' , '"),
        ("word", b"z"),
        ("qident", b'"c\\"'),
        ("word", b"d"),
        ("qident", b'"'),
    ]


def test_readings_for_only_what_can_differ() -> None:
    assert readings_for(b"SELECT 'a'") == (Reading(executable=Executable.CODE),)
    assert len(readings_for(b"SELECT 'a\\'b'")) == 2
    assert len(readings_for(b'SELECT "a\\"b"')) == 3
    assert len(readings_for(b"SELECT /*!1*/ 'a\\'b'", MARIADB)) == 6
    assert {r.executable for r in readings_for(b"/*+ x */", MARIADB)} == set(Executable)


def test_string_values() -> None:
    data = b"'a''b' 'c\\'d' \"e\"\"f\" 'i\\nj\\tk\\0\\Z\\%\\_\\q\\\\' N'n' `g``h`"
    values = [string_value(data, t) for t in code_tokens(data)]
    assert values == [b"a'b", b"c'd", b'e"f', b"i\nj\tk\x00\x1a\\%\\_q\\", b"n", b"g`h"]
    no_escapes = Reading(backslash_escapes=False)
    assert [string_value(b"'a\\'", t, no_escapes) for t in code_tokens(b"'a\\'", no_escapes)] == [
        b"a\\"
    ]


def test_unterminated_input_runs_to_the_end() -> None:
    for sql, kind in (
        (b"'abc", "string"),
        (b"'abc\\", "string"),
        (b"'abc''", "string"),
        (b"`abc", "qident"),
        (b"x'41", "hex"),
        (b"/* abc", COMMENT),
        (b"/*!99999 abc", COMMENT),
    ):
        (token,) = tokenize(sql, Reading(server=MARIADB))
        assert (token.kind, token.end, token.closed) == (kind, len(sql), False)


def test_statements_split_at_semicolons_outside_literals() -> None:
    data = b"SELECT ';'; SELECT 2;; /* ; */ SELECT 3"
    assert [[t.text(data) for t in s] for s in statements(data, code_tokens(data))] == [
        [b"SELECT", b"';'"],
        [b"SELECT", b"2"],
        [b"SELECT", b"3"],
    ]


@pytest.mark.parametrize(
    ("greeting", "expected"),
    [
        (b"5.5.5-10.11.6-MariaDB-1:10.11.6+maria~ubu2204", MARIADB),
        (b"11.4.2-MariaDB-log", ServerVersion(True, 110402)),
        (b"8.0.36", MYSQL80),
        (b"9.1.0-commercial", ServerVersion(False, 90100)),
        (b"hoopy", None),
    ],
)
def test_server_version_from_greeting(greeting: bytes, expected: ServerVersion | None) -> None:
    assert ServerVersion.from_greeting(greeting) == expected


# -- properties and hostile input ------------------------------------------------------------

PIECES = st.sampled_from(
    [
        "'", '"', "`", "\\", "/*", "*/", "/*!", "/*M!", "/*+", "--", "-- ", "#", "\n", "\x00",
        "x'", "N'", "0x1", "12345", "a", " ", ";", "?", "''", "!", "M",
    ]
)  # fmt: skip
READINGS = st.builds(
    Reading,
    st.booleans(),
    st.booleans(),
    st.sampled_from(Executable),
    st.sampled_from([None, MARIADB, MYSQL80, MYSQL84]),
)


@given(st.lists(PIECES, max_size=40).map("".join), READINGS)
def test_tokens_tile_the_input(sql: str, reading: Reading) -> None:
    """Tokens are in order, do not overlap, and only whitespace lies between them: nothing
    of the text is skipped unseen."""
    data = sql.encode()
    pos = 0
    for token in tokenize(data, reading):
        assert token.start >= pos and token.end > token.start
        assert data[pos : token.start].strip(b" \t\n\x0b\x0c\r") == b""
        assert token.start <= token.body_start <= token.body_end <= token.end
        pos = token.end
    assert data[pos:].strip(b" \t\n\x0b\x0c\r") == b""


@given(st.binary(max_size=200), READINGS)
def test_any_bytes_tokenize(data: bytes, reading: Reading) -> None:
    for token in tokenize(data, reading):
        string_value(data, token, reading)


HOSTILE = {
    "quotes": b"'" * 1_000_000,
    "doubled quotes": b"'" + b"''" * 500_000,
    "backslashes": b"'" + b"\\" * 1_000_001,
    "escaped quotes": b"'" + b"\\'" * 500_000,
    "comment openers": b"/*" * 500_000,
    "exec openers": b"/*!" * 300_000,
    "exec closers": b"/*!*/" * 200_000,
    "line comments": b"-- '\n#'\n" * 120_000,
    "long literal": b"SELECT '" + b"a" * (4 * BODY_STEP + 7) + b"'",
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_completes(data: bytes) -> None:
    # No timing assertion (bench/ measures); a quadratic path would hang the suite.
    for reading in readings_for(data, MARIADB):
        end = 0
        for token in tokenize(data, reading):
            end = token.end
        assert data[end:].strip() == b""


@given(
    st.binary(max_size=64),
    st.sampled_from([b"/*", b"/*!", b"/*M!", b"\\", b'"']),
    st.integers(0, 64),
    st.integers(1, 8),
)
def test_contains_finds_a_needle_across_step_boundaries(
    data: bytes, needle: bytes, at: int, step: int
) -> None:
    # With a step of a few bytes every placement straddles some boundary.
    from hoopy.sql import lexer

    placed = data[:at] + needle + data[at:]
    old = lexer.SCAN_STEP
    lexer.SCAN_STEP = step
    try:
        assert lexer.contains(placed, needle)
        assert lexer.contains(data, needle) == (needle in data)
    finally:
        lexer.SCAN_STEP = old


def test_no_pattern_repeats_a_group_possessively() -> None:
    # CPython before 3.11.5 (Debian 12's python3 is 3.11.2) matched a possessive repeat of a
    # group that backtracks inside wrongly (gh-106052, gh-100061): the lexer could misread a
    # literal's end there. Such groups are written as atomic groups, (?>(?:...)*). CI runs a
    # newer Python, where both forms agree, so this looks at the source instead.
    import io
    import pathlib
    import re
    import tokenize

    import hoopy

    possessive_group = re.compile(r"\)(?:\*|\+|\?|\{[0-9,]*\})\+")
    found = []
    for path in pathlib.Path(hoopy.__file__).parent.rglob("*.py"):
        source = path.read_text()
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.STRING and possessive_group.search(token.string):
                found.append(f"{path.name}:{token.start[0]}: {token.string}")
    assert not found, found


@given(st.integers(1, 12), st.integers(0, 40))
def test_sliced_scans_find_keywords_across_every_boundary(step: int, pad: int) -> None:
    # The keyword tests of checks.py and credentials.py scan huge text in slices; with a
    # step of a few bytes the keyword always crosses boundaries (a backslash inside too).
    from hoopy.sql import checks, credentials, lexer

    old = lexer.SCAN_STEP
    lexer.SCAN_STEP = step
    try:
        text = b" " * pad + b"LOAD DATA LOCAL INFILE '/x' INTO TABLE t"
        assert checks.loads_local_file(text)
        assert credentials.may_carry_credentials(b"x" * pad + b"'IDEN\\TIFIED'")
        assert not credentials.may_carry_credentials(b"x" * pad + b"'IDEN TIFIED'")
    finally:
        lexer.SCAN_STEP = old
