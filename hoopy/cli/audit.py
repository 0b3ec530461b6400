"""``hoopy sessions`` and ``hoopy audit search|verify|reindex``: the audit trail. The work is
done in ``hoopy/audit``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hoopy.cli.common import (
    VERDICTS,
    AuditDirOption,
    ConfigOption,
    JsonOption,
    SinceOption,
    TargetOption,
    UntilOption,
    WhoOption,
    describe_outcome,
    describe_statement,
    err,
    fail,
    out,
    resolve_audit_dir,
    short_ts,
)

if TYPE_CHECKING:
    from hoopy.audit.index import AuditIndex
    from hoopy.audit.reader import VerifyReport


audit_app = typer.Typer(
    help="The audit trail: search it, check it, rebuild its index.", no_args_is_help=True
)

def register(app: typer.Typer) -> None:
    app.command("sessions")(sessions)
    app.add_typer(audit_app, name="audit")


def _time(text: str | None) -> str | None:
    from hoopy.audit.query import parse_time

    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def load_index(directory: Path) -> AuditIndex:
    """The session index, saying on stderr which sidecars the chain does not bind (they
    were ignored and their files scanned, so the answer is the records')."""
    from hoopy.audit.index import AuditIndex

    index = AuditIndex.load(directory)
    for path in index.distrusted:
        err.print(
            f"[yellow]warning:[/] the session index of {escape(path.name)} does not match the "
            "audit trail (edited, or from an older hoopy); it was ignored and the file read "
            "instead. Run `hoopy audit verify`, then `hoopy audit reindex`."
        )
    return index


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
    from hoopy.audit.query import SessionFilter, find_sessions

    directory = resolve_audit_dir(config, audit_dir)
    where = SessionFilter(
        who=who,
        target=target,
        since=_time(since),
        until=_time(until),
        errors=errors,
        denied=denied,
        live=live,
    )
    found = find_sessions(load_index(directory), where)
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
            short_ts(data["started"]),
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
        str | None,
        typer.Option(
            "--verdict",
            help="allow, log (allowed and flagged by a guardrail), approved (run under a "
            "human's approval), deny or review (statements hoopy refused).",
        ),
    ] = None,
    approval: Annotated[
        str | None,
        typer.Option(
            "--approval",
            help="Statements that asked for this approval id or ran under it.",
        ),
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
    from hoopy.audit.query import SessionFilter, StatementFilter, search

    if verdict is not None and verdict not in VERDICTS:
        raise typer.BadParameter(f"--verdict is one of {', '.join(VERDICTS)}")
    try:
        pattern = re.compile(regex) if regex else None
    except re.error as exc:
        raise typer.BadParameter(f"--regex: {exc}") from None
    directory = resolve_audit_dir(config, audit_dir)
    where = StatementFilter(
        sessions=SessionFilter(who=who, target=target, since=_time(since), until=_time(until)),
        session=session,
        sql=sql,
        regex=pattern,
        verdict=verdict,
        error=error,
        error_code=error_code,
        command=command,
        approval=approval,
    )
    hits = list(search(load_index(directory), where, limit=limit if limit > 0 else None))
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
            short_ts(hit.step.statement.get("ts")),
            str(data["session"]),
            str(hit.step.seq),
            escape(str(data.get("principal") or "?")),
            escape(describe_statement(hit.step.statement, width=80)),
            describe_outcome(hit.step.statement, hit.step.outcome),
        )
    out.print(table)


