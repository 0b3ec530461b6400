"""The CLI over the audit trail: ``hoopy sessions``, ``hoopy audit search|verify|reindex``
and ``hoopy replay``. The work is done in ``hoopy/audit`` and ``hoopy/gateway/replay.py``;
this module parses options and prints (rich for people, ``--json`` for scripts)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hoopy.config.loader import ConfigError, load_config
from hoopy.config.model import Config

err = Console(stderr=True, emoji=False, soft_wrap=True)
# Piped output is not squeezed into 80 columns: lines are for grep, not for a screen.
out = Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 240)

audit_app = typer.Typer(
    help="The audit trail: search it, check it, rebuild its index.", no_args_is_help=True
)

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


def register(app: typer.Typer) -> None:
    app.command("sessions")(sessions)
    app.command("replay")(replay)
    app.add_typer(audit_app, name="audit")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _config(path: Path, required: bool) -> Config | None:
    if not path.exists() and not required:
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(str(exc))
    return None


def _audit_dir(config_path: Path, audit_dir: Path | None) -> Path:
    if audit_dir is None:
        config = _config(config_path, required=True)
        assert config is not None
        if config.audit is None:
            _fail(f"{config_path} turns the audit off ([audit] enabled = false)")
        assert config is not None and config.audit is not None
        audit_dir = config.audit.directory
    if not audit_dir.is_dir():
        _fail(f"{audit_dir} is not an audit directory (it does not exist)")
    return audit_dir


def _time(text: str | None) -> str | None:
    from hoopy.audit.query import parse_time

    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _short_ts(ts: Any) -> str:
    text = str(ts or "")
    return text[:19].replace("T", " ") if text else "-"


# --- hoopy sessions -------------------------------------------------------------------------


def sessions(
    config: ConfigOption = Path("hoopy.toml"),
    audit_dir: AuditDirOption = None,
    who: WhoOption = None,
    target: TargetOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    errors: Annotated[bool, typer.Option("--errors", help="Only sessions with errors.")] = False,
    denied: Annotated[
        bool, typer.Option("--denied", help="Only sessions with refused statements.")
    ] = False,
    live: Annotated[bool, typer.Option("--live", help="Only sessions still open.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many (0: all).")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List recorded sessions, newest first."""
    from hoopy.audit.index import AuditIndex
    from hoopy.audit.query import SessionFilter, find_sessions

    directory = _audit_dir(config, audit_dir)
    where = SessionFilter(
        who=who,
        target=target,
        since=_time(since),
        until=_time(until),
        errors=errors,
        denied=denied,
        live=live,
    )
    found = find_sessions(AuditIndex.load(directory), where)
    shown = found[:limit] if limit > 0 else found
    if as_json:
        print(json.dumps([s.to_json() for s in shown], indent=1))
        return
    if not shown:
        err.print("no sessions match")
        return
    table = Table(box=None, pad_edge=False)
    # Ids and times are copied and compared: never wrapped or cut.
    table.add_column("session", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("who", overflow="fold", min_width=10)
    table.add_column("target", overflow="fold", min_width=6)
    table.add_column("from", overflow="fold", min_width=10)
    for name in ("stmts", "errors", "denied"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("end", overflow="fold", min_width=10)
    for s in shown:
        data = s.to_json()
        table.add_row(
            s.session,
            _short_ts(data["started"]),
            escape(str(data.get("principal") or "?")),
            escape(str(data.get("target") or "?")),
            escape(str(data.get("client") or "?")),
            str(data["statements"]),
            str(data["errors"]),
            str(data["denied"]),
            escape(str(data["end_reason"])) if data["ended"] else "[yellow]open[/]",
        )
    out.print(table)
    if len(found) > len(shown):
        err.print(f"{len(found) - len(shown)} more; use --limit 0 to see all")


# --- hoopy audit ... -------------------------------------------------------------------------


@audit_app.command("search")
def audit_search(
    config: ConfigOption = Path("hoopy.toml"),
    audit_dir: AuditDirOption = None,
    who: WhoOption = None,
    target: TargetOption = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Session id (or prefix).")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    sql: Annotated[
        str | None, typer.Option("--sql", help="SQL text contains this (case-insensitive).")
    ] = None,
    regex: Annotated[
        str | None, typer.Option("--regex", help="SQL text matches this regex.")
    ] = None,
    verdict: Annotated[
        str | None, typer.Option("--verdict", help="allow or deny (statements hoopy refused).")
    ] = None,
    error: Annotated[bool, typer.Option("--error", help="Only statements that failed.")] = False,
    error_code: Annotated[
        int | None, typer.Option("--error-code", help="Only this MySQL error code.")
    ] = None,
    command: Annotated[
        str | None, typer.Option("--command", help="Protocol command, e.g. QUERY, STMT_EXECUTE.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Stop after this many (0: all).")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Find statements by who, target, time, SQL text or regex, verdict and error."""
    from hoopy.audit.index import AuditIndex
    from hoopy.audit.query import SessionFilter, StatementFilter, search

    if verdict is not None and verdict not in ("allow", "deny"):
        raise typer.BadParameter("--verdict is allow or deny")
    try:
        pattern = re.compile(regex) if regex else None
    except re.error as exc:
        raise typer.BadParameter(f"--regex: {exc}") from None
    directory = _audit_dir(config, audit_dir)
    where = StatementFilter(
        sessions=SessionFilter(who=who, target=target, since=_time(since), until=_time(until)),
        session=session,
        sql=sql,
        regex=pattern,
        verdict=verdict,
        error=error,
        error_code=error_code,
        command=command,
    )
    hits = list(search(AuditIndex.load(directory), where, limit=limit if limit > 0 else None))
    if as_json:
        print(json.dumps([h.to_json() for h in hits], indent=1))
        return
    if not hits:
        err.print("no statements match")
        return
    table = Table(box=None, pad_edge=False)
    for name in ("time (UTC)", "session", "#"):
        table.add_column(name, no_wrap=True)
    table.add_column("who", overflow="fold", min_width=10)
    table.add_column("statement", overflow="fold", min_width=30)
    table.add_column("result", overflow="fold", min_width=20)
    for hit in hits:
        data = hit.to_json()
        table.add_row(
            _short_ts(hit.step.statement.get("ts")),
            str(data["session"]),
            str(hit.step.seq),
            escape(str(data.get("principal") or "?")),
            escape(_describe_statement(hit.step.statement, width=80)),
            _describe_outcome(hit.step.statement, hit.step.outcome),
        )
    out.print(table)


@audit_app.command("verify")
def audit_verify(
    directory: Annotated[Path, typer.Argument(help="The audit directory.")],
    key_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the HMAC key, to check signatures too."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the hash chain (and signatures) across all files; name the first broken record."""
    from hoopy.audit.reader import verify

    key = None
    if key_env:
        value = os.environ.get(key_env)
        if value is None:
            _fail(f"environment variable {key_env} is not set")
            return
        key = value.encode("utf-8")
    if not directory.is_dir():
        _fail(f"{directory} is not a directory")
    report = verify(directory, key)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "records": report.records,
                    "files": report.files,
                    "signed": report.signed,
                    "last_hash": report.last_hash,
                    "first_problem": str(report.first_problem) if report.first_problem else None,
                    "partial_tail": str(report.partial_tail.file) if report.partial_tail else None,
                    "skipped": len(report.skipped),
                }
            )
        )
    else:
        if report.partial_tail is not None:
            err.print(f"note: {report.partial_tail.file.name} ends with a partial line (a crash)")
        if report.skipped:
            err.print(f"note: {len(report.skipped)} crash remnant line(s) skipped")
        if report.ok:
            signed = " and signatures" if report.signed else ""
            out.print(
                f"ok: {report.records} records in {report.files} files, chain{signed} intact; "
                f"last hash {report.last_hash}"
            )
        else:
            err.print(f"[bold red]broken:[/] {escape(str(report.first_problem))}")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("reindex")
