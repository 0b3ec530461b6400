"""Redacting string literals that look like secrets or personal data, before they are audited.

The audit log records SQL text and prepared-statement parameters. With redaction switched on,
every string literal of a statement (and every string parameter) is checked by a list of
``Detector`` objects; a literal in which one of them finds something is replaced whole by
``'<redacted:KIND>'``. Kinds, in the order they are tried (the first that matches names the
marker):

- ``private_key``: a PEM ``-----BEGIN ... PRIVATE KEY-----`` line (RFC 7468; also OpenSSH, PGP).
- ``jwt``: a JWS compact serialization (RFC 7515 section 7.1) whose first segment decodes to a
  JSON object with ``"alg"``: a bearer token for whoever reads the log.
- ``aws_key``: an AWS access key id (``AKIA``/``ASIA`` and 16 upper-case letters or digits).
- ``api_token``: tokens with a vendor prefix (GitHub ``ghp_``/``gho_``/``ghu_``/``ghs_``/
  ``ghr_``/``github_pat_``, Slack ``xox?-``, Stripe ``sk_``/``rk_`` live and test, OpenAI and
  Anthropic ``sk-``, GitLab ``glpat-``, Google ``AIza``, npm ``npm_``, PyPI ``pypi-AgE``).
  Vendors add these prefixes precisely so that scanners can find them without false positives.
- ``password_hash``: crypt-style hashes (bcrypt, argon2, sha-crypt, md5-crypt, yescrypt), Django
  PBKDF2 and MySQL ``mysql_native_password`` (``*`` and 40 hex digits): offline-crackable.
- ``card``: 13 to 19 digits, bare or in groups separated by spaces or dashes, starting with a
  payment-network digit (2 to 6, ISO/IEC 7812 major industry identifiers of Visa, Mastercard,
  Amex, Discover, JCB, UnionPay...) and passing the Luhn check: PCI DSS forbids logging them.
- ``iban``: an IBAN of the registered length for its country (ISO 13616 registry), compact or
  in groups of four, with valid mod-97 check digits (ISO 7064).
- ``ssn``: a US social security number written ``AAA-GG-SSSS``, without the never-issued areas
  000, 666 and 900-999, group 00 or serial 0000.
- ``email``: ``local@domain.tld`` (RFC 5321-ish, ASCII; a ``xn--`` top-level domain is allowed).
- ``phone``: an E.164 number: ``+``, a country code not starting with 0 and 8 to 15 digits in
  all, which may be grouped by spaces, dashes, dots or parentheses.

The formats are chosen to be precise rather than broad: checksums (Luhn, mod-97), structural
checks (a JWT header is decoded), registered prefixes and lengths keep random order ids,
hashes and timestamps from being redacted, which would make the log useless for the
investigations it exists for. Deliberately not detected, because no pattern tells them apart
from ordinary data: names, postal addresses, dates of birth, free-form passwords (the
credential literals of account statements are redacted from their syntax, by
``hoopy.sql.credentials``), AWS secret access keys and other unprefixed high-entropy strings
(as random as a SHA-1 or a UUID), phone numbers without ``+`` (as digit-shaped as an order
id), national ids other than the US SSN, IP addresses (personal data, but the log needs
them), and card numbers of other industries (airlines' ``1``, fuel cards ``7``...).

Statements are read by the gateway's one MySQL lexer (``hoopy.sql.lexer``), so comments,
backquoted identifiers and hex or bit literals cannot desynchronise the scan, and
executable comments are read as the server reads them. ``redact_statement`` (what the audit
records) redacts under every reading of the text: backslash escapes on and off
(``NO_BACKSLASH_ESCAPES``, or a backslash that is the second byte of a GBK character), ``"``
as a string and as an ``ANSI_QUOTES`` identifier, executable comments and hints run or not;
a literal sensitive under any reading is replaced. It also replaces credential literals,
found from the statement's syntax (``hoopy.sql.credentials``). Integer literals of 13
digits or more are checked too (a card number is often stored in a ``BIGINT``); one that
matches is replaced by the *string* ``'<redacted:card>'``: the statement in the log no
longer means what was run, which is the point of redacting it. Known limits: data in
comments and identifiers is never redacted; a secret split over adjacent literals (``'4111'
'1111...'``) is not seen whole.

This is hygiene for the log, not a security boundary for personal data: the patterns catch
the common forms. Every pattern is bounded or possessive (no catastrophic backtracking) and
the lexer is linear. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from hoopy.sql import credentials, lexer


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive data: ``contains(value)`` says whether ``value`` holds any."""

    name: str
    contains: Callable[[str], bool]

    def __post_init__(self) -> None:
        # The name goes inside a quoted marker; keeping it to [a-z0-9_] means a marker never
        # needs escaping and is never itself detected, so redaction is idempotent.
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"detector name must be lower-case [a-z0-9_]: {self.name!r}")


