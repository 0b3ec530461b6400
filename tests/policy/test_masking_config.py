"""``[masking.NAME]`` in the config (config/masking.py), the classifiers (policy/classifiers.py)
and which masking a session gets (``masking_for``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopy.config.loader import ConfigError, format_password_hash, load_config
from hoopy.config.masking import masking_for
from hoopy.policy.classifiers import IP, classifiers_named, pattern_classifier
from hoopy.policy.masking import (
    ColumnPattern,
    Masker,
    MaskingPolicy,
    MaskingRule,
    Probe,
    Strategy,
)
from hoopy.wire.rows import ColumnDefinition, encode_column_definition, encode_text_row

BASE = """\
[[listeners]]
target = "app"
tcp = "127.0.0.1:3307"

[targets.app]
host = "db.internal"
login = "gateway_users"
user = "hoopy"
password_env = "APP_DB_PASSWORD"
masking = ["pii"]

[users.alice]
password_hash = "{hash}"
groups = ["dev"]

[roles.dev]
groups = ["dev"]
targets = ["app"]

[roles.dba]
groups = ["dba"]
targets = ["app"]
masking_exempt = true

[roles.support]
groups = ["support"]
targets = ["app"]
masking = ["extra"]

[masking.pii]
hmac_key_env = "TEST_MASK_KEY"

[[masking.pii.rules]]
name = "emails"
columns = ["*.email"]
strategy = "hmac"

[[masking.pii.rules]]
name = "ssn"
columns = "*ssn*"
strategy = "redact"
replacement = "xxx"
probe = "deny"

[masking.extra]
[[masking.extra.rules]]
name = "found"
classifiers = ["personal", "ip"]
patterns = ["EMP-[0-9]{6}"]
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "hoopy.toml"
    path.write_text(text.replace("{hash}", format_password_hash(b"pw")))
    return load_config(path)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MASK_KEY", "k" * 32)
    monkeypatch.setenv("APP_DB_PASSWORD", "x")


def test_sets_rules_and_which_session_gets_what(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE)
    rules = cfg.masking["pii"].rules  # type: ignore[attr-defined]
    assert [r.name for r in rules] == ["pii/emails", "pii/ssn"]
    assert rules[0].masker.strategy is Strategy.HMAC and rules[0].masker.key == b"k" * 32
    assert rules[1].masker.replacement == "xxx" and rules[1].probe is Probe.DENY
    found = cfg.masking["extra"].rules[0]  # type: ignore[attr-defined]
    assert found.classifying and str(found.columns[0]) == "*"
    dev = masking_for(cfg, "app", ["dev"])  # type: ignore[arg-type]
    assert dev is not None and [r.name for r in dev.rules] == ["pii/emails", "pii/ssn"]
    support = masking_for(cfg, "app", ["dev", "support"])  # type: ignore[arg-type]
    assert support is not None and [r.name for r in support.rules][-1] == "extra/found"
    assert masking_for(cfg, "app", ["dev", "dba"]) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('strategy = "hmac"', 'strategy = "scramble"'), "must be one of redact"),
        (('hmac_key_env = "TEST_MASK_KEY"', 'hmac_key_env = "NOT_SET_ANYWHERE"'), "cannot be read"),
        (('hmac_key_env = "TEST_MASK_KEY"\n', ""), "needs a key"),
        (('columns = ["*.email"]', 'columns = ["a..b"]'), "column pattern"),
        (('columns = ["*.email"]', "columns = []"), "at least one column pattern"),
        (('replacement = "xxx"', "keep = 2"), 'only strategy = "keep_last"'),
        (('probe = "deny"', 'probe = "sometimes"'), 'must be "allow" or "deny"'),
        (('classifiers = ["personal", "ip"]', 'classifiers = ["dna"]'), "unknown classifiers"),
        (("EMP-[0-9]{6}", "EMP-["), "does not compile"),
        (("EMP-[0-9]{6}", "x*"), "matches the empty string"),
        (('masking = ["pii"]', 'masking = ["nope"]'), "no masking set named 'nope'"),
        (("masking_exempt = true", 'masking_exempt = ["other"]'), "not one of this role's targets"),
        (('name = "ssn"', 'name = "emails"'), "a second rule named"),
    ],
)
def test_config_errors_are_located(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, BASE.replace(*edit, 1))


