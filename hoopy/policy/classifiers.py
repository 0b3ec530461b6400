"""Content classifiers for masking: what a value looks like, whatever column it comes from.

One set of detectors serves the audit's redaction and masking (hoopy/audit/redact.py: private
keys, JWTs, AWS keys, vendor API tokens, password hashes, Luhn-checked card numbers, IBANs, US
SSNs, email addresses, E.164 phone numbers). Masking adds ``ip`` (IPv4 and IPv6 addresses,
which the audit keeps: it needs them) and custom regular expressions. Group names are the
audit's: ``secrets``, ``personal``; ``all`` is every built-in kind.

Pure. Custom patterns are compiled here, with a bounded length; classifiers run on values of
at most ``MAX_CLASSIFIED_BYTES``: a longer value is masked outright by a rule that
classifies, since hoopy does not scan it (fail closed).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final

from hoopy.audit.redact import DEFAULT_DETECTORS, GROUPS, Detector

# Values longer than this are not scanned: a classifying rule masks them whole.
MAX_CLASSIFIED_BYTES: Final = 64 * 1024
MAX_PATTERN_CHARS: Final = 512

_IPV4 = re.compile(r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")


def _contains_ip(value: str) -> bool:
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(value):
            try:
                ipaddress.ip_address(m.group(0))
            except ValueError:
                continue
            return True
    return False


IP = Detector("ip", _contains_ip)
BUILTIN: Final = {d.name: d for d in (*DEFAULT_DETECTORS, IP)}
CLASSIFIER_GROUPS: Final = {**GROUPS, "all": tuple(BUILTIN)}


def classifiers_named(names: Iterable[str]) -> tuple[Detector, ...]:
    """The built-in classifiers with these names or group names, in precedence order.
    Raises ValueError naming what is unknown."""
    wanted = {kind for name in names for kind in CLASSIFIER_GROUPS.get(name, (name,))}
    if unknown := wanted - set(BUILTIN):
        raise ValueError(
            f"unknown classifiers {sorted(unknown)}; known are the groups "
            f"{sorted(CLASSIFIER_GROUPS)} and {sorted(BUILTIN)}"
        )
    return tuple(d for name, d in BUILTIN.items() if name in wanted)


def pattern_classifier(index: int, pattern: str) -> Detector:
    """A custom classifier: the value holds a match of ``pattern`` (Python syntax). Raises
    ValueError for a pattern that does not compile or is too long."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"a pattern is at most {MAX_PATTERN_CHARS} characters")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from None
    if compiled.search("") is not None:
        raise ValueError(f"pattern {pattern!r} matches the empty string: it would mask all")
    return Detector(f"pattern_{index}", lambda value: compiled.search(value) is not None)


def classify(value: str, detectors: Iterable[Detector]) -> str | None:
    """The first classifier that finds something in ``value``, or None."""
    for d in detectors:
        if d.contains(value):
            return d.name
    return None
