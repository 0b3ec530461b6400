"""Redacting sensitive literals: each detector's precision, the MySQL lexer, and properties."""

from __future__ import annotations

import base64
import json
import string
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopy.audit.redact import (
    API_TOKEN,
    AWS_KEY,
    CARD,
    DEFAULT_DETECTORS,
    EMAIL,
    IBAN,
    IBAN_LENGTHS,
    JWT,
    PASSWORD_HASH,
    PHONE,
    PRIVATE_KEY,
    SSN,
    Detector,
    detect,
    detectors_named,
    iban_valid,
    luhn_valid,
    marker,
    redact_sql_literals,
    redact_value,
    string_literals,
)


def with_check_digit(payload: str) -> str:
    """``payload`` and the Luhn check digit that makes it valid."""
    return next(payload + d for d in string.digits if luhn_valid(payload + d))


def b64url_json(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def token(*parts: str) -> str:
    # Vendor tokens are assembled at run time so that secret scanners (GitHub push protection)
    # do not take these fakes for leaked credentials.
    return "".join(parts)


A36 = "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY2zA4"
CARD_19 = with_check_digit("400000000000000000")
CARD_1 = with_check_digit("123456789012345")  # Luhn-valid, but no payment network starts with 1
SHA512_CRYPT = "$6$rounds=5000$saltsalt$" + "a" * 43 + "B" * 43
JWS = ".".join(
    (b64url_json({"alg": "HS256", "typ": "JWT"}), b64url_json({"sub": "42"}), "c2lnbmF0dXJl")
)

POSITIVE = [
    (PRIVATE_KEY, token("-----BEGIN ", "PRIVATE KEY-----\nMIIEvQIBADANBg")),
    (PRIVATE_KEY, token("-----BEGIN ", "RSA PRIVATE KEY-----")),
    (PRIVATE_KEY, token("-----BEGIN ", "OPENSSH PRIVATE KEY-----")),
    (PRIVATE_KEY, token("-----BEGIN ", "ENCRYPTED PRIVATE KEY-----")),
    (PRIVATE_KEY, token("-----BEGIN ", "PGP PRIVATE KEY BLOCK-----")),
    (JWT, JWS),
    (JWT, f"Authorization: Bearer {JWS}"),
    (JWT, b64url_json({"alg": "none"}) + "." + b64url_json({"sub": "1"}) + "."),  # unsigned
    (AWS_KEY, "AKIAIOSFODNN7EXAMPLE"),
    (AWS_KEY, "aws_access_key_id=ASIAY34FZKBOKMUTVV7A"),
    (API_TOKEN, token("ghp_", A36)),
    (API_TOKEN, token("gho_", A36)),
    (API_TOKEN, token("github_pat_", "11ABCDEFG0123456789abc_", "x" * 59)),
    (API_TOKEN, token("xoxb-", "123456789012-1234567890123-", "AbCdEfGhIjKlMnOpQrStUvWx")),
    (API_TOKEN, token("xoxp-", "1234-5678-", "abcdef0123456789")),
    (API_TOKEN, token("sk_", "live_", "4eC39HqLyjWDarjtT1zdp7dc")),
    (API_TOKEN, token("rk_", "test_", "4eC39HqLyjWDarjtT1zdp7dc")),
    (API_TOKEN, token("sk-", "proj-", "Ab1" * 20)),
    (API_TOKEN, token("sk-", "ant-api03-", "Xy9_" * 20)),
    (API_TOKEN, token("glpat-", "xY9_" * 5)),
    (API_TOKEN, token("AIza", "SyA-", "b" * 31)),
    (API_TOKEN, token("npm_", A36)),
    (API_TOKEN, token("pypi-", "AgEIcHlwaS5vcmc", "C" * 50)),
    (API_TOKEN, token("key=", "ghp_", A36, "&x=1")),
    (PASSWORD_HASH, "$2b$12$" + "R9h/cIPz0gi.URNNX3kh2O" + "PST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"),
    (PASSWORD_HASH, "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"),
    (PASSWORD_HASH, SHA512_CRYPT),
    (PASSWORD_HASH, "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$" + "X" * 43),
    (PASSWORD_HASH, "pbkdf2_sha256$600000$s4ltS4lt$" + "Aa0+" * 11),
    (PASSWORD_HASH, "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),
    (CARD, "4111111111111111"),
    (CARD, "4111 1111 1111 1111"),
    (CARD, "4111-1111-1111-1111"),
    (CARD, "378282246310005"),  # Amex
    (CARD, "3782 822463 10005"),
    (CARD, "5555555555554444"),
    (CARD, "2223003122003222"),  # Mastercard 2-series
    (CARD, "6011111111111117"),
    (CARD, CARD_19),
    (CARD, "paid with 4242424242424242, exp 12/30"),
    (IBAN, "DE89370400440532013000"),
    (IBAN, "DE89 3704 0044 0532 0130 00"),
    (IBAN, "GB82WEST12345698765432"),
    (IBAN, "MT84MALT011000012345MTLCAST001S"),
    (IBAN, "NO9386011117947"),  # the shortest
    (IBAN, "pay NL91ABNA0417164300 today"),
    (SSN, "078-05-1120"),
    (SSN, "ssn: 123-45-6789."),
    (EMAIL, "bob@example.com"),
    (EMAIL, "first.last+tag@mail.example.co.uk"),
    (EMAIL, "write to X_Y@sub.domain.io, thanks"),
    (EMAIL, "user@example.xn--p1ai"),
    (EMAIL, "bob@example.com."),
    (PHONE, "+14155552671"),
    (PHONE, "+1 (415) 555-2671"),
    (PHONE, "+44 20 7946 0958"),
    (PHONE, "+44 (0)20 7946 0958"),
    (PHONE, "+49-30-901820"),
    (PHONE, "call +33 1 42 68 53 00 now"),
]

NEGATIVE = [
    (PRIVATE_KEY, "-----BEGIN PUBLIC KEY-----"),
    (PRIVATE_KEY, "-----BEGIN CERTIFICATE-----"),
    (PRIVATE_KEY, "my private key is safe"),
    (JWT, b64url_json({"alg": "HS256"}) + ".payload"),  # two segments
    (JWT, b64url_json({"typ": "JWT"}) + ".e30.c2ln"),  # a header without "alg"
    (JWT, "eyJhbGciOi.e30.c2ln"),  # does not decode to JSON
    (JWT, JWS + ".Zm9v"),  # a fourth segment: not a JWS
    (AWS_KEY, "AKIAIOSFODNN7EXAMPL"),  # 15 after the prefix
    (AWS_KEY, "AKIAIOSFODNN7EXAMPLE1"),
    (AWS_KEY, "XAKIAIOSFODNN7EXAMPLE"),
    (AWS_KEY, "akiaiosfodnn7example"),
    (API_TOKEN, "ghp_short"),
    (API_TOKEN, token("ghp_", A36, "x")),  # the wrong length
    (API_TOKEN, token("sk-", "winter-jacket-for-men-with-a-hood-size-large")),  # a slug
    (API_TOKEN, token("ta", "sk_live_", "4eC39HqLyjWDarjtT1zdp7dc")),  # inside a word
    (API_TOKEN, token("pk_", "live_", "4eC39HqLyjWDarjtT1zdp7dc")),  # publishable, not secret
    (API_TOKEN, token("AIza", "short")),
    (PASSWORD_HASH, "$2b$12$short"),
    (PASSWORD_HASH, "costs $5$ each"),
    (PASSWORD_HASH, "2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),  # a bare SHA-1
    (PASSWORD_HASH, "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E1"),  # 39 digits
    (CARD, "4111111111111112"),  # fails Luhn
    (CARD, "411111111111"),  # 12 digits
    (CARD, "41111111111111111111"),  # 20 digits
    (CARD, CARD_1),
    (CARD, "1700000000000"),  # a timestamp in milliseconds
    (CARD, "94111111111111111"),  # part of a longer number
    (CARD, "4111-1111 1111-1111"),  # mixed separators
    (CARD, "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"),
    (IBAN, "DE89370400440532013001"),  # wrong check digits
    (IBAN, "DE8937040044053201300"),  # wrong length for DE
    (IBAN, "XX89370400440532013000"),  # no such country
    (IBAN, "DE89370400440532013000X"),
    (IBAN, "ORDER1234567890123456"),
    (SSN, "000-12-3456"),
    (SSN, "666-12-3456"),
    (SSN, "912-34-5678"),
    (SSN, "123-00-4567"),
    (SSN, "123-45-0000"),
    (SSN, "123456789"),  # no dashes
    (SSN, "1123-45-6789"),
    (SSN, "123-45-67890"),
    (SSN, "123-45-6789-1"),
    (SSN, "2024-01-15"),
    (EMAIL, "bob@localhost"),
    (EMAIL, "@example.com"),
    (EMAIL, "bob@"),
    (EMAIL, "bob@.com"),
    (EMAIL, "bob@-example.com"),
    (EMAIL, "a@b.c"),
    (EMAIL, "SELECT @@version"),
    (PHONE, "14155552671"),  # no "+": as likely an order id
    (PHONE, "ORD-4155552671"),
    (PHONE, "+1234567"),  # 7 digits
    (PHONE, "+1234567890123456"),  # 16 digits
    (PHONE, "1+23456789"),  # arithmetic
    (PHONE, "+0123456789"),  # no country code starts with 0
    (PHONE, "+12345678abc"),
    (PHONE, "2024-01-15T10:00:00+01:00"),
]

ORDINARY = [
    "alice",
    "Alice O'Brien",
    "221B Baker Street, London",
    "550e8400-e29b-41d4-a716-446655440000",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "2024-01-15 10:00:00",
    "ORD-2024-000123",
    "12.50",
    "10.0.0.1",
    "https://example.com/path?q=1",
    "SELECT 1",
    "",
]


@pytest.mark.parametrize(("detector", "value"), POSITIVE)
def test_detector_finds(detector: Detector, value: str) -> None:
    assert detector.contains(value)


@pytest.mark.parametrize(("detector", "value"), NEGATIVE)
def test_detector_ignores(detector: Detector, value: str) -> None:
    assert not detector.contains(value)


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_data_is_not_sensitive(value: str) -> None:
    assert detect(value) is None


def test_every_default_detector_is_exercised() -> None:
    names = [d.name for d in DEFAULT_DETECTORS]
    assert sorted(names) == sorted({d.name for d, _ in POSITIVE}) == sorted(set(names))


def test_the_first_matching_detector_names_the_kind() -> None:
    jws_with_email = ".".join(
        (b64url_json({"alg": "HS256"}), b64url_json({"email": "bob@example.com"}), "c2ln")
    )
    assert detect(jws_with_email) == "jwt"
    assert detect("bob@example.com paid with 4111111111111111") == "card"
    assert detect("bob@example.com paid with 4111111111111111", (EMAIL, CARD)) == "email"


def test_redact_value() -> None:
    assert redact_value("bob@example.com") == ("<redacted:email>", "email")
    assert redact_value("hello") == ("hello", None)
    assert redact_value("bob@example.com", (CARD,)) == ("bob@example.com", None)
    assert marker("card") == "<redacted:card>"


def test_detectors_named() -> None:
    assert detectors_named(["phone", "card"]) == (CARD, PHONE)
    assert detectors_named([]) == ()
    with pytest.raises(ValueError, match="unknown redaction kinds \\['cards'\\]"):
        detectors_named(["cards"])


def test_detector_names_are_safe_inside_a_marker() -> None:
    with pytest.raises(ValueError):
        Detector("it's", lambda v: True)
    with pytest.raises(ValueError):
        Detector("Card", lambda v: True)


# -- the lexer -------------------------------------------------------------------------------------

SQL_CASES = [
    (
        "SELECT * FROM t WHERE email = 'bob@example.com' AND note = 'hi'",
        "SELECT * FROM t WHERE email = '<redacted:email>' AND note = 'hi'",
    ),
    (
        "INSERT INTO c VALUES ('4111 1111 1111 1111', \"DE89 3704 0044 0532 0130 00\", '+1 415 555 2671')",
        "INSERT INTO c VALUES ('<redacted:card>', \"<redacted:iban>\", '<redacted:phone>')",
    ),
    # Apostrophes in comments and identifiers do not open literals; their text is left alone.
    (
        "SELECT /* don't bob@example.com */ `it's`, 'a@b.co' -- it's x@y.com\n, 'ok' # it's\n",
        "SELECT /* don't bob@example.com */ `it's`, '<redacted:email>' -- it's x@y.com\n, 'ok' # it's\n",
    ),
    ("SELECT `a``'b`, 'bob@example.com'", "SELECT `a``'b`, '<redacted:email>'"),
    ("SELECT 1 # it's the end", "SELECT 1 # it's the end"),
    # "--" starts a comment only before whitespace or a control character.
    ("SELECT 1--'bob@example.com'", "SELECT 1--'<redacted:email>'"),
    ("SELECT 1 --\t'bob@example.com'", "SELECT 1 --\t'bob@example.com'"),
    ("SELECT 1 --", "SELECT 1 --"),
    # Executable comments and optimizer hints are SQL that runs.
    ("SELECT /*!50001 'bob@example.com' */ 1", "SELECT /*!50001 '<redacted:email>' */ 1"),
    ("SELECT /*M! 'bob@example.com' */ 1", "SELECT /*M! '<redacted:email>' */ 1"),
    # Escapes: doubled quotes, backslashes, a literal ending in a doubled quote.
    ("SELECT 'it''s bob@example.com'''", "SELECT '<redacted:email>'"),
    ("SELECT 'x''', 'bob@example.com'", "SELECT 'x''', '<redacted:email>'"),
    ("SELECT 'it\\'s', \"bob@example.com\"", "SELECT 'it\\'s', \"<redacted:email>\""),
    ("SELECT 'a\\\\', 'bob@example.com'", "SELECT 'a\\\\', '<redacted:email>'"),
    ("SELECT 'bob\\@example\\.com'", "SELECT '<redacted:email>'"),  # MySQL drops the backslash
    ('SELECT "say ""hi"" to bob@example.com"', 'SELECT "<redacted:email>"'),
    ("SELECT \"it's\", 'bob@example.com'", "SELECT \"it's\", '<redacted:email>'"),
    # Charset introducers and national strings are string literals.
    (
        "SELECT _utf8mb4'bob@example.com', N'bob@example.com', _binary'x'",
        "SELECT _utf8mb4'<redacted:email>', N'<redacted:email>', _binary'x'",
    ),
    # Hex and bit literals are not strings.
    (
        "SELECT X'4111111111111111', x'41', B'0101', 0x4111111111111111, 'bob@example.com'",
        "SELECT X'4111111111111111', x'41', B'0101', 0x4111111111111111, '<redacted:email>'",
    ),
    # Integers: only a card number, and only a whole integer.
    (
        "WHERE card = 4111111111111111 OR card = -4242424242424242",
        "WHERE card = '<redacted:card>' OR card = -'<redacted:card>'",
    ),
    (
        "WHERE n IN (4111111111111112, 411111111111, 1.4111111111111111, c4111111111111111)",
        "WHERE n IN (4111111111111112, 411111111111, 1.4111111111111111, c4111111111111111)",
    ),
    ("SELECT `4111111111111111` FROM t", "SELECT `4111111111111111` FROM t"),
    # Unterminated input: the rest is the literal, comment or identifier.
    ("SELECT 'ok', 'bob@example.com", "SELECT 'ok', '<redacted:email>"),
    ("SELECT 'bob@example.com\\", "SELECT '<redacted:email>"),
    ("SELECT 'bob@example.com''", "SELECT '<redacted:email>"),
    ("SELECT /* 'bob@example.com'", "SELECT /* 'bob@example.com'"),
    ("SELECT `x 'bob@example.com'", "SELECT `x 'bob@example.com'"),
    ("SELECT x'4111111111111111", "SELECT x'4111111111111111"),
    ("", ""),
    ("'", "'"),
]


@pytest.mark.parametrize(("sql", "expected"), SQL_CASES)
def test_redact_sql_literals(sql: str, expected: str) -> None:
    assert redact_sql_literals(sql)[0] == expected


def test_kinds_are_sorted_and_unique() -> None:
    sql = "SELECT '+14155552671', 'bob@example.com', 'alice@example.com', 4111111111111111"
    out, kinds = redact_sql_literals(sql)
    assert kinds == ["card", "email", "phone"]
    assert (
        out
        == "SELECT '<redacted:phone>', '<redacted:email>', '<redacted:email>', '<redacted:card>'"
    )


def test_no_detectors_no_change() -> None:
    sql = "SELECT 'bob@example.com', 4111111111111111"
    assert redact_sql_literals(sql, ()) == (sql, [])
    assert redact_sql_literals(sql, (PHONE,)) == (sql, [])


def test_no_backslash_escapes() -> None:
    sql = "SELECT 'C:\\', 'bob@example.com'"
    assert redact_sql_literals(sql, backslash_escapes=False) == (
        "SELECT 'C:\\', '<redacted:email>'",
        ["email"],
    )
    assert string_literals(sql, backslash_escapes=False) == ["C:\\", "bob@example.com"]
    # The documented limit: read with backslash escapes, "\'" does not close the first literal.
    assert redact_sql_literals(sql) == (sql, [])


def test_string_literals_decode_mysql_escapes() -> None:
    sql = "SELECT 'a''b', 'c\\'d', \"e\"\"f\", x'41', `g'h`, 'i\\nj\\tk\\0\\Z\\%\\_\\q\\\\'"
    assert string_literals(sql) == ["a'b", "c'd", 'e"f', "i\nj\tk\x00\x1a\\%\\_q\\"]
    assert string_literals("SELECT X'41', x'', B'0101', b'1', 0b1, 0x41, _binary'y', N'z'") == [
        "y",
        "z",
    ]


HOSTILE = {
    "quotes": "'" * 1_000_000,
    "backslashes": "'" + "\\" * 1_000_000,
    "comment openers": "/*" * 500_000,
    "line comments": "-- '\n#'\n" * 120_000,
    "at signs": "'" + "a@" * 500_000,
    "domains": "'" + "a@b." * 250_000,
    "long local part": "'" + "a" * 1_000_000 + "@",
    "long domain label": "'x@" + ("a" * 62 + "-") * 15_000,
    "digits": "'" + "4" * 1_000_000,
    "digit groups": "'" + "4111 " * 200_000,
    "bare integers": "1234567890123 " * 70_000,
    "plus signs": "'" + "+1 " * 330_000,
    "parentheses": "'" + "+12(3" * 200_000,
    "jws segments": "'" + "eyJa." * 200_000,
    "ssn pieces": "'" + "123-45-" * 150_000,
    "iban pieces": "'" + "AB12 " * 200_000,
    "crypt pieces": "'" + "$2b$12$" * 150_000,
    "sk prefixes": "'" + "sk-" * 330_000,
    "pem pieces": "'" + "-----BEGIN A B C D " * 50_000,
    "mixed": "'a' -- x\n`b` #'\n /* ' */ \"c\\\"\" x'" * 25_000,
}


@pytest.mark.parametrize("sql", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_completes(sql: str) -> None:
    # No timing assertion (it would flake); a catastrophic backtrack would hang the suite.
    out, kinds = redact_sql_literals(sql)
    assert (out, kinds) == (sql, [])


# -- properties ------------------------------------------------------------------------------------


@given(st.text(min_size=13, max_size=18, alphabet="0123456789").map(lambda s: "4" + s[1:]))
def test_luhn_catches_every_single_digit_error(payload: str) -> None:
    number = with_check_digit(payload)
    assert luhn_valid(number)
    for i, c in enumerate(number):
        wrong = str((int(c) + 1) % 10)
        assert not luhn_valid(number[:i] + wrong + number[i + 1 :])


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(IBAN_LENGTHS)))
    size = IBAN_LENGTHS[country] - 4
    bban = draw(st.text(string.digits + string.ascii_uppercase, min_size=size, max_size=size))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


@given(ibans(), st.data())
def test_iban_check_catches_a_changed_character(iban: str, data: st.DataObject) -> None:
    assert iban_valid(iban)
    assert IBAN.contains(iban)
    assert IBAN.contains(" ".join(iban[i : i + 4] for i in range(0, len(iban), 4)))
    # Mod 97 catches any change of one digit, or of one letter (two adjacent digits, 10..35);
    # a letter for a digit changes the length of the number and may go unnoticed.
    i = data.draw(st.integers(2, len(iban) - 1))
    alphabet = string.digits if iban[i].isdigit() else string.ascii_uppercase
    c = data.draw(st.sampled_from(alphabet).filter(lambda c: c != iban[i]))
    assert not iban_valid(iban[:i] + c + iban[i + 1 :])


CARD_GROUPS = {13: (4, 4, 5), 14: (4, 6, 4), 15: (4, 6, 5), 16: (4, 4, 4, 4), 17: (4, 4, 4, 5)}
CARD_GROUPS |= {18: (4, 4, 4, 6), 19: (4, 4, 4, 4, 3)}


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(13, 19))
    first = draw(st.sampled_from("23456"))
    rest = draw(st.text("0123456789", min_size=length - 2, max_size=length - 2))
    number = with_check_digit(first + rest)
    separator = draw(st.sampled_from(["", " ", "-"]))
    groups, start = [], 0
    for size in CARD_GROUPS[length]:
        groups.append(number[start : start + size])
        start += size
    return separator.join(groups) if separator else number


LABEL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
emails = st.builds(
    "{}{}@{}.{}".format,
    st.sampled_from(string.ascii_letters + string.digits),
    st.text(string.ascii_lowercase + string.digits + "._+-", max_size=12).map(
        lambda s: s + "x" if s else s
    ),
    st.lists(LABEL, min_size=1, max_size=3).map(".".join),
    st.text(string.ascii_lowercase, min_size=2, max_size=6),
)
FILLER = st.text(string.ascii_lowercase + " ", max_size=15)  # nothing any detector could match
ESCAPABLE = frozenset(string.ascii_letters + string.digits + "@.+-") - frozenset("0bnrtZ")


def quote_literal(value: str, quote: str, by_backslash: bool) -> str:
    body = value.replace("\\", "\\\\")
    body = body.replace(quote, "\\" + quote if by_backslash else quote + quote)
    return quote + body + quote


@st.composite
def secret_literals(draw: st.DrawFn) -> tuple[str, str, str]:
    """(secret, value, literal): a card or email between filler, quoted, some chars escaped."""
    secret = draw(st.one_of(card_numbers(), emails))
    quote = draw(st.sampled_from("'\""))
    # "\\c" is "c" in MySQL for these characters: detection must see the decoded value.
    escaped = "".join("\\" + c if c in ESCAPABLE and draw(st.booleans()) else c for c in secret)
    before, after = draw(FILLER), draw(FILLER)
    return secret, f"{before} {secret} {after}", f"{quote}{before} {escaped} {after}{quote}"


PLAIN = st.text("abcdefghijklmnopqrstuvwxyz0123456789 ()=<>+*.,;", max_size=12)
COMMENT_TEXT = st.text().filter(lambda s: "*/" not in s)
# A NUL ends a line comment too, as in the server's lexer.
LINE_TEXT = st.text(st.characters(exclude_characters="\n\x00"))


@st.composite
def statements(draw: st.DrawFn) -> tuple[bool, str, str, list[str]]:
    """(backslash escapes?, sql, its expected redaction, its literals' values): a random mix
    of literals (some sensitive), comments, identifiers and other text."""
    backslash = draw(st.booleans())
    sql, expected, values = [], [], []
    for _ in range(draw(st.integers(0, 8))):
        part = draw(
            st.sampled_from(["literal", "secret", "block", "line", "hash", "ident", "plain"])
        )
        if part in ("literal", "secret"):
            value = draw(secret_literals())[1] if part == "secret" else draw(st.text())
            quote = draw(st.sampled_from("'\""))
            prefix = draw(st.sampled_from(["", "_utf8mb4", "N"]))
            if backslash:
                text = quote_literal(value, quote, draw(st.booleans()))
            else:
                text = quote + value.replace(quote, quote + quote) + quote
            kind = detect(value)
            sql.append(prefix + text)
            expected.append(prefix + (text if kind is None else quote + marker(kind) + quote))
            values.append(value)
            continue
        if part == "block":
            text = "/* " + draw(COMMENT_TEXT) + " */"
        elif part == "line":
            text = "-- " + draw(LINE_TEXT) + "\n"
        elif part == "hash":
            text = "#" + draw(LINE_TEXT) + "\n"
        elif part == "ident":
            text = "`" + draw(st.text()).replace("`", "``") + "`"
        else:
            text = draw(PLAIN)
        sql.append(text)
        expected.append(text)
    return backslash, " ".join(sql), " ".join(expected), values


@given(statements())
def test_lexer_finds_exactly_the_literals(case: tuple[bool, str, str, list[str]]) -> None:
    backslash, sql, expected, values = case
    assert string_literals(sql, backslash_escapes=backslash) == values
    assert redact_sql_literals(sql, backslash_escapes=backslash)[0] == expected


@given(st.lists(st.one_of(secret_literals(), FILLER.map(lambda s: ("", s, f"'{s}'"))), max_size=6))
def test_secrets_in_literals_never_survive(parts: list[tuple[str, str, str]]) -> None:
    sql = "SELECT * FROM t WHERE " + " AND ".join(
        f"c{i} = {literal}" for i, (_, _, literal) in enumerate(parts)
    )
    out, kinds = redact_sql_literals(sql)
    assert kinds == sorted({kind for _, value, _ in parts if (kind := detect(value))})
    for secret, value, _ in parts:
        if secret:
            assert detect(value) in ("card", "email")
            assert secret not in out
            assert not any(secret in v for v in string_literals(out))


@given(st.text(st.characters(exclude_characters="'\"")))
def test_text_without_quotes_only_loses_card_integers(sql: str) -> None:
    out, kinds = redact_sql_literals(sql)
    assert kinds in ([], ["card"])
    if not kinds:
        assert out == sql


@given(st.text(st.characters(exclude_characters="'\"0123456789")))
def test_text_without_quotes_or_digits_is_unchanged(sql: str) -> None:
    assert redact_sql_literals(sql) == (sql, [])


@given(st.one_of(st.text(), statements().map(lambda case: case[1])), st.booleans())
def test_redaction_is_idempotent(sql: str, backslash_escapes: bool) -> None:
    once, _ = redact_sql_literals(sql, backslash_escapes=backslash_escapes)
    assert redact_sql_literals(once, backslash_escapes=backslash_escapes) == (once, [])


# -- size limits: literals too long to scan, text too long to record ----------------------------

_LONG_LITERALS = st.sampled_from(
    [
        ("'", "'"),  # a string
        ('"', '"'),  # a string without ANSI_QUOTES
        ("N'", "'"),  # a national string
        ("X'", "'"),  # a hex string
        ("0x", ""),  # a hex number
        ("", ""),  # a number
    ]
)


@given(
    _LONG_LITERALS,
    st.integers(65, 400),
    st.sampled_from(["SELECT {} AS x", "/*!50000 SELECT {} */", "INSERT INTO t VALUES (1, {})"]),
)
def test_a_literal_over_the_limit_is_recorded_as_oversize(
    shape: tuple[str, str], size: int, template: str
) -> None:
    from hoopy.audit.redact import redact_statement

    opener, closer = shape
    body = (
        "7" * size if opener in ("", "0x") else "4f" * (size // 2) if opener == "X'" else "a" * size
    )
    sql = template.format(opener + body + closer)
    recorded = redact_statement(sql.encode(), (), max_literal_bytes=64)
    assert body not in recorded.sql
    assert "<redacted:oversize>" in recorded.sql
    assert recorded.kinds == ["oversize"]
    # Under the limit, nothing happens to it.
    assert redact_statement(sql.encode(), (), max_literal_bytes=size + 10).sql == sql


def test_an_oversize_literal_is_not_scanned_and_what_follows_still_is() -> None:
    from hoopy.audit.redact import redact_statement

    key = "AKIA" + "A" * 16  # an AWS key id, after a literal too long to scan
    sql = f"SELECT '{'z' * 1000}', '{key}'"
    recorded = redact_statement(sql.encode(), detectors_named(["secrets"]), max_literal_bytes=100)
    assert recorded.sql == "SELECT '<redacted:oversize>', '<redacted:aws_key>'"
    assert recorded.kinds == ["aws_key", "oversize"]


@given(
    st.text(min_size=0, max_size=200),
    st.integers(1, 120),
    st.booleans(),
)
def test_text_is_cut_on_a_character_boundary(text: str, limit: int, with_secret: bool) -> None:
    from hoopy.audit.redact import redact_statement

    key = "AKIA" + "B" * 16
    sql = f"SELECT '{key}', {text!r}" if with_secret else text
    data = sql.encode("utf-8", "surrogatepass")
    detectors = detectors_named(["secrets"])
    full = redact_statement(data, detectors)
    cut = redact_statement(data, detectors, max_text_bytes=limit)
    encoded = full.sql.encode("utf-8", "surrogatepass")
    assert cut.truncated == (len(encoded) > limit)
    assert len(cut.sql.encode("utf-8", "surrogatepass")) <= limit
    assert full.sql.startswith(cut.sql)
    if not cut.truncated:
        assert cut.sql == full.sql
    else:
        # As much as fits: the next character would not have.
        rest = full.sql[len(cut.sql) :]
        assert (
            len(cut.sql.encode("utf-8", "surrogatepass"))
            + len(rest[0].encode("utf-8", "surrogatepass"))
            > limit
        )
    assert key not in cut.sql
    assert cut.kinds == full.kinds


def test_a_huge_statement_stays_cheap_to_record() -> None:
    # One 8 MiB literal: not decoded, not scanned, not copied into the record.
    from hoopy.audit.redact import redact_statement

    data = b"SELECT LENGTH('" + b"a" * (8 << 20) + b"')"
    recorded = redact_statement(
        data, detectors_named(["secrets", "personal"]), max_literal_bytes=16384, max_text_bytes=4096
    )
    assert recorded.sql == "SELECT LENGTH('<redacted:oversize>')"
    assert not recorded.truncated


@pytest.mark.parametrize("slack", [-37, -20, -1, 0, 1, 40])
def test_cutting_nested_sql_rewrites_agrees_with_the_full_text(slack: int) -> None:
    # A literal holding SQL is rewritten (its credential replaced inside it, requoted): that
    # can grow the text by more than a marker, so it always takes the measuring path.
    from hoopy.audit.redact import redact_statement

    sql = b"PREPARE s FROM 'CREATE USER u IDENTIFIED BY \\'Secret-1\\''"
    full = redact_statement(sql, ())
    limit = len(full.sql.encode()) + slack
    cut = redact_statement(sql, (), max_text_bytes=limit)
    assert "Secret-1" not in cut.sql
    assert cut.truncated == (slack < 0)
    assert full.sql.startswith(cut.sql) and len(cut.sql.encode()) <= limit


# Short statements built from what decides redaction: quotes, backslashes, digit runs, hex
# and bit prefixes, credential keywords in any case, comments and executable comments.
_PIECES = st.sampled_from(
    [
        "SELECT ", "c ", "FROM t ", "WHERE id=", "4321", "1234567890123", "4111111111111111",
        "'", '"', "\\", "0x41", "0b1", "X'41'", "PassWord", "IDENTIFIED BY ", "aes_encrypt(",
        "/*!", "*/", "-- ", "\n", "#", "é", "ENCODE(", "x@example.com", " ", ",",
    ]
)


@given(
    sql=st.lists(_PIECES, max_size=14).map("".join),
    limit=st.none() | st.integers(min_value=0, max_value=80),
    literal=st.none() | st.integers(min_value=0, max_value=20),
)
def test_the_fast_path_records_what_the_full_path_does(
    sql: str, limit: int | None, literal: int | None
) -> None:
    """redact_statement's one-scan fast path (most statements) against its full path."""
    from hoopy.audit import redact

    data = sql.encode("utf-8")
    fast = redact.redact_statement(data, max_text_bytes=limit, max_literal_bytes=literal)
    with mock.patch.object(redact, "_PLAIN_MAX", -1):  # every statement: the full path
        full = redact.redact_statement(data, max_text_bytes=limit, max_literal_bytes=literal)
    assert fast == full