def test_short_keys_and_open_key_files_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_MASK_KEY", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load(tmp_path, BASE)
    key = tmp_path / "mask.key"
    key.write_text("k" * 32)
    os.chmod(key, 0o644)
    text = BASE.replace('hmac_key_env = "TEST_MASK_KEY"', f'hmac_key_file = "{key}"')
    with pytest.raises(ConfigError, match="open to other users"):
        load(tmp_path, text)
    os.chmod(key, 0o600)
    cfg = load(tmp_path, text)
    assert cfg.masking["pii"].rules[0].masker.key == b"k" * 32  # type: ignore[attr-defined]


def test_classifier_names_groups_and_ip() -> None:
    assert [d.name for d in classifiers_named(["secrets"])][:2] == ["private_key", "jwt"]
    assert {d.name for d in classifiers_named(["all"])} >= {"email", "card", "ip", "jwt"}
    with pytest.raises(ValueError, match="unknown classifiers"):
        classifiers_named(["nope"])
    for found in ("10.0.0.1", "from 192.168.1.20:80", "::1", "fe80::1ff:fe23:4567:890a"):
        assert IP.contains(found), found
    for not_ip in ("1.2.3", "999.1.1.1", "version 1.2.3.4.5", "12:30", "a:b"):
        assert not IP.contains(not_ip), not_ip
    with pytest.raises(ValueError):
        pattern_classifier(0, "a" * 600)


def column(name: str, ctype: int = 253) -> bytes:
    return encode_column_definition(
        ColumnDefinition(
            b"def", b"s", b"t", b"t", name.encode(), name.encode(), 45, 80, ctype, 0, 0
        )
    )


def test_classifying_rules_mask_only_the_values_they_recognize() -> None:
    found = MaskingRule(
        "x/found",
        (ColumnPattern.parse("*"),),
        Masker(Strategy.REDACT, replacement="[c]"),
        classifiers=(*classifiers_named(["email"]), pattern_classifier(0, r"EMP-\d{6}")),
    )
    plan = MaskingPolicy((found,)).plan([column("note"), column("n", 3)])
    assert plan is not None and [m.index for m in plan.masked] == [0]  # numbers are not read
    row, counts = plan.text_row(encode_text_row([b"write to a@b.example", b"7"]))
    assert row == encode_text_row([b"[c]", b"7"]) and counts == {"x/found": 1}
    row, counts = plan.text_row(encode_text_row([b"nothing here", b"7"]))
    assert row == encode_text_row([b"nothing here", b"7"]) and counts == {}
    row, _ = plan.text_row(encode_text_row([b"id EMP-123456", None]))
    assert row == encode_text_row([b"[c]", None])
    # Too long to scan: masked outright.
    row, _ = plan.text_row(encode_text_row([b"x" * (64 * 1024 + 1), b"1"]))
    assert row == encode_text_row([b"[c]", b"1"])


@given(
    st.from_regex(r"[A-Za-z0-9_%+-]{1,20}(\.[A-Za-z0-9_%+-]{1,10}){0,2}", fullmatch=True),
    st.lists(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True),
             min_size=1, max_size=4),
    st.from_regex(r"[A-Za-z]{2,10}", fullmatch=True),
)  # fmt: skip
def test_generated_emails_inside_text_are_classified(
    local: str, labels: list[str], tld: str
) -> None:
    (detector,) = classifiers_named(["email"])
    email = f"{local}@{'.'.join(labels)}.{tld}"
    assert detector.contains(f"reach me at {email}, thanks"), email