def marker(kind: str) -> str:
    """What a redacted value is replaced by (inside the literal's own quotes in SQL)."""
    return f"<redacted:{kind}>"


# -- detectors -----------------------------------------------------------------------------------

_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----")


def _contains_private_key(value: str) -> bool:
    return "PRIVATE KEY" in value and _PRIVATE_KEY.search(value) is not None


# Three base64url segments; the header is a JSON object, so its encoding starts with "eyJ"
# (base64 of '{"'). Not preceded or followed by another segment: a JWE has five.
_B64URL = r"[A-Za-z0-9_-]"
_JWS = re.compile(
    rf"(?<!{_B64URL})(?<!{_B64URL}\.)(eyJ{_B64URL}*+)\.{_B64URL}*+\.{_B64URL}*+"
    rf"(?!{_B64URL}|\.{_B64URL})"
)


def _is_jose_header(segment: str) -> bool:
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return False
    return isinstance(header, dict) and "alg" in header


def _contains_jwt(value: str) -> bool:
    return "eyJ" in value and any(_is_jose_header(m.group(1)) for m in _JWS.finditer(value))


_AWS_KEY = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")


def _contains_aws_key(value: str) -> bool:
    return ("AKIA" in value or "ASIA" in value) and _AWS_KEY.search(value) is not None


# Each vendor's documented token shape; a trailing bound only where the length is fixed.
_API_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"gh[pousr]_[A-Za-z0-9]{36}(?![A-Za-z0-9_])"  # GitHub classic: 30 random + 6 CRC32
    r"|github_pat_[A-Za-z0-9_]{50,255}"  # GitHub fine-grained: 22 + "_" + 59
    r"|xox[abeoprs]-[0-9]{1,20}-[A-Za-z0-9-]{8,255}"  # Slack bot, user, app, refresh...
    r"|[rs]k_(?:live|test)_[A-Za-z0-9]{16,255}"  # Stripe secret and restricted keys
    r"|sk-(?P<sk>[A-Za-z0-9_-]{32,255})"  # OpenAI (sk-, sk-proj-), Anthropic (sk-ant-)
    r"|glpat-[A-Za-z0-9_-]{20,255}"  # GitLab personal access token
    r"|AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"  # Google API key
    r"|npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"  # npm access token
    r"|pypi-AgE[A-Za-z0-9_-]{50,255}"  # PyPI: a macaroon, always "AgE" first
    r")"
)
_TOKEN_PREFIXES = ("gh", "github_pat_", "xox", "k_", "sk-", "glpat-", "AIza", "npm_", "pypi-")


def _is_api_token(match: re.Match[str]) -> bool:
    tail = match.group("sk")
    if tail is None:
        return True
    # "sk-" also starts slugs ("sk-winter-jacket-..."); real keys mix cases and digits.
    return (
        any(c.isupper() for c in tail)
        and any(c.islower() for c in tail)
        and any(c.isdigit() for c in tail)
    )


def _contains_api_token(value: str) -> bool:
    return any(p in value for p in _TOKEN_PREFIXES) and any(
        _is_api_token(m) for m in _API_TOKEN.finditer(value)
    )