def audit_reindex(
    directory: Annotated[Path, typer.Argument(help="The audit directory.")],
) -> None:
    """Rebuild the session index of every audit file (after copying or restoring files)."""
    from hoopy.audit.index import rebuild

    if not directory.is_dir():
        _fail(f"{directory} is not a directory")
    count = 0
    sessions_seen: set[str] = set()
    try:
        for _, index in rebuild(directory):
            count += 1
            sessions_seen.update(index.sessions)
    except OSError as exc:
        _fail(f"cannot write the index: {exc.strerror or exc}")
    out.print(f"indexed {count} files, {len(sessions_seen)} sessions")


# --- hoopy replay ----------------------------------------------------------------------------


def replay(
    session: Annotated[str, typer.Argument(help="Session id, or a unique prefix of one.")],
    config: ConfigOption = Path("hoopy.toml"),
    audit_dir: AuditDirOption = None,
    as_json: JsonOption = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep showing statements until the session ends.")
    ] = False,
    execute: Annotated[
        bool, typer.Option("--execute", help="Re-run the statements against --target.")
    ] = False,
    target: Annotated[
        str | None, typer.Option("--target", help="The configured target to re-run against.")
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", help="Default database (default: the recorded one).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what --execute would send, and stop.")
    ] = False,
    allow_writes: Annotated[
        bool, typer.Option("--allow-writes", help="Also re-run statements that may write.")
    ] = False,
    skip_writes: Annotated[
        bool, typer.Option("--skip-writes", help="Re-run only the read-only statements.")
    ] = False,
) -> None:
    """Show a recorded session as a timeline, or re-run it against a target and compare."""
    from hoopy.audit.index import AuditIndex, SessionNotFound
    from hoopy.audit.timeline import SessionFeed, Timeline

    directory = _audit_dir(config, audit_dir)
    index = AuditIndex.load(directory)
    try:
        summary = index.find(session)
    except SessionNotFound as exc:
        _fail(str(exc))
        return
    feed = SessionFeed(directory, summary, index)
    timeline = Timeline(summary.session)
    timeline.extend(feed.poll())
    if execute or dry_run:
        if follow:
            raise typer.BadParameter(
                "--follow shows a live session; it cannot be combined with --execute"
            )
        _execute(timeline, config, target, database, dry_run, allow_writes, skip_writes, as_json)
        return
    if as_json:
        if follow:
            for _ in feed.follow(timeline):
                pass
        print(json.dumps(timeline.to_json(), indent=1))
        return
    _print_header(timeline)
    clock = _Clock(timeline)
    printed = 0

    def show(final: bool) -> None:
        # Print steps in order; a live session's last step waits for its outcome.
        nonlocal printed
        steps = timeline.steps
        lines: list[str] = []
        while printed < len(steps):
            step = steps[printed]
            waiting = step.outcome is None and step.command not in _NO_RESPONSE
            if waiting and not final and printed == len(steps) - 1:
                break
            lines.append(_step_markup(step, clock))
            printed += 1
        if lines:
            out.print("\n".join(lines))  # one call: rich's per-call cost dominates otherwise

    if timeline.end is None and follow:
        show(final=False)
        try:
            for _ in feed.follow(timeline):
                show(final=False)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    show(final=True)
    if timeline.end is None:
        err.print(
            "[yellow]the session has no end record yet (still open, or hoopy stopped)"
            + ("; --follow to watch it" if not follow else "")
            + "[/]"
        )
        return
    _print_footer(timeline)