@audit_app.command("verify")
def audit_verify(
    directory: Annotated[Path, typer.Argument(help="The audit directory.")],
    key_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the HMAC key, to check signatures too."),
    ] = None,
    head: Annotated[
        Path | None,
        typer.Option(
            "--head",
            help="The gateway's head state (default: DIR.head, as the gateway writes it), or "
            "a copy of it kept elsewhere: the trail must still reach the record it names.",
        ),
    ] = None,
    no_head: Annotated[
        bool,
        typer.Option(
            "--no-head",
            help="Check without a head state (a copied directory): then removing the newest "
            "records or files cannot be detected.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check the hash chain (and signatures) across all files, the session index, and that
    the trail reaches the gateway's head state; name the first broken record."""
    from hoopy.audit.head import default_head_path
    from hoopy.audit.lines import audit_trails
    from hoopy.audit.reader import verify, verify_trails, worker_heads

    key = None
    if key_env:
        value = os.environ.get(key_env)
        if value is None:
            fail(f"environment variable {key_env} is not set")
            return
        key = value.encode("utf-8")
    if not directory.is_dir():
        fail(f"{directory} is not a directory")
    if head is not None and no_head:
        raise typer.BadParameter("--head and --no-head exclude each other")
    head_path = None if no_head else (head or default_head_path(directory.resolve()))
    if audit_trails(directory) == [directory] and not (
        head_path is not None and worker_heads(head_path)
    ):
        report = verify(directory, key, head_path)
        if as_json:
            print(json.dumps(verify_json(report)))
        else:
            print_verify(report, no_head)
        if not report.ok:
            raise typer.Exit(1)
        return
    # Several chains: one per gateway worker ([gateway] workers), each checked on its own.
    trails, missing = verify_trails(directory, key, head_path)
    ok = not missing and all(t.report.ok for t in trails)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "records": sum(t.report.records for t in trails),
                    "files": sum(t.report.files for t in trails),
                    "missing_trails": missing,
                    "trails": [
                        {"trail": t.trail.name, "worker": t.worker, **verify_json(t.report)}
                        for t in trails
                    ],
                }
            )
        )
    else:
        for t in trails:
            out.print(f"[bold]{escape(t.trail.name)}[/]:", highlight=False)
            print_verify(t.report, no_head)
        for problem in missing:
            err.print(f"[bold red]missing:[/] {escape(problem)}")
    if not ok:
        raise typer.Exit(1)


def verify_json(report: VerifyReport) -> dict[str, Any]:
    head = report.head
    return {
        "ok": report.ok,
        "records": report.records,
        "files": report.files,
        "signed": report.signed,
        "last_hash": report.last_hash,
        "first_problem": str(report.first_problem) if report.first_problem else None,
        "partial_tail": str(report.partial_tail.file) if report.partial_tail else None,
        "skipped": len(report.skipped),
        "gaps": [{"file": g.file.name, "kind": g.kind, **g.detail} for g in report.gaps],
        "index_problems": [str(p) for p in report.index_problems],
        "head": None
        if head is None
        else {
            "path": str(head.path),
            "position": head.state.position.to_json() if head.state else None,
            "signed": head.state.signed if head.state else None,
            "problem": head.problem,
        },
    }


def print_verify(report: VerifyReport, no_head: bool) -> None:
    if report.partial_tail is not None:
        err.print(f"note: {report.partial_tail.file.name} ends with a partial line (a crash)")
    if report.skipped:
        err.print(f"note: {len(report.skipped)} crash remnant line(s) skipped")
    for gap in report.gaps:
        err.print(f"[bold yellow]gap:[/] {escape(str(gap))}")
    if no_head:
        err.print(
            "note: no head state checked: removing the newest records or files cannot be detected"
        )
    elif report.head is not None and report.head.state is not None and not report.signed:
        err.print(
            "note: the head state was checked without the key (--key-env): whoever can "
            "write it could have rewritten it too"
        )
    if report.first_problem is not None:
        err.print(f"[bold red]broken:[/] {escape(str(report.first_problem))}")
    for problem in report.index_problems:
        err.print(f"[bold red]index:[/] {escape(str(problem))}")
    if report.head is not None and report.head.problem is not None:
        err.print(f"[bold red]head:[/] {escape(report.head.problem)}")
    if report.ok:
        signed = " and signatures" if report.signed else ""
        reached = ", reaches the head state" if report.head is not None else ""
        out.print(
            f"ok: {report.records} records in {report.files} files, chain{signed} intact"
            f"{reached}; last hash {report.last_hash}"
        )


@audit_app.command("reindex")
def audit_reindex(
    directory: Annotated[Path, typer.Argument(help="The audit directory.")],
) -> None:
    """Rebuild the session index of every audit file (after copying or restoring files, or
    when verify reports an index that does not match the trail)."""
    from hoopy.audit.index import rebuild

    if not directory.is_dir():
        fail(f"{directory} is not a directory")
    count = 0
    sessions_seen: set[str] = set()
    try:
        for _, index in rebuild(directory):
            count += 1
            sessions_seen.update(index.sessions)
    except OSError as exc:
        fail(f"cannot write the index: {exc.strerror or exc}")
    out.print(f"indexed {count} files, {len(sessions_seen)} sessions")


# --- shared with hoopy replay ---------------------------------------------------------------