_PASSWORD_HASH = re.compile(
    r"\$2[abxy]?\$[0-9]{2}\$[./A-Za-z0-9]{53}"  # bcrypt
    r"|\$argon2(?:id|i|d)\$(?:v=[0-9]{1,4}\$)?m=[0-9]{1,10},t=[0-9]{1,10},p=[0-9]{1,3}"
    r"\$[A-Za-z0-9+/]{8,1024}\$[A-Za-z0-9+/]{16}"  # argon2 (PHC string format)
    r"|\$[156]\$(?:rounds=[0-9]{1,9}\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{22}"  # md5/sha-crypt
    r"|\$y\$[./A-Za-z0-9]{1,64}\$[./A-Za-z0-9]{1,128}\$[./A-Za-z0-9]{43}"  # yescrypt
    r"|pbkdf2_sha(?:1|256|512)\$[0-9]{1,9}\$[^$\s]{1,128}\$[A-Za-z0-9+/=]{20}"  # Django
    r"|(?<![0-9A-Za-z*])\*[0-9A-F]{40}(?![0-9A-Za-z])"  # MySQL mysql_native_password
)


def _contains_password_hash(value: str) -> bool:
    return ("$" in value or "*" in value) and _PASSWORD_HASH.search(value) is not None


# 13-19 digits: bare, or a 4-digit group then 3-6 digit groups with one consistent separator
# (4-4-4-4, Amex 4-6-5, Diners 4-6-4, 4-4-4-4-3).
_CARD = re.compile(
    r"(?<![0-9])[2-6](?:[0-9]{12,18}|[0-9]{3}([ -])[0-9]{3,6}(?:\1[0-9]{3,6}){1,3})(?![0-9])"
)
_NOT_DIGIT = re.compile(r"[^0-9]")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of ISO/IEC 7812-1 annex B, over a string of ASCII digits."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _contains_card(value: str) -> bool:
    for m in _CARD.finditer(value):
        digits = _NOT_DIGIT.sub("", m.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


# The IBAN registry (SWIFT, ISO 13616): the length of each country's IBAN.
# fmt: off
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
# fmt: on
# Compact, or the print format of ISO 13616: groups of four separated by one space.
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}"
    r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?![A-Za-z0-9])"
)