_NO_RESPONSE = ("COM_STMT_CLOSE", "COM_STMT_SEND_LONG_DATA")


class _Clock:
    def __init__(self, timeline: Any) -> None:
        from datetime import datetime

        start = (timeline.start or {}).get("ts") or (
            timeline.steps[0].statement.get("ts") if timeline.steps else None
        )
        self.start = datetime.fromisoformat(start.replace("Z", "+00:00")) if start else None

    def offset(self, ts: Any) -> str:
        from datetime import datetime

        if self.start is None or not isinstance(ts, str):
            return ""
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return f"+{(moment - self.start).total_seconds():.3f}s"


def _print_header(timeline: Any) -> None:
    start = timeline.start or {}
    principal = start.get("principal") or {}
    client = start.get("client") or {}
    roles = principal.get("roles") or []
    out.print(f"[bold]session {timeline.session}[/]")
    who = escape(str(principal.get("name", "?")))
    method = escape(str(principal.get("method", "?")))
    issuer = f" from {escape(str(principal['issuer']))}" if principal.get("issuer") else ""
    role_text = f", roles {escape(', '.join(roles))}" if roles else ""
    out.print(f"who      {who} ({method}{issuer}{role_text})")
    tls = " over TLS" if client.get("tls") else ""
    program = (start.get("connect_attrs") or {}).get("program_name")
    out.print(
        f"from     {escape(str(client.get('address', '?')))}{tls}"
        + (f", program {escape(str(program))}" if program else "")
    )
    out.print(
        f"target   {escape(str(start.get('target', '?')))}"
        + (f", database {escape(str(start['database']))}" if start.get("database") else "")
    )
    out.print(f"started  {_short_ts(start.get('ts'))} UTC")
    out.print()


