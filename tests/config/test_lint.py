"""``hoopy lint-config`` (config/lint.py, cli/lint.py): a corpus of broken configs, one per
kind of finding, each checked for its message and its line; every problem in one run; exit
codes and JSON; the examples lint clean; ``serve`` refuses with the same text."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hoopy.cli import app
from hoopy.config.fields import Finding
from hoopy.config.lint import lint
from tests.gateway_rig import DB_PASSWORD_ENV, DEFAULT_ENV, TEST_DB, default_config, write_toml
from tests.rig import MariaDBServer

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

BASE = """\
[[listeners]]
name = "app"
target = "app"
tcp = "127.0.0.1:3307"

[targets.app]
login = "passthrough"
host = "127.0.0.1"
"""


def check(tmp_path: Path, text: str, **env: str) -> list[Finding]:
    path = tmp_path / "hoopy.toml"
    path.write_text(text)
    return lint(path, environ=env).findings


def one(findings: list[Finding], severity: str = "error") -> Finding:
    matching = [f for f in findings if f.severity == severity]
    assert len(matching) == 1, [str(f) for f in findings]
    return matching[0]


def test_a_clean_config_has_no_findings(tmp_path: Path) -> None:
    assert check(tmp_path, BASE) == []


def test_toml_syntax_errors_give_their_line(tmp_path: Path) -> None:
    f = one(check(tmp_path, BASE + "\n[roles.x\n"))
    assert f.line == 10 and "not valid TOML" in f.message


def test_unknown_keys_are_all_reported_with_the_key_meant(tmp_path: Path) -> None:
    text = BASE + 'databse = "app"\n\n[gateway]\nmax_conections = 3\nidle_timout = 5\n'
    findings = check(tmp_path, text)
    got = {(f.line, f.key, f.message) for f in findings}
    assert got == {
        (9, "targets.app.databse", "unknown key (did you mean 'database'?)"),
        (12, "gateway.max_conections", "unknown key (did you mean 'max_connections'?)"),
        (13, "gateway.idle_timout", "unknown key (did you mean 'idle_timeout'?)"),
    }


def test_types_ranges_and_choices(tmp_path: Path) -> None:
    findings = check(
        tmp_path,
        BASE.replace('login = "passthrough"', 'login = "passthru"')
        + 'port = 70000\n\n[gateway]\nmax_connections = "many"\n',
    )
    messages = {(f.line, f.message) for f in findings}
    # The target's first error stops that target; the gateway table is still read.
    assert messages == {(9, "must be between 1 and 65535"), (12, "must be an integer, got str")}
    fixed = check(tmp_path, BASE.replace('login = "passthrough"', 'login = "passthru"'))
    assert one(fixed).message == (
        "must be one of passthrough, gateway_users, tokens, got 'passthru' "
        "(did you mean 'passthrough'?)"
    )


def test_references_to_names_that_do_not_exist(tmp_path: Path) -> None:
    text = BASE.replace('target = "app"', 'target = "ap"') + (
        '\n[roles.dev]\ngroups = ["dev"]\ntargets = ["app", "aap"]\n'
        '\n[targets.other]\nlogin = "passthrough"\nguardrails = ["defualt"]\n'
    )
    findings = [f for f in check(tmp_path, text) if f.severity == "error"]
    assert [(f.line, f.key, f.message) for f in findings] == [
        (3, "listeners.target", "no target named 'ap' (did you mean 'app'?)"),
        (12, "roles.dev.targets", "no target named 'aap' (did you mean 'app'?)"),
        (16, "targets.other.guardrails", "no rule set named 'defualt' (did you mean 'default'?)"),
    ]


def test_a_broken_entry_is_reported_once_not_again_where_it_is_named(tmp_path: Path) -> None:
    text = BASE.replace('login = "passthrough"', 'login = "nope"') + (
        '\n[roles.dev]\ngroups = ["dev"]\ntargets = ["app"]\n'
    )
    f = one(check(tmp_path, text))
    assert f.key == "targets.app.login"


def test_regular_expressions_must_compile(tmp_path: Path) -> None:
    text = BASE + (
        'guardrails = ["mine"]\n\n[guardrails.mine]\n'
        '[[guardrails.mine.rules]]\nname = "ok"\naction = "deny"\nkinds = ["delete"]\n'
        '[[guardrails.mine.rules]]\nname = "bad"\naction = "deny"\npattern = "(unclosed"\n'
    )
    f = one(check(tmp_path, text))
    assert f.line == 19 and f.key == "guardrails.mine.rules.pattern"
    assert "regular expression" in f.message


def test_every_broken_rule_of_a_set_is_reported(tmp_path: Path) -> None:
    text = BASE + (
        'guardrails = ["mine"]\n\n[guardrails.mine]\nrules = [\n'
        '  { name = "a", kinds = ["nope"], action = "deny" },\n'
        '  { name = "b", action = "maybe" },\n]\n'
    )
    findings = check(tmp_path, text)
    assert len([f for f in findings if f.severity == "error"]) == 2
    assert all(f.line == 12 for f in findings)  # inline tables: the line of `rules =`


def test_unset_secret_environment_variables_are_warnings(tmp_path: Path) -> None:
    text = BASE + '\n[users.ci]\npassword_env = "HOOPY_LINT_CI"\ngroups = ["ci"]\n'
    text += '\n[roles.ci]\ngroups = ["ci"]\ntargets = ["app"]\n'
    f = one(check(tmp_path, text), "warning")
    assert f.line == 11 and "HOOPY_LINT_CI is not set" in f.message
    assert check(tmp_path, text, HOOPY_LINT_CI="x") == []


def test_missing_files_and_secret_files_others_can_read(tmp_path: Path) -> None:
    password = tmp_path / "ci.password"
    password.write_text("secret")
    password.chmod(0o644)
    key = tmp_path / "mask.key"
    key.write_text("k" * 32)
    key.chmod(0o600)
    text = BASE + (
        'masking = ["pii"]\n\n[masking.pii]\nhmac_key_file = "mask.key"\n'
        '[[masking.pii.rules]]\nname = "e"\ncolumns = ["*.email"]\nstrategy = "hmac"\n'
        '\n[issuers.dev]\nissuer = "dev"\naudience = "hoopy"\njwks_file = "nope/jwks.json"\n'
        '\n[users.ci]\npassword_file = "ci.password"\ngroups = ["ci"]\n'
        '\n[roles.ci]\ngroups = ["ci"]\ntargets = ["app"]\n'
    )
    findings = check(tmp_path, text)
    assert [(f.severity, f.line, f.key) for f in findings] == [
        ("warning", 21, "issuers.dev.jwks_file"),
        ("warning", 24, "users.ci.password_file"),
    ]
    assert "does not exist (yet)" in findings[0].message
    assert findings[1].message == (
        f"{password} holds a secret and other users can read it (mode 0644): chmod 600 it"
    )
    # The loader's own file checks are reported once, as the loader words them.
    key.chmod(0o644)
    loose = one(check(tmp_path, text))
    assert loose.line == 12 and "is open to other users (mode 0644)" in loose.message
    key.unlink()
    missing = one(check(tmp_path, text))
    assert missing.key == "masking.pii.hmac_key_file" and "No such file" in missing.message


@pytest.mark.parametrize(
    ("second", "conflict"),
    [
        ('tcp = "127.0.0.1:3307"', True),
        ('tcp = "0.0.0.0:3307"', True),
        ('tcp = "127.0.0.1:3308"', False),
    ],
)
def test_listeners_that_would_take_the_same_address(
    tmp_path: Path, second: str, conflict: bool
) -> None:
    text = BASE + f'\n[[listeners]]\nname = "two"\ntarget = "app"\n{second}\n'
    findings = check(tmp_path, text)
    if not conflict:
        assert findings == []
        return
    f = one(findings)
    assert f.line == 13 and "also taken by listener 'app'" in f.message
    # hoopy serve refuses to start on it, with the same text.
    result = runner.invoke(app, ["serve", "--config", str(tmp_path / "hoopy.toml")])
    assert result.exit_code == 2 and str(f) in " ".join(result.stderr.split())


def test_rules_that_never_match_or_are_shadowed(tmp_path: Path) -> None:
    text = BASE + (
        'guardrails = ["mine"]\n\n[guardrails.mine]\n'
        '[[guardrails.mine.rules]]\nname = "all-deletes"\naction = "deny"\nkinds = ["delete"]\n'
        '[[guardrails.mine.rules]]\nname = "big-deletes"\naction = "review"\n'
        'kinds = ["delete"]\nwhere = "missing"\n'
        '[[guardrails.mine.rules]]\nname = "select-where"\naction = "deny"\n'
        'kinds = ["select"]\nwhere = "missing"\n'
    )
    findings = [f for f in check(tmp_path, text) if f.severity == "warning"]
    assert [(f.line, f.message) for f in findings] == [
        (17, "rule 'big-deletes' is never reached: rule 'all-deletes' before it matches every "
             "statement it would (the first matching rule of a set decides)"),
        (25, "rule 'select-where' can never match: where applies to UPDATE and DELETE only, and "
             "its kinds are select"),
    ]  # fmt: skip


def test_an_allowing_rule_does_not_shadow_a_refusing_one(tmp_path: Path) -> None:
    # Facts hoopy cannot read meet the refusing rule, not the allowing one.
    text = BASE + (
        'guardrails = ["mine"]\n\n[guardrails.mine]\n'
        '[[guardrails.mine.rules]]\nname = "ok"\naction = "allow"\ntables = ["logs"]\n'
        '[[guardrails.mine.rules]]\nname = "no"\naction = "deny"\ntables = ["logs"]\n'
        'kinds = ["delete"]\n'
    )
    assert check(tmp_path, text) == []


def test_what_nothing_uses_and_what_grants_nothing(tmp_path: Path) -> None:
    text = BASE + (
        '\n[targets.spare]\nlogin = "passthrough"\n'
        '\n[guardrails.unused]\n[[guardrails.unused.rules]]\nname = "x"\naction = "deny"\n'
        'kinds = ["drop_table"]\n'
        '\n[masking.unused]\n[[masking.unused.rules]]\nname = "e"\ncolumns = ["*.email"]\n'
        '\n[roles.empty]\ngroups = ["nobody"]\ntargets = []\n'
        '\n[users.lonely]\npassword_env = "HOOPY_LINT_LONELY"\ngroups = ["nowhere"]\n'
    )
    findings = check(tmp_path, text, HOOPY_LINT_LONELY="x")
    warnings = {(f.key, f.message) for f in findings if f.severity == "warning"}
    assert warnings == {
        ("targets.spare", "no listener serves this target"),
        ("guardrails.unused", "no target or role uses this rule set (list it in a target's or "
                              "role's guardrails)"),
        ("masking.unused", "no target or role uses this masking set: it masks nothing"),
        ("roles.empty.targets", "the role grants no target"),
        ("users.lonely.groups", "no role matches this user's groups: the user can log in to "
                                "nothing"),
    }  # fmt: skip


def test_exit_codes_strict_and_json(tmp_path: Path) -> None:
    path = tmp_path / "hoopy.toml"
    path.write_text(BASE)
    assert runner.invoke(app, ["lint-config", str(path)]).exit_code == 0
    path.write_text(BASE + '\n[targets.spare]\nlogin = "passthrough"\n')
    assert runner.invoke(app, ["lint-config", str(path)]).exit_code == 0
    assert runner.invoke(app, ["lint-config", str(path), "--strict"]).exit_code == 2
    path.write_text(BASE + "bogus = 1\n")
    done = runner.invoke(app, ["lint-config", str(path), "--format", "json"])
    assert done.exit_code == 1
    report = json.loads(done.stdout)
    assert report["errors"] == 1 and report["findings"][0] == {
        "severity": "error",
        "file": str(path),
        "line": 9,
        "key": "targets.app.bogus",
        "message": report["findings"][0]["message"],
    }
    text = runner.invoke(app, ["lint-config", str(path)], env={"COLUMNS": "200"}).stdout
    assert f"error: {path}:9: targets.app.bogus: unknown key" in text and "1 error" in text


def test_serve_reports_every_error_lint_reports(tmp_path: Path) -> None:
    path = tmp_path / "hoopy.toml"
    path.write_text(BASE + "bogus = 1\n\n[gateway]\nmax_connections = -1\n")
    result = runner.invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    for f in lint(path, environ={}).errors:
        assert str(f) in " ".join(result.stderr.split())


GATEWAY_KEYS = ["max_connections", "handshake_timeout", "idle_timeout", "shutdown_grace",
                "log_level", "login_delay", "max_pending_logins"]  # fmt: skip


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(GATEWAY_KEYS),
    st.integers(0, 40),
    st.sampled_from(["drop", "swap", "double", "upper"]),
    st.integers(0, 3),
)
def test_any_misspelt_key_is_found_on_its_line(
    tmp_path: Path, key: str, at: int, edit: str, blank_lines: int
) -> None:
    at %= len(key) - 1
    if edit == "drop":
        wrong = key[:at] + key[at + 1 :]
    elif edit == "swap":
        wrong = key[:at] + key[at + 1] + key[at] + key[at + 2 :]
    elif edit == "double":
        wrong = key[:at] + key[at] + key[at:]
    else:
        wrong = key.upper()
    if wrong == key:
        return
    text = BASE + "\n" * blank_lines + f"\n[gateway]\n{wrong} = 1\n"
    findings = check(tmp_path, text)
    f = one(findings)
    assert f.line == 11 + blank_lines and f.key == f"gateway.{wrong}"
    assert f.message.startswith("unknown key")
    if edit != "upper":
        assert "did you mean" in f.message


EXAMPLE_ENV = {
    "HOOPY_APP_DB_PASSWORD": "x",
    "HOOPY_AGENTS_DB_PASSWORD": "x",
    "HOOPY_CI_PASSWORD": "x",
    "HOOPY_MASK_KEY": "k" * 32,
    "HOOPY_DB_PASSWORD": "x",
    "HOOPY_STAGING_DB_PASSWORD": "x",
}


@pytest.mark.parametrize("example", sorted(p.name for p in (REPO / "examples").glob("*.toml")))
def test_the_examples_lint_clean(tmp_path: Path, example: str) -> None:
    """With the secrets their comments say to set, and ``hoopy token init`` run."""
    from hoopy.identity.dev_tokens import create_signing_key

    copy = tmp_path / example
    copy.write_text((REPO / "examples" / example).read_text())
    create_signing_key(tmp_path / ".hoopy")
    report = lint(copy, environ={**os.environ, **EXAMPLE_ENV})
    assert report.findings == [], [str(f) for f in report.findings]


RULE_TESTS = BASE + '''guardrails = ["mine"]

[guardrails.mine]
[[guardrails.mine.rules]]
name = "no-unbounded-deletes"
kinds = ["delete"]
where = "missing"
action = "deny"
tests = [
  { sql = "DELETE FROM orders", verdict = "deny" },
  { sql = "DELETE FROM orders WHERE id = 7", verdict = "allow" },
  { sql = "delete /* hi */ from orders", verdict = "deny" },
]
'''


def test_guardrail_rule_tests_run_and_failures_are_findings(tmp_path: Path) -> None:
    assert check(tmp_path, RULE_TESTS) == []
    broken = RULE_TESTS.replace(
        '{ sql = "DELETE FROM orders WHERE id = 7", verdict = "allow" }',
        '{ sql = "DELETE FROM orders WHERE id = 7", verdict = "deny" }',
    )
    f = one(check(tmp_path, broken))
    assert f.line == 17 and f.key == "guardrails.mine.rules.tests"
    assert f.message == (
        "test failed: 'DELETE FROM orders WHERE id = 7' must get deny, got allow "
        "(by mine/default)"
    )


_DELETE_WORDS = ["DELETE", "FROM", "orders"]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.sampled_from([" ", "  ", "\t", " /* x */ ", "\n", " -- c\n", " #c\n"]),
             min_size=2, max_size=2),
    st.lists(st.booleans(), min_size=3, max_size=3),
    st.sampled_from(["", ";", " ;", "/*!DELETE FROM orders*/"]),
)  # fmt: skip
def test_rule_tests_judge_statements_as_the_gateway_does(
    tmp_path: Path, gaps: list[str], upper: list[bool], tail: str
) -> None:
    """Spacing, comments and case do not change a test's verdict: the cases are judged by
    the gateway's own analysis."""
    words = [w.upper() if u else w.lower() for w, u in zip(_DELETE_WORDS, upper, strict=True)]
    sql = words[0] + gaps[0] + words[1] + gaps[1] + words[2]
    sql += tail if not tail.startswith("/*!") else ""
    if tail.startswith("/*!"):
        sql = tail
    text = RULE_TESTS.replace('{ sql = "DELETE FROM orders", verdict = "deny" }',
                              f"{{ sql = {json.dumps(sql)}, verdict = \"deny\" }}")  # fmt: skip
    assert check(tmp_path, text) == [], sql


