"""The command line: version, config errors, password hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hoopy import __version__
from hoopy.cli import app
from hoopy.config.loader import load_config

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"hoopy {__version__}"


def test_serve_with_a_broken_config_says_where(tmp_path: Path) -> None:
    config = tmp_path / "hoopy.toml"
    config.write_text('[[listeners]]\ntarget = "app"\n\n[targets.app]\nlogin = "passthru"\n')
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert (
        f"{config}:5: targets.app.login: must be one of passthrough, gateway_users" in result.stderr
    )


def test_serve_with_a_missing_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "cannot read the config" in result.stderr


def test_hash_password_output_is_accepted_by_the_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["hash-password", "--stdin"], input="s3cret\n")
    assert result.exit_code == 0
    hashed = result.stdout.strip()
    assert "s3cret" not in hashed
    config = tmp_path / "hoopy.toml"
    config.write_text(
        '[[listeners]]\ntarget = "t"\n[targets.t]\nlogin = "gateway_users"\nuser = "u"\n'
        f'password_env = "X"\n[users.alice]\npassword_hash = "{hashed}"\n'
    )
    assert load_config(config).users["alice"].name == "alice"


def test_audit_verify_reports_ok_and_names_the_first_broken_record(tmp_path: Path) -> None:
    import json

    from hoopy.audit.head import HeadFile, default_head_path
    from hoopy.audit.writer import AuditWriter

    head = HeadFile(default_head_path(tmp_path / "audit"), None)
    writer = AuditWriter(tmp_path / "audit", head=head)
    writer.open()
    for i in range(3):
        writer.append({"kind": "statement", "seq": i})
    writer.close()
    ok = runner.invoke(app, ["audit", "verify", str(tmp_path / "audit")])
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: 4 records in 1 files")
    (path,) = (tmp_path / "audit").glob("audit-*.jsonl")
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"seq":1', b'"seq":7')  # someone edits history
    path.write_bytes(b"\n".join(lines))
    broken = runner.invoke(app, ["audit", "verify", str(tmp_path / "audit"), "--json"])
    assert broken.exit_code == 1
    report = json.loads(broken.stdout)
    assert report["ok"] is False and report["first_problem"].startswith(f"{path.name}:3:")


def test_help_lists_every_command_and_flags_show_no_value_type() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for command in ("serve", "hash-password", "token", "sessions", "audit", "replay", "approvals"):
        assert command in result.stdout
    assert "--version" in result.stdout and "<bool>" not in result.stdout
    sessions = runner.invoke(app, ["sessions", "--help"], env={"COLUMNS": "120"})
    assert "--json" in sessions.stdout and "<bool>" not in sessions.stdout
    assert "<int>" in sessions.stdout  # options that take a value still say which


def test_config_errors_are_printed_as_text_not_markup(tmp_path: Path) -> None:
    config = tmp_path / "hoopy.toml"
    config.write_text('[targets.a]\nlogin = "passthrough"\n')  # no [[listeners]]
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "at least one [[listeners]] entry is required" in result.stderr


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--login", "gateway_users"],
        ["--login", "passthrough", "--no-masking"],
        ["--login", "tokens", "--issuer", "github", "--github-owner", "acme",
         "--listen", "0.0.0.0:3307"],
    ],
)  # fmt: skip
def test_init_writes_a_commented_config_that_lints_clean(tmp_path: Path, flags: list[str]) -> None:
    from hoopy.config.lint import lint
    from hoopy.identity.dev_tokens import create_signing_key

    path = tmp_path / "hoopy.toml"
    result = runner.invoke(app, ["init", "-o", str(path), "--yes", *flags])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and f"hoopy serve --config {path}" in result.stdout
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert text.startswith("# hoopy config, written by `hoopy init`")
    assert "# the database hoopy stands in front of" in text
    create_signing_key(tmp_path / ".hoopy")
    report = lint(path, environ={"HOOPY_DB_PASSWORD": "x"})
    assert report.findings == [], [str(f) for f in report.findings]
    assert report.config is not None and "app" in report.config.targets


def test_init_asks_what_no_flag_says_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "hoopy.toml"
    answers = "tokens\ndev\ndb.internal\n3306\nshop\nhoopy_shop\n127.0.0.1:4000\n"
    result = runner.invoke(app, ["init", "-o", str(path)], input=answers)
    assert result.exit_code == 0, result.output
    config = load_config(path, read_secrets=False)
    target = config.targets["app"]
    assert (target.host, target.database, target.user) == ("db.internal", "shop", "hoopy_shop")
    assert config.listeners[0].tcp == ("127.0.0.1", 4000)
    before = path.read_text()
    again = runner.invoke(app, ["init", "-o", str(path), "--yes"])
    assert again.exit_code == 2 and "exists; pass --force" in again.stderr
    assert path.read_text() == before
    assert runner.invoke(app, ["init", "-o", str(path), "--yes", "--force"]).exit_code == 0
    assert path.read_text() != before


def test_timeline_lines_of_long_statements_are_cut_saying_how_long() -> None:
    from hoopy.cli.common import TIMELINE_STATEMENT_CHARS, describe_statement

    sql = "INSERT INTO t VALUES " + ", ".join(f"({i}, 'row {i}')" for i in range(1024))
    line = describe_statement({"command": "COM_QUERY", "sql": sql}, width=0,
                              shorten=TIMELINE_STATEMENT_CHARS)  # fmt: skip
    assert len(line) < TIMELINE_STATEMENT_CHARS + 80
    assert line.endswith(f"… [{len('QUERY: ' + sql):,} characters; --json shows it whole]")
    short = describe_statement({"command": "COM_QUERY", "sql": "SELECT 1"}, width=0,
                               shorten=TIMELINE_STATEMENT_CHARS)  # fmt: skip
    assert short == "QUERY: SELECT 1"


def test_init_answers_that_break_the_config_leave_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "hoopy.toml"
    result = runner.invoke(app, ["init", "-o", str(path), "--yes", "--listen", "nowhere"])
    assert result.exit_code == 2
    assert f"{path}:" in result.stderr and "listeners.tcp" in result.stderr
    assert "nothing was written" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_demo_without_mariadb_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import hoopy.demo

    monkeypatch.setattr(hoopy.demo, "_SBIN_DIRS", ())
    result = runner.invoke(app, ["demo", "--port", "0"], env={"PATH": "/nonexistent"})
    assert result.exit_code == 2
    assert "apt-get install mariadb-server mariadb-client" in " ".join(result.stderr.split())