def _step_markup(step: Any, clock: _Clock) -> str:
    """Two lines of rich markup: the statement, then its outcome."""
    s = step.statement
    verdict = (
        ""
        if s.get("verdict", "allow") == "allow"
        else f" [bold red]DENIED ({escape(str(s.get('rule')))})[/]"
    )
    return (
        f"[dim]{clock.offset(s.get('ts')):>10}[/] [bold]#{step.seq}[/] "
        f"{escape(_describe_statement(s, width=0))}{verdict}\n"
        f"{'':>11} → {_describe_outcome(s, step.outcome)}"
    )


def _print_footer(timeline: Any) -> None:
    end = timeline.end
    out.print()
    if end is None:
        out.print("[yellow]no end record[/]")
        return
    out.print(
        f"ended    {_short_ts(end.get('ts'))} UTC: {escape(str(end.get('reason')))}; "
        f"{end.get('statements')} statements, {end.get('errors')} errors, {end.get('duration_s')}s"
    )


def _describe_statement(s: dict[str, Any], *, width: int) -> str:
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


def _describe_outcome(s: dict[str, Any], o: dict[str, Any] | None) -> str:
    if o is None:
        if s.get("command") in _NO_RESPONSE:
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
    return (", ".join(parts) or "ok") + f" [dim]{ms}[/]"


def _execute(
    timeline: Any,
    config_path: Path,
    target_name: str | None,
    database: str | None,
    dry_run: bool,
    allow_writes: bool,
    skip_writes: bool,
    as_json: bool,
) -> None:
    import trio
    from rich.progress import Progress

    from hoopy.audit.timeline import plan
    from hoopy.gateway.replay import replay as run_replay
    from hoopy.gateway.upstream import UpstreamError

    if allow_writes and skip_writes:
        raise typer.BadParameter("--allow-writes and --skip-writes contradict each other")
    planned = plan(timeline.steps, allow_writes=allow_writes, skip_writes=skip_writes)
    writes = [p for p in planned if p.reason == "write"]
    if dry_run:
        if as_json:
            print(
                json.dumps(
                    [
                        {
                            "seq": p.step.seq,
                            "run": p.run,
                            "write": p.write,
                            "reason": p.reason,
                            "statement": p.step.statement,
                        }
                        for p in planned
                    ],
                    indent=1,
                )
            )
        else:
            for p in planned:
                mark = "run " if p.run else "skip"
                why = f"  [dim]({escape(p.reason)})[/]" if p.reason else ""
                kind = " [yellow]write[/]" if p.write else ""
                out.print(
                    f"{mark} #{p.step.seq}{kind} "
                    f"{escape(_describe_statement(p.step.statement, width=0))}{why}"
                )
        return
    if target_name is None:
        raise typer.BadParameter("--execute needs --target NAME (a target in the config)")
    config = _config(config_path, required=True)
    assert config is not None
    target = config.targets.get(target_name)
    if target is None:
        _fail(
            f"no target {target_name!r} in {config_path} "
            f"(targets: {', '.join(sorted(config.targets))})"
        )
        return
    if writes:
        shown = "; ".join(
            f"#{p.step.seq} {_describe_statement(p.step.statement, width=60)}" for p in writes[:3]
        )
        _fail(
            f"the session has {len(writes)} statement(s) that may write ({shown}); "
            "re-run with --allow-writes to run them against "
            f"target '{target_name}', or --skip-writes to run only the reads"
        )
    start = timeline.start or {}
    recorded_caps = (start.get("client") or {}).get("capabilities")
    db = database if database is not None else start.get("database")

    async def run() -> Any:
        if as_json or not sys.stderr.isatty():
            return await run_replay(
                target,
                planned,
                session=timeline.session,
                database=db,
                recorded_capabilities=recorded_caps,
            )
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task(f"replaying on {target_name}", total=len(planned))

            def advance(_: Any, __: Any) -> None:
                progress.advance(task)

            return await run_replay(
                target,
                planned,
                session=timeline.session,
                database=db,
                recorded_capabilities=recorded_caps,
                on_step=advance,
            )

    try:
        report = trio.run(run)
    except UpstreamError as exc:
        _fail(exc.message)
        return
    if as_json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        for d in report.differences:
            out.print(
                f"[bold red]differs[/] #{d.seq} {d.field}: "
                f"recorded {escape(json.dumps(d.recorded))}, "
                f"replayed {escape(json.dumps(d.replayed))}"
            )
        skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
        verdict = (
            "[green]all outcomes match[/]"
            if not report.differences
            else f"[red]{len(report.differences)} difference(s)[/]"
        )
        out.print(
            f"ran {len(report.results)} statements on target "
            f"'{escape(target_name)}'{skipped}: {verdict}"
        )
    if report.differences:
        raise typer.Exit(1)