MASK_TESTS = BASE + '''masking = ["pii"]

[masking.pii]
[[masking.pii.rules]]
name = "cards"
columns = ["*.card"]
strategy = "keep_last"
keep = 4
tests = [{ value = "4111111111111111", masked = "************1111" }]

[[masking.pii.rules]]
name = "notes"
columns = ["*.note"]
strategy = "null"
tests = [{ value = "anything", null = true }]

[[masking.pii.rules]]
name = "found"
classifiers = ["email"]
strategy = "redact"
tests = [
  { value = "write to ada@example.com", masked = "****" },
  { value = "nothing to see", unmasked = true },
]
'''


def test_masking_rule_tests_run_and_failures_are_findings(tmp_path: Path) -> None:
    assert check(tmp_path, MASK_TESTS) == []
    broken = MASK_TESTS.replace('masked = "************1111"', 'masked = "************2222"')
    broken = broken.replace('{ value = "nothing to see", unmasked = true }',
                            '{ value = "mail bob@example.com", unmasked = true }')  # fmt: skip
    findings = check(tmp_path, broken)
    assert [(f.line, f.message) for f in findings] == [
        (17, "test failed: '4111111111111111' must become '************2222', got "
             "'************1111'"),
        (29, "test failed: 'mail bob@example.com' must pass unmasked, got '****'"),
    ]  # fmt: skip


