"""Credential literals found from tokens: every syntax, and generated spacing, comment,
executable-comment, case and quoting variants of each, read as the audit records them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.audit.redact import redact_statement
from hoopy.sql.credentials import _NESTED_TRIGGERS as _TRIGGERS
from hoopy.sql.credentials import find_credentials, may_carry_credentials
from hoopy.sql.lexer import ServerVersion

MARIADB = ServerVersion(mariadb=True, version=101106)
MYSQL = ServerVersion(mariadb=False, version=80400)
SERVERS = st.sampled_from([None, MARIADB, MYSQL])

# The statements of the issue, each of which once reached the audit file verbatim.
ISSUE_CASES = [
    "CREATE USER 'u1'@'%' IDENTIFIED /**/ BY 'Secret-1'",
    "CREATE USER 'u1'@'%' IDENTIFIED BY/**/'Secret-1'",
    "CREATE USER 'u1'@'%' IDENTIFIED -- c\n BY 'Secret-1'",
    "SELECT PASSWORD/**/('Secret-1')",
    "PREPARE s FROM 'CREATE USER u1 IDENTIFIED BY ''Secret-1'''",
    "CREATE USER u1 IDENTIFIED BY 'Secret-1\\'",  # under NO_BACKSLASH_ESCAPES
    "CREATE SERVER s1 FOREIGN DATA WRAPPER mysql OPTIONS (USER 'r', PASSWORD 'Secret-1')",
    "CHANGE MASTER TO MASTER_HOST='h', MASTER_PASSWORD='Secret-1'",
    "CREATE USER u1 IDENTIFIED VIA mysql_native_password USING 'Secret-1'",
    "SELECT OLD_PASSWORD('Secret-1')",
]


@pytest.mark.parametrize("sql", ISSUE_CASES)
def test_issue_cases_are_redacted(sql: str) -> None:
    for server in (None, MARIADB, MYSQL):
        recorded = redact_statement(sql.encode(), (), server)
        assert "Secret-1" not in recorded.sql, recorded.sql
        assert recorded.kinds == ["credential"] and recorded.credential_bearing


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "CREATE USER 'bob'@'%' IDENTIFIED BY 'pw' REQUIRE SSL COMMENT 'kept'",
            "CREATE USER 'bob'@'%' IDENTIFIED BY '<redacted:credential>' REQUIRE SSL "
            "COMMENT 'kept'",
        ),
        (
            "CREATE USER a IDENTIFIED BY 'p1', b@'h' IDENTIFIED WITH 'sha256_password' AS 'p2'",
            "CREATE USER a IDENTIFIED BY '<redacted:credential>', b@'h' IDENTIFIED WITH "
            "'sha256_password' AS '<redacted:credential>'",
        ),
        (
            "ALTER USER u IDENTIFIED BY 'new' REPLACE 'old' RETAIN CURRENT PASSWORD",
            "ALTER USER u IDENTIFIED BY '<redacted:credential>' REPLACE '<redacted:credential>' "
            "RETAIN CURRENT PASSWORD",
        ),
        (
            "CREATE USER u IDENTIFIED VIA ed25519 USING PASSWORD('p') OR unix_socket",
            "CREATE USER u IDENTIFIED VIA ed25519 USING PASSWORD('<redacted:credential>') "
            "OR unix_socket",
        ),
        (
            "CREATE USER u IDENTIFIED BY RANDOM PASSWORD PASSWORD EXPIRE INTERVAL 90 DAY",
            "CREATE USER u IDENTIFIED BY RANDOM PASSWORD PASSWORD EXPIRE INTERVAL 90 DAY",
        ),
        ("SET PASSWORD FOR 'u'@'h' = 'p'", "SET PASSWORD FOR 'u'@'h' = '<redacted:credential>'"),
        ("SET PASSWORD = PASSWORD(0x7077)", "SET PASSWORD = PASSWORD('<redacted:credential>')"),
        (
            "SELECT AES_ENCRYPT('text', 'key', 'iv'), AES_DECRYPT(c, UNHEX('k')) FROM t",
            "SELECT AES_ENCRYPT('text', '<redacted:credential>'), "
            "AES_DECRYPT(c, UNHEX('<redacted:credential>')) FROM t",
        ),
        (
            "START REPLICA USER='repl' PASSWORD = 'p'",
            "START REPLICA USER='repl' PASSWORD = '<redacted:credential>'",
        ),
        (
            "CHANGE REPLICATION SOURCE TO SOURCE_USER='r', SOURCE_PASSWORD='p'",
            "CHANGE REPLICATION SOURCE TO SOURCE_USER='r', SOURCE_PASSWORD='<redacted:credential>'",
        ),
        (
            "CREATE TABLE f (a INT) ENGINE=FEDERATED CONNECTION='mysql://u:p@h/d/t'",
            "CREATE TABLE f (a INT) ENGINE=FEDERATED CONNECTION='<redacted:credential>'",
        ),
        (
            "UPDATE app_users SET password = _utf8mb4'p' WHERE id = 1",
            "UPDATE app_users SET password = _utf8mb4'<redacted:credential>' WHERE id = 1",
        ),
        (
            "SET @s = CONCAT('CREATE USER u IDENTIFIED BY ', '''p''')",
            "SET @s = CONCAT('CREATE USER u IDENTIFIED BY ', '<redacted:credential>')",
        ),
        (
            "EXECUTE IMMEDIATE 'SET PASSWORD = ''p'''",
            "EXECUTE IMMEDIATE 'SET PASSWORD = ''<redacted:credential>'''",
        ),
        # Statements without credentials are left alone, even when they say "password".
        ("SELECT password, 'x' FROM users", "SELECT password, 'x' FROM users"),
        ("SELECT 'IDENTIFIED BY'", "SELECT 'IDENTIFIED BY'"),
    ],
)
def test_redaction(sql: str, expected: str) -> None:
    assert redact_statement(sql.encode(), (), MARIADB).sql == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT PASSWORD(?)",
        "UPDATE app_users SET password = ? WHERE id = ?",
        "CHANGE MASTER TO MASTER_PASSWORD = ?",
        "SELECT AES_ENCRYPT(?, ?)",
        "SET @s = 'CREATE USER u IDENTIFIED BY x'",
        "SELECT 'SELECT PASSWORD(?)' INTO @s",
        "CREATE USER u IDENTIFIED BY RANDOM PASSWORD",
    ],
)
def test_credential_bearing_texts(sql: str) -> None:
    assert find_credentials(sql.encode()).bearing


@pytest.mark.parametrize("sql", ["SELECT ?", "SELECT password FROM t WHERE id = ?", "SELECT 1"])
def test_texts_without_credentials(sql: str) -> None:
    assert not find_credentials(sql.encode()).bearing


def test_the_cheap_test_sees_keywords_split_by_backslashes() -> None:
    assert may_carry_credentials(b"PREPARE s FROM 'CREATE USER u IDENT\\IFIED BY ''x'''")
    assert not may_carry_credentials(b"SELECT 1 FROM t")
    sql = b"PREPARE s FROM 'CREATE USER u IDENT\\IFIED BY ''Secret-1'''"
    assert b"Secret-1" not in redact_statement(sql, ()).sql.encode()


# -- generated variants ----------------------------------------------------------------------

# Where tokens may be separated: whitespace, comments, empty executable comments.
SEPARATORS = st.sampled_from(
    [" ", "  ", "\n", "\t", "/**/", " /* c */ ", "-- c\n", "#c\n", "/*!*/", " /*!50000*/ "]
)
# S is where the secret's literal goes; words are keywords or names.
TEMPLATES = [
    "CREATE USER 'u'@'%' IDENTIFIED BY S",
    "CREATE USER u IDENTIFIED BY PASSWORD S",
    "CREATE USER u IDENTIFIED WITH mysql_native_password BY S",
    "CREATE USER u IDENTIFIED WITH caching_sha2_password AS S",
    "CREATE USER u IDENTIFIED VIA ed25519 USING PASSWORD ( S ) OR unix_socket",
    "CREATE USER u IDENTIFIED VIA mysql_native_password USING S",
    "CREATE USER a IDENTIFIED BY 'x' , b IDENTIFIED BY S",
    "ALTER USER u IDENTIFIED BY 'new' REPLACE S RETAIN CURRENT PASSWORD",
    "ALTER USER u IDENTIFIED BY S AND IDENTIFIED WITH authentication_ldap_sasl AS S",
    "GRANT SELECT ON * . * TO u IDENTIFIED BY S WITH GRANT OPTION",
    "CLONE INSTANCE FROM 'u' @ 'h' : 3306 IDENTIFIED BY S",
    "SET PASSWORD = S",
    "SET PASSWORD FOR u = PASSWORD ( S )",
    "SET PASSWORD FOR 'u' @ 'h' = OLD_PASSWORD ( S )",
    "SELECT PASSWORD ( S )",
    "SELECT OLD_PASSWORD ( S )",
    "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS ( USER 'r' , PASSWORD S )",
    "ALTER SERVER s OPTIONS ( PASSWORD S )",
    "CHANGE MASTER TO MASTER_HOST = 'h' , MASTER_PASSWORD = S",
    "CHANGE REPLICATION SOURCE TO SOURCE_PASSWORD = S",
    "START SLAVE USER = 'u' PASSWORD = S",
    "START GROUP_REPLICATION USER = 'u' , PASSWORD = S",
    "SELECT AES_ENCRYPT ( 'x' , S )",
    "SELECT DES_DECRYPT ( c , S ) FROM t",
    "UPDATE t SET password = S",
    "SET @db_password : = S",
    "CREATE TABLE t ( a INT ) ENGINE = FEDERATED CONNECTION = S",
]
# Letters no template and no marker has in a row: a secret's half found in the record is a leak.
SECRET_CHARS = "QJZXK789"


def case_variants(draw: st.DrawFn, word: str) -> str:
    if not word[:1].isalpha() or draw(st.booleans()):
        return word
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in word)


def literal(draw: st.DrawFn, secret: str, backslash: bool) -> str:
    """The secret as one of MySQL's literal forms (some put ' or \\ inside it)."""
    form = draw(st.sampled_from(["single", "double", "introducer", "national", "hex"]))
    if form == "hex":
        return "x'" + secret.encode().hex() + "'"
    quote = '"' if form == "double" else "'"
    special = draw(st.sampled_from(["", "'", '"', "\\", "''"]))
    value = secret[:6] + special + secret[6:]
    if backslash:
        body = value.replace("\\", "\\\\")
        body = body.replace(quote, "\\" + quote if draw(st.booleans()) else quote * 2)
    else:
        body = value.replace(quote, quote * 2)
    prefix = {"introducer": "_utf8mb4", "national": "N"}.get(form, "")
    return prefix + quote + body + quote


@st.composite
def credential_statements(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A statement with credential syntax, and its secrets (which must not be recorded)."""
    template = draw(st.sampled_from(TEMPLATES))
    backslash = draw(st.booleans())
    secrets = []
    parts = []
    for word in template.split(" "):
        if word == "S":
            secret = draw(st.text(SECRET_CHARS, min_size=12, max_size=16))
            secrets.append(secret)
            parts.append(literal(draw, secret, backslash))
            continue
        word = case_variants(draw, word)
        wrap = draw(st.sampled_from(["", "", "", "exec", "versioned", "mariadb"]))
        if wrap == "exec":
            word = "/*!" + word + "*/"
        elif wrap == "versioned":
            word = "/*!50100 " + word + " */"
        elif wrap == "mariadb":
            word = "/*M!100100 " + word + " */"
        parts.append(word)
    sql = parts[0]
    for part in parts[1:]:
        sql += draw(SEPARATORS) + part
    wrapper = draw(st.sampled_from(["", "", "prepare", "variable", "immediate", "multi"]))
    if wrapper in ("prepare", "variable", "immediate"):
        if "#c\n" in sql or "-- c\n" in sql or not backslash:
            inner = sql.replace("'", "''")
        else:
            inner = sql.replace("\\", "\\\\").replace("'", "\\'")
        sql = {
            "prepare": "PREPARE stmt FROM '{}'",
            "variable": "SET @s = '{}'",
            "immediate": "EXECUTE IMMEDIATE '{}'",
        }[wrapper].format(inner)
    elif wrapper == "multi":
        sql = "SELECT 1; " + sql + "; SELECT 2"
    return sql, secrets


