"""What the commands share: the consoles, option types, failing with a message, reading the
config, and describing audit records. The work itself is in the library (``hoopy/audit``,
``hoopy/config``, ``hoopy/gateway``); commands parse options and print (rich for people,
``--json`` for scripts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from hoopy.config.loader import ConfigError, load_config
from hoopy.config.model import Config

# No emoji codes (a fingerprint contains ":ab:"), no highlighting: output is pasted into
# terminals and parsed by scripts.
err = Console(stderr=True, emoji=False, soft_wrap=True)
# Piped output is not squeezed into 80 columns: lines are for grep, not for a screen.
out = Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 240)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help="The gateway's TOML config (for the audit directory and targets)."
    ),
]
AuditDirOption = Annotated[
    Path | None,
    typer.Option("--audit-dir", help="The audit directory (default: from the config)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (one document) instead.")]
WhoOption = Annotated[str | None, typer.Option("--who", help="Principal name (glob: 'ci-*').")]
TargetOption = Annotated[str | None, typer.Option("--target", help="Target name.")]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since", help="From this time: ISO 8601 (UTC if no offset) or an age: 15m, 2h, 3d."
    ),
]
UntilOption = Annotated[str | None, typer.Option("--until", help="Up to this time (same forms).")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` (taken as text, never as markup) and exit with ``code``."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def load_cli_config(
    path: Path, required: bool, *, read_masking_keys: bool = False
) -> Config | None:
    if not path.exists() and not required:
        return None
    try:
        return load_config(path, read_secrets=False, read_masking_keys=read_masking_keys)
    except ConfigError as exc:
        fail(str(exc))
    return None


def resolve_audit_dir(config_path: Path, audit_dir: Path | None) -> Path:
    if audit_dir is None:
        config = load_cli_config(config_path, required=True)
        assert config is not None
        if config.audit is None:
            fail(f"{config_path} turns the audit off ([audit] enabled = false)")
        assert config is not None and config.audit is not None
        audit_dir = config.audit.directory
    if not audit_dir.is_dir():
        fail(f"{audit_dir} is not an audit directory (it does not exist)")
    return audit_dir


def short_ts(ts: Any) -> str:
    text = str(ts or "")
    return text[:19].replace("T", " ") if text else "-"


NO_RESPONSE_COMMANDS = ("COM_STMT_CLOSE", "COM_STMT_SEND_LONG_DATA")
# The verdicts a statement record carries (docs/audit-format.md).
VERDICTS = ("allow", "log", "approved", "deny", "review")


# The longest statement line a timeline prints whole; longer ones are cut, saying by how much
# (``--json`` keeps them whole).
TIMELINE_STATEMENT_CHARS = 500


def describe_statement(s: dict[str, Any], *, width: int, shorten: int = 0) -> str:
    """One line for a statement record: cut to ``width`` with an ellipsis, or, over
    ``shorten`` characters, cut there and followed by how long it was."""
    command = str(s.get("command", "?")).removeprefix("COM_")
    text = s.get("sql")
    if text is None:
        text = s.get("argument")
    detail = ""
    if s.get("statement_id") is not None and command not in ("QUERY", "STMT_PREPARE"):
        detail = f" stmt {s['statement_id']}"
    if s.get("params"):
        shown = ", ".join(_param_text(p) for p in s["params"])
        detail += f" ({shown})"
    body = " ".join(str(text).split()) if text is not None else ""
    line = f"{command}{detail}: {body}" if body else f"{command}{detail}"
    if width and len(line) > width:
        line = line[: width - 1] + "…"
    elif shorten and len(line) > shorten:
        line = f"{line[:shorten]}… [{len(line):,} characters; --json shows it whole]"
    return line


def _param_text(p: dict[str, Any]) -> str:
    if p.get("long_data"):
        return "<long data>"
    if "hex" in p:
        return f"0x{p['hex']}"
    value = p.get("value")
    if p.get("truncated"):
        return f"{json.dumps(value)}…({p.get('length')} bytes)"
    return json.dumps(value)


def describe_outcome(s: dict[str, Any], o: dict[str, Any] | None) -> str:
    if o is None:
        if s.get("command") in NO_RESPONSE_COMMANDS:
            return "[dim](no response)[/]"
        return "[dim](no outcome recorded)[/]"
    ms = f"{o.get('duration_ms', 0):g} ms"
    error = o.get("error")
    if error:
        message = escape(str(error.get("message")))
        return (
            f"[red]ERROR {error.get('code')} ({error.get('sqlstate')}): {message}[/] [dim]{ms}[/]"
        )
    parts = []
    if o.get("rows") or o.get("digest"):
        parts.append(f"{o.get('rows', 0)} rows")
    if o.get("affected_rows"):
        parts.append(f"{o['affected_rows']} affected")
    if o.get("last_insert_id"):
        parts.append(f"insert id {o['last_insert_id']}")
    if o.get("warnings"):
        parts.append(f"{o['warnings']} warnings")
    if o.get("principal"):
        parts.append(f"now {escape(str(o['principal'].get('name')))}")
    masked = o.get("masked")
    if isinstance(masked, dict) and masked:
        parts.append("[magenta]masked " + "; ".join(_masked_text(masked)) + "[/]")
    return (", ".join(parts) or "ok") + f" [dim]{ms}[/]"


def _masked_text(masked: dict[str, Any]) -> list[str]:
    """``pii/emails: email (2 values)`` per rule of an outcome's ``masked``."""
    out = []
    for rule, info in masked.items():
        info = info if isinstance(info, dict) else {}
        columns = ", ".join(str(c) for c in info.get("columns") or [])
        out.append(escape(f"{rule}: {columns} ({info.get('values', 0)} values)"))
    return out