def test_rule_tests_that_cannot_be_run_are_config_errors(tmp_path: Path) -> None:
    bad_verdict = RULE_TESTS.replace('verdict = "allow"', 'verdict = "permit"')
    f = one(check(tmp_path, bad_verdict))
    assert f.key == "guardrails.mine.rules.tests.verdict" and "permit" in f.message
    not_a_table = RULE_TESTS.replace('{ sql = "DELETE FROM orders", verdict = "deny" },', '"x",')
    assert "each test is a table" in one(check(tmp_path, not_a_table)).message
    hmac = BASE + (
        'masking = ["pii"]\n\n[masking.pii]\nhmac_key_env = "K"\n[[masking.pii.rules]]\n'
        'name = "e"\ncolumns = ["*.email"]\nstrategy = "hmac"\n'
        'tests = [{ value = "a@b.c", masked = "h:0123456789abcdef" }]\n'
    )
    f = one(check(tmp_path, hmac, K="k" * 32))
    assert f.key == "masking.pii.rules.tests.masked" and "depends on the key" in f.message
    fine = hmac.replace(', masked = "h:0123456789abcdef"', "")
    assert check(tmp_path, fine, K="k" * 32) == []


def test_online_checks_logins_tls_and_masked_columns(tmp_path: Path, mariadb: MariaDBServer) -> None:
    """--online: against the rig's MariaDB with hoopy's account."""
    table = "lint_" + secrets.token_hex(3)
    mariadb.admin_sql(f"CREATE TABLE {TEST_DB}.{table} (id INT, email VARCHAR(80))")
    try:
        config = default_config(mariadb, tmp_path)
        config["targets"]["app"]["masking"] = ["pii"]
        config["masking"] = {
            "pii": {
                "rules": [
                    {"name": "emails", "columns": [f"{table}.email"]},
                    {"name": "typo", "columns": [f"{table}.emial"]},
                ]
            }
        }
        config["targets"]["wrong"] = {**config["targets"]["app"], "password_env": "WRONG_PW"}
        config["targets"]["wrong"].pop("masking")
        config["targets"]["strict"] = {
            **config["targets"]["wrong"], "password_env": DB_PASSWORD_ENV,
            "tls": "verify-ca", "tls_ca": str(REPO / "tests" / "config" / "test_lint.py"),
        }  # fmt: skip
        config["listeners"] += [
            {"name": "w", "target": "wrong", "tcp": "127.0.0.1:0"},
            {"name": "s", "target": "strict", "tcp": "127.0.0.1:0"},
        ]
        path = tmp_path / "hoopy.toml"
        write_toml(path, config)
        env = {**DEFAULT_ENV, "WRONG_PW": "not-the-password"}
        done = runner.invoke(
            app, ["lint-config", str(path), "--online", "--format", "json"], env=env
        )
        report = json.loads(done.stdout)
        by_key = {f["key"]: f for f in report["findings"]}
        assert by_key["masking.pii.rules.columns"]["message"].startswith(
            f"no column of target 'app' matches '{table}.emial'"
        )
        assert "cannot log in with hoopy's account" in by_key["targets.wrong"]["message"]
        assert "Access denied for user" in by_key["targets.wrong"]["message"]
        assert by_key["targets.strict"]["severity"] == "error"
        assert "certificate" in by_key["targets.strict"]["message"]  # the CA file is no CA
        assert "targets.app" not in by_key  # the working target has nothing to report
        assert done.exit_code == 1
        assert not [f for f in report["findings"] if f["key"] == "masking.pii.rules.columns"
                    and table + ".email'" in f["message"]]  # fmt: skip
    finally:
        mariadb.admin_sql(f"DROP TABLE IF EXISTS {TEST_DB}.{table}")


def test_serve_refuses_a_failing_rule_test_with_lint_s_text(tmp_path: Path) -> None:
    path = tmp_path / "hoopy.toml"
    path.write_text(RULE_TESTS.replace('verdict = "allow"', 'verdict = "deny"'))
    (finding,) = lint(path, environ={}).errors
    result = runner.invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert str(finding) in " ".join(result.stderr.split())


def test_workers_beyond_the_cores(tmp_path: Path) -> None:
    from hoopy.config.loader import available_cores

    many = available_cores() + 1
    found = check(tmp_path, f"[gateway]\nworkers = {many}\n\n" + BASE)
    warning = one(found, "warning")
    assert warning.key == "gateway.workers" and f"{many} workers on" in warning.message
    # Review rules with several workers: approvals work there, nothing to warn about.
    review = """
[guardrails.careful]
rules = [{ name = "drops", kinds = ["drop_table"], action = "review" }]
"""
    found = check(
        tmp_path,
        '[gateway]\nworkers = "auto"\n\n' + BASE + 'guardrails = ["careful"]\n' + review,
    )
    assert found == []