def exposed(recorded: str, secret: str) -> bool:
    # The secret's two halves (a quote or backslash may sit between them), or its hex.
    return secret[:6] in recorded or secret[6:] in recorded or secret.encode().hex() in recorded


@settings(max_examples=500, deadline=None)
@given(credential_statements(), SERVERS)
def test_generated_secrets_never_reach_the_record(
    case: tuple[str, list[str]], server: ServerVersion | None
) -> None:
    sql, secrets = case
    recorded = redact_statement(sql.encode(), (), server)
    assert recorded.credential_bearing
    for secret in secrets:
        assert not exposed(recorded.sql, secret), (sql, recorded.sql)


@settings(max_examples=200, deadline=None)
@given(credential_statements(), SERVERS)
def test_redaction_is_idempotent(case: tuple[str, list[str]], server: ServerVersion | None) -> None:
    once = redact_statement(case[0].encode(), (), server).sql
    assert redact_statement(once.encode(), (), server).sql == once


@given(
    st.text(alphabet="aeidntfpswrcyhlgu_ \\'", max_size=2000),
    st.one_of(st.none(), st.sampled_from(sorted(t.decode() for t in _TRIGGERS))),
    st.integers(0, 2000),
    st.randoms(use_true_random=False),
)
def test_the_keyword_test_reads_short_and_long_text_alike(
    text: str, keyword: str | None, at: int, rnd: Any
) -> None:
    # Short text is scanned with one regular expression, long text with substring tests;
    # a keyword goes in with random case and a backslash inside it now and then.
    from hoopy.sql import credentials

    if keyword is not None:
        word = "".join(c.upper() if rnd.random() < 0.5 else c for c in keyword)
        if rnd.random() < 0.3:
            cut = rnd.randrange(1, len(word))
            word = word[:cut] + "\\" + word[cut:]
        text = text[:at] + word + text[at:]
    data = text.encode()
    folded = data.replace(b"\\", b"").lower()
    expected = any(t in folded for t in credentials._NESTED_TRIGGERS)
    assert keyword is None or expected
    assert credentials.may_carry_credentials(data) == expected
    padded = data + b" " * (credentials._SHORT + 1)  # the same, past the threshold
    assert credentials.may_carry_credentials(padded) == expected
