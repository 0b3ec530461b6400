"""``hoopy replay``: a recorded session as a timeline, followed live, or re-run against a
target. The work is in ``hoopy/audit/timeline.py`` and ``hoopy/gateway/replay.py``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from hoopy.cli.common import (
    NO_RESPONSE_COMMANDS,
    TIMELINE_STATEMENT_CHARS,
    AuditDirOption,
    ConfigOption,
    JsonOption,
    describe_outcome,
    describe_statement,
    err,
    fail,
    load_cli_config,
    out,
    resolve_audit_dir,
    short_ts,
)


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
    policy: Annotated[
        bool,
        typer.Option(
            "--policy",
            help="Judge every statement again under today's guardrails (runs nothing) and "
            "mark those whose verdict would differ.",
        ),
    ] = False,
    sets: Annotated[
        str | None,
        typer.Option(
            "--sets",
            help="With --policy: comma-separated rule sets to judge with, instead of the "
            "ones the session would get today.",
        ),
    ] = None,
) -> None:
    """Show a recorded session as a timeline, or re-run it against a target and compare."""
    from hoopy.audit.index import AuditIndex, SessionNotFound
    from hoopy.audit.timeline import SessionFeed, Timeline

    directory = resolve_audit_dir(config, audit_dir)
    index = AuditIndex.load(directory)
    try:
        summary = index.find(session)
    except SessionNotFound as exc:
        fail(str(exc))
        return
    feed = SessionFeed(directory, summary, index)
    timeline = Timeline(summary.session)
    timeline.extend(feed.poll())
    if policy or sets is not None:
        if execute or dry_run or follow:
            raise typer.BadParameter("--policy judges a recorded session; it runs nothing")
        _policy(timeline, config, sets, as_json)
        return
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
            waiting = step.outcome is None and step.command not in NO_RESPONSE_COMMANDS
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
    out.print(f"started  {short_ts(start.get('ts'))} UTC")
    out.print()


def _step_markup(step: Any, clock: _Clock) -> str:
    """Two lines of rich markup: the statement, then its outcome."""
    s = step.statement
    recorded = s.get("verdict", "allow")
    rule = escape(str(s.get("rule")))
    approval = escape(str(s.get("approval") or ""))
    asked = f"{rule}, {approval}" if approval else rule
    verdict = {
        "allow": "",
        "log": f" [bold yellow]FLAGGED ({rule})[/]",
        "review": f" [bold red]NEEDS APPROVAL, NOT RUN ({asked})[/]",
        "approved": f" [bold green]APPROVED ({asked})[/]",
    }.get(recorded, f" [bold red]DENIED ({rule})[/]")
    lines = [
        f"[dim]{clock.offset(s.get('ts')):>10}[/] [bold]#{step.seq}[/] "
        f"{escape(describe_statement(s, width=0, shorten=TIMELINE_STATEMENT_CHARS))}{verdict}",
        f"{'':>11} → {describe_outcome(s, step.outcome)}",
    ]
    lines += [
        f"[dim]{clock.offset(a.get('ts')):>10}[/]   [cyan]approval {describe_approval_step(a)}[/]"
        for a in step.approvals
    ]
    return "\n".join(lines)


def describe_approval_step(a: dict[str, Any]) -> str:
    """One approval record (kind "approval") as a line of the timeline."""
    name = escape(str(a.get("approval", "?")))
    step = str(a.get("step", "?"))
    approver = a.get("approver") or {}
    who = escape(str(approver.get("name") or approver.get("identity") or "?"))
    reason = f": {escape(str(a['reason']))}" if a.get("reason") else ""
    if step == "requested":
        estimate = f", estimate {a['estimate']} rows" if a.get("estimate") is not None else ""
        return f"{name} requested ({a.get('mode', '?')} mode{estimate})"
    if step == "approval_added":
        return f"{name} approved by {who} ({a.get('approvals')} of {a.get('needed')})"
    if step in ("approved", "denied"):
        return f"{name} {step} by {who}{reason}"
    if step == "used":
        asked = a.get("requested") or {}
        where = (
            ""
            if asked.get("session") == a.get("session")
            else f" in session {escape(str(asked.get('session')))}"
        )
        return f"{name} used (asked by #{asked.get('seq')}{where})"
    return f"{name} {escape(step)}{reason}"


def _print_footer(timeline: Any) -> None:
    end = timeline.end
    out.print()
    if end is None:
        out.print("[yellow]no end record[/]")
        return
    out.print(
        f"ended    {short_ts(end.get('ts'))} UTC: {escape(str(end.get('reason')))}; "
        f"{end.get('statements')} statements, {end.get('errors')} errors, {end.get('duration_s')}s"
    )


def _policy(timeline: Any, config_path: Path, sets: str | None, as_json: bool) -> None:
    """``--policy``: the session under today's guardrails (hoopy/policy/rejudge.py)."""
    from hoopy.policy.rejudge import rejudge

    config = load_cli_config(config_path, required=True)
    assert config is not None
    names = None
    if sets is not None:
        names = [n for n in (x.strip() for x in sets.split(",")) if n]
        unknown = [n for n in names if n not in config.guardrails]
        if unknown:
            fail(
                f"no rule set named {', '.join(map(repr, unknown))} in {config_path} "
                f"(known: {', '.join(sorted(config.guardrails))})"
            )
    results = rejudge(timeline.start, timeline.steps, config, names)
    changed = [r for r in results if r.changed]
    if as_json:
        print(
            json.dumps(
                {
                    "session": timeline.session,
                    "statements": [r.to_json() for r in results],
                    "changed": len(changed),
                },
                indent=1,
            )
        )
        return
    _print_header(timeline)
    for r in results:
        if r.verdict is None and not r.note:
            continue
        was = r.recorded + (f" ({r.recorded_rule})" if r.recorded_rule else "")
        now = "-" if r.verdict is None else r.verdict + (f" ({r.rule})" if r.rule else "")
        mark = "[bold yellow]CHANGED[/] " if r.changed else ""
        text = escape((r.sql or "")[:200])
        line = f"[bold]#{r.seq}[/] {mark}{escape(was)} → {escape(now)}  {text}"
        if r.note:
            line += f"\n{'':>6}[dim]{escape(r.note)}[/]"
        out.print(line)
    out.print()
    judged = sum(1 for r in results if r.verdict is not None)
    out.print(f"{len(changed)} of {judged} judged statements would now get a different verdict")


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
    from hoopy.config.masking import masking_for
    from hoopy.gateway.replay import ReplayMasking
    from hoopy.gateway.replay import replay as run_replay
    from hoopy.gateway.upstream import UpstreamError
    from hoopy.gateway.views import ViewCatalog

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
                line = describe_statement(
                    p.step.statement, width=0, shorten=TIMELINE_STATEMENT_CHARS
                )
                out.print(f"{mark} #{p.step.seq}{kind} {escape(line)}{why}")
        return
    if target_name is None:
        raise typer.BadParameter("--execute needs --target NAME (a target in the config)")
    # The masking keys read, as serving reads them: results are masked with the real keys.
    config = load_cli_config(config_path, required=True, read_masking_keys=True)
    assert config is not None
    target = config.targets.get(target_name)
    if target is None:
        fail(
            f"no target {target_name!r} in {config_path} "
            f"(targets: {', '.join(sorted(config.targets))})"
        )
        return
    if writes:
        shown = "; ".join(
            f"#{p.step.seq} {describe_statement(p.step.statement, width=60)}" for p in writes[:3]
        )
        fail(
            f"the session has {len(writes)} statement(s) that may write ({shown}); "
            "re-run with --allow-writes to run them against "
            f"target '{target_name}', or --skip-writes to run only the reads"
        )
    start = timeline.start or {}
    recorded_caps = (start.get("client") or {}).get("capabilities")
    db = database if database is not None else start.get("database")
    # Results are masked as the recorded session's were (its target's sets and its roles',
    # in today's config), so they compare with what its client saw.
    recorded_target = start.get("target")
    if recorded_target not in config.targets:
        recorded_target = target_name
    roles = [str(r) for r in (start.get("principal") or {}).get("roles") or []]
    policy = masking_for(config, str(recorded_target), roles)
    if policy is not None and not as_json:
        err.print(
            f"[dim]results are masked as session {escape(timeline.session)} was masked "
            f"(target '{escape(str(recorded_target))}', roles {escape(', '.join(roles))})[/]"
        )

    async def run() -> Any:
        masking = None
        if policy is not None:
            masking = ReplayMasking(policy, ViewCatalog(target))

        async def replay_with(on_step: Callable[[Any, Any], None] | None) -> Any:
            return await run_replay(
                target,
                planned,
                session=timeline.session,
                database=db,
                recorded_capabilities=recorded_caps,
                on_step=on_step,
                masking=masking,
            )

        if as_json or not sys.stderr.isatty():
            return await replay_with(None)
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task(f"replaying on {target_name}", total=len(planned))
            return await replay_with(lambda _, __: progress.advance(task))

    try:
        report = trio.run(run)
    except UpstreamError as exc:
        fail(exc.message)
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


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