def iban_valid(iban: str) -> bool:
    """Registered length and ISO 7064 mod 97-10 check digits of a compact upper-case IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not 2 <= int(iban[2:4]) <= 98:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _contains_iban(value: str) -> bool:
    return any(iban_valid(m.group(0).replace(" ", "")) for m in _IBAN.finditer(value))


_SSN = re.compile(
    r"(?<![0-9-])(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![0-9]|-[0-9])"
)


def _contains_ssn(value: str) -> bool:
    return "-" in value and _SSN.search(value) is not None


# RFC 5321 section 4.5.3.1: a domain label is at most 63 octets; RFC 1035: letters, digits
# and inner hyphens. The local part is only required to end in an ordinary character.
_EMAIL_LOCAL_END = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_%+-")
_EMAIL_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
    r"(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9-]{1,59})(?![A-Za-z0-9-])"
)


def _contains_email(value: str) -> bool:
    # Anchored at each "@" rather than searched for: a search for a local part would rescan
    # every long run of word characters and be quadratic.
    at = value.find("@", 1)
    while at != -1:
        if value[at - 1] in _EMAIL_LOCAL_END and _EMAIL_DOMAIN.match(value, at + 1):
            return True
        at = value.find("@", at + 1)
    return False


# ITU-T E.164: a country code (never starting with 0) and at most 15 digits in all. Groups may
# be separated by one space, dash or dot, or parenthesised: "+1 (415) 555-2671".
# An atomic group, not a possessive repeat of the group: see hoopy/sql/lexer.py, _BORING.
_PHONE = re.compile(r"(?<![\w+])\+[1-9][0-9]*+(?>(?:[ .-]?+(?:\([0-9]++\)|[0-9]++))*)(?!\w)")


def _contains_phone(value: str) -> bool:
    return "+" in value and any(
        8 <= sum(c.isdigit() for c in m.group(0)) <= 15 for m in _PHONE.finditer(value)
    )


PRIVATE_KEY = Detector("private_key", _contains_private_key)
JWT = Detector("jwt", _contains_jwt)
AWS_KEY = Detector("aws_key", _contains_aws_key)
API_TOKEN = Detector("api_token", _contains_api_token)
PASSWORD_HASH = Detector("password_hash", _contains_password_hash)
CARD = Detector("card", _contains_card)
IBAN = Detector("iban", _contains_iban)
SSN = Detector("ssn", _contains_ssn)
EMAIL = Detector("email", _contains_email)
PHONE = Detector("phone", _contains_phone)

# Most specific first: a JWT carrying an email is a "jwt".
DEFAULT_DETECTORS: tuple[Detector, ...] = (
    PRIVATE_KEY,
    JWT,
    AWS_KEY,
    API_TOKEN,
    PASSWORD_HASH,
    CARD,
    IBAN,
    SSN,
    EMAIL,
    PHONE,
)


# Groups for ``[audit] redact``: credentials that must never be in a log, and data about
# people, which is the database's business and redacted only when asked.
GROUPS: dict[str, tuple[str, ...]] = {
    "secrets": ("private_key", "jwt", "aws_key", "api_token", "password_hash"),
    "personal": ("card", "iban", "ssn", "email", "phone"),
}


def detectors_named(names: Iterable[str]) -> tuple[Detector, ...]:
    """The built-in detectors with these names or group names (``secrets``, ``personal``),
    in precedence order. Raises ValueError naming what is unknown."""
    wanted = {kind for name in names for kind in GROUPS.get(name, (name,))}
    known = {d.name for d in DEFAULT_DETECTORS}
    if unknown := wanted - known:
        raise ValueError(
            f"unknown redaction kinds {sorted(unknown)}; known are the groups "
            f"{sorted(GROUPS)} and the kinds {sorted(known)}"
        )
    return tuple(d for d in DEFAULT_DETECTORS if d.name in wanted)


def detect(value: str, detectors: Sequence[Detector] = DEFAULT_DETECTORS) -> str | None:
    """The name of the first detector that finds something in ``value``, or None."""
    for detector in detectors:
        if detector.contains(value):
            return detector.name
    return None


def redact_value(
    value: str, detectors: Sequence[Detector] = DEFAULT_DETECTORS
) -> tuple[str, str | None]:
    """``(marker, kind)`` if ``value`` (say, a statement parameter) is sensitive, else
    ``(value, None)``."""
    kind = detect(value, detectors)
    return (value, None) if kind is None else (marker(kind), kind)


# -- statements ----------------------------------------------------------------------------------

# An integer literal this long may be a card number; shorter ones are not even checked (bulk
# INSERTs are full of small integers).
MIN_CHECKED_INTEGER_DIGITS = 13

CREDENTIAL = credentials.CREDENTIAL


class RedactedStatement(NamedTuple):
    sql: str  # the text to record
    kinds: list[str]  # sorted kinds replaced ("credential" for credential literals)
    credential_bearing: bool  # credential syntax: a prepared statement's parameters are secret
    truncated: bool = False  # ``sql`` is cut at max_text_bytes


OVERSIZE = "oversize"  # a literal too long to record (or to scan): [audit] max_value_bytes


def _literal_check(
    detectors: Sequence[Detector], max_literal_bytes: int | None = None
) -> credentials.LiteralCheck:
    """The detectors as a lexer callback: a literal's replacement kind, or None.

    A literal longer than ``max_literal_bytes`` as written is ``oversize``: it is recorded as
    a marker, not scanned (the cost of a detector grows with the value; parameters are cut
    at the same limit).
    """

    def check(data: bytes, token: lexer.Token, reading: lexer.Reading) -> str | None:
        if max_literal_bytes is not None and token.end - token.start > max_literal_bytes:
            return OVERSIZE
        if not detectors:
            return None
        if token.kind is lexer.STRING:
            value = lexer.string_value(data, token, reading).decode("utf-8", "surrogateescape")
            return detect(value, detectors)
        if (
            token.kind is lexer.NUMBER
            and token.end - token.start >= MIN_CHECKED_INTEGER_DIGITS
            and data[token.start - 1 : token.start] != b"."  # t.123...: a column name
        ):
            word = data[token.start : token.end]
            if word.isdigit():
                return detect(word.decode("ascii"), detectors)
        return None

    return check


def _replacement(data: bytes, span: credentials.Span) -> str:
    if span.replacement is not None:
        return span.replacement.decode("utf-8", "surrogateescape")
    quote = data[span.start : span.start + 1]
    if span.kind != CREDENTIAL and quote in (b"'", b'"'):
        # A detector's literal keeps its quote character, and stays unterminated if it was.
        return quote.decode() + marker(span.kind) + (quote.decode() if span.closed else "")
    if span.kind != CREDENTIAL and quote in (b"n", b"N"):
        return "N'" + marker(span.kind) + "'"
    return "'" + marker(span.kind) + "'"


_MARKER_GROWTH = 32  # '<redacted:password_hash>' for a 13-digit number is 14 bytes longer


def _render(
    data: bytes, spans: Sequence[credentials.Span], errors: str, limit: int | None = None
) -> tuple[str, bool]:
    """The text with ``spans`` replaced; with ``limit``, cut to at most that many bytes of
    UTF-8 (on a character boundary), and whether it was cut. Only the part kept is decoded."""
    # A marker is at most _MARKER_GROWTH bytes longer than what it replaces: most statements
    # are short enough never to need the cutting path. (Rewritten nested SQL may grow more.)
    if not spans and (limit is None or len(data) <= limit):
        return data.decode("utf-8", errors), False
    if limit is None or (
        len(data) + _MARKER_GROWTH * len(spans) <= limit
        and all(span.replacement is None for span in spans)
    ):
        pieces: list[str] = []
        done = 0
        for span in spans:
            pieces += (data[done : span.start].decode("utf-8", errors), _replacement(data, span))
            done = span.end
        pieces.append(data[done:].decode("utf-8", errors))
        return "".join(pieces), False
    out = bytearray()
    done = 0
    for i in range(len(spans) + 1):
        cut = spans[i] if i < len(spans) else None
        end = len(data) if cut is None else cut.start
        out += data[done : min(end, done + limit + 1 - len(out))]
        if cut is not None and len(out) <= limit:
            out += _replacement(data, cut).encode("utf-8", "surrogateescape")
            done = cut.end
        if len(out) > limit:
            return _cut_utf8(out, limit).decode("utf-8", errors), True
    return out.decode("utf-8", errors), False


def _cut_utf8(data: bytearray, limit: int) -> bytes:
    """``data`` cut to at most ``limit`` bytes, without a partial UTF-8 sequence at the end."""
    end = limit
    start = end
    while start > 0 and end - start < 3 and data[start - 1] & 0xC0 == 0x80:
        start -= 1  # back over continuation bytes to the sequence's lead byte
    if start > 0:
        lead = data[start - 1]
        need = (
            2
            if lead >> 5 == 0b110
            else 3
            if lead >> 4 == 0b1110
            else 4
            if lead >> 3 == 0b11110
            else 1
        )
        if end - (start - 1) < need:
            end = start - 1  # the last sequence is incomplete: drop it
    return bytes(data[:end])


_QUOTES_OR_DIGITS = re.compile(rb"['\"]|[0-9]{%d}" % MIN_CHECKED_INTEGER_DIGITS)
# Literals without quotes that can be long: 0x4142..., 0b0101... (X'..' and B'..' have quotes).
_HEX_OR_BIT = re.compile(rb"0[xXbB]")


# What sends a statement past the fast path of ``redact_statement``: everything any of its
# three tests looks for (quotes, and the backslash ``may_carry_credentials`` strips first).
_NEEDS_A_LOOK = re.compile(rb"['\"\\]|[0-9]{%d}|0[xXbB]" % MIN_CHECKED_INTEGER_DIGITS)
_PLAIN_MAX = credentials.SHORT


def redact_statement(
    data: bytes,
    detectors: Sequence[Detector] = DEFAULT_DETECTORS,
    server: lexer.ServerVersion | None = None,
    *,
    max_literal_bytes: int | None = None,
    max_text_bytes: int | None = None,
    multibyte: bool = False,
) -> RedactedStatement:
    """The text of a statement (``COM_QUERY``, ``COM_STMT_PREPARE``) as the audit records it.

    Credential literals (``hoopy.sql.credentials``) are always replaced by
    ``'<redacted:credential>'``; literals in which ``detectors`` find something by
    ``'<redacted:KIND>'``, and literals longer than ``max_literal_bytes`` (as written) by
    ``'<redacted:oversize>'``. All are looked for under every reading of the text (each
    ``sql_mode`` quoting, executable comments run or not), so that no reading of what is
    recorded shows what one of them hides (``multibyte``: also as a multibyte client
    character set reads it, ``lexer.MULTIBYTE_CHARSETS``). Invalid UTF-8 is recorded as U+FFFD. With
    ``max_text_bytes`` the text is cut to at most that many bytes of UTF-8 (``truncated``).
    """
    if (
        len(data) <= _PLAIN_MAX
        and (max_text_bytes is None or len(data) <= max_text_bytes)
        and _NEEDS_A_LOOK.search(data) is None
        and not credentials.mentions_trigger(data)
    ):
        # No quote, backslash, long digit run, hex/bit prefix or credential keyword: nothing
        # below can apply (most statements; one scan instead of three).
        return RedactedStatement(data.decode("utf-8", "replace"), [], False, False)
    mentions = credentials.may_carry_credentials(data)
    long_literals = max_literal_bytes is not None and len(data) > max_literal_bytes
    if not (
        mentions
        or (
            (detectors or long_literals)
            and lexer.search(_QUOTES_OR_DIGITS, data, MIN_CHECKED_INTEGER_DIGITS)
        )
        or (long_literals and lexer.search(_HEX_OR_BIT, data, 2))
    ):
        text, truncated = _render(data, (), "replace", max_text_bytes)
        return RedactedStatement(text, [], False, truncated)
    check = _literal_check(detectors, max_literal_bytes) if detectors or long_literals else None
    found = credentials.find_credentials(
        data, server, check_literal=check, mentions_credentials=mentions, multibyte=multibyte
    )
    text, truncated = _render(data, found.spans, "replace", max_text_bytes)
    return RedactedStatement(text, sorted(found.kinds), found.bearing, truncated)


def _one_reading(sql: str, backslash_escapes: bool) -> tuple[bytes, lexer.Reading]:
    reading = lexer.Reading(backslash_escapes, executable=lexer.Executable.CODE)
    return sql.encode("utf-8", "surrogatepass"), reading


def string_literals(sql: str, *, backslash_escapes: bool = True) -> list[str]:
    """The values of the string literals of ``sql`` under one reading (executable comments
    and hints read as code), in order; hex and bit literals aside."""
    data, reading = _one_reading(sql, backslash_escapes)
    return [
        lexer.string_value(data, t, reading).decode("utf-8", "surrogatepass")
        for t in lexer.code_tokens(data, reading)
        if t.kind is lexer.STRING
    ]


def redact_sql_literals(
    sql: str,
    detectors: Sequence[Detector] = DEFAULT_DETECTORS,
    *,
    backslash_escapes: bool = True,
) -> tuple[str, list[str]]:
    """Replace each sensitive string literal (and card-number integer) of ``sql`` by a marker,
    under one reading of the quoting (``backslash_escapes=False`` for
    ``NO_BACKSLASH_ESCAPES``); executable comments and hints are read as code.

    Returns the new text and the sorted kinds replaced. A literal keeps its quote character
    (``"<redacted:email>"``); an unterminated one stays unterminated; an integer becomes
    ``'<redacted:card>'``. The audit uses ``redact_statement``, which also redacts
    credentials and reads the text every way it can be read.
    """
    if not detectors:
        return sql, []
    data, reading = _one_reading(sql, backslash_escapes)
    if _QUOTES_OR_DIGITS.search(data) is None:
        return sql, []  # nothing to check (most statements): skip the lexer
    check = _literal_check(detectors)
    spans = [
        credentials.Span(t.start, t.end, kind, None, t.closed)
        for t in lexer.tokenize(data, reading, literals_only=True)
        if t.kind in lexer.LITERALS and (kind := check(data, t, reading)) is not None
    ]
    if not spans:
        return sql, []
    return _render(data, spans, "surrogatepass")[0], sorted({s.kind for s in spans})
