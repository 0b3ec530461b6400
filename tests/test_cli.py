"""The command line: version, config errors, password hashes."""

from __future__ import annotations

from pathlib import Path

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
