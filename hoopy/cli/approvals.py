"""``hoopy approvals list|show|approve|deny``: decide on statements the guardrails hold.

The work is the running gateway's (``hoopy/gateway/admin.py``); this module finds it, sends
the request (``hoopy/approvals/client.py``) and prints: rich for people, ``--json`` for
scripts.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hoopy.approvals.client import AdminClient, AdminError
from hoopy.cli.common import err, fail, load_cli_config, out

approvals_app = typer.Typer(
    help="Decide on statements the guardrails hold for a human's approval.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="The gateway's TOML config (to find its admin socket)."),
]
SocketOption = Annotated[
    Path | None,
    typer.Option("--socket", help="The gateway's admin socket (default: from the config)."),
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="A remote gateway's admin listener, https://HOST:PORT (then a token is needed).",
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="A file holding your approver token (default: $HOOPY_APPROVER_TOKEN).",
    ),
]
CaOption = Annotated[
    Path | None,
    typer.Option("--ca", help="The certificate to trust for --url (the gateway's)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead.")]

TOKEN_ENV = "HOOPY_APPROVER_TOKEN"


def register(app: Any) -> None:
    app.add_typer(approvals_app, name="approvals")


def _client(
    config: Path,
    socket_path: Path | None,
    url: str | None,
    token_file: Path | None,
    ca: Path | None,
) -> AdminClient:
    if url is not None:
        token = None
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as exc:
                fail(f"cannot read {token_file}: {exc.strerror}")
        else:
            token = os.environ.get(TOKEN_ENV)
        if not token:
            fail(f"--url needs your approver token: --token-file FILE or ${TOKEN_ENV}")
        return AdminClient(url=url, token=token, ca_file=ca)
    if socket_path is None:
        cfg = load_cli_config(config, required=True)
        assert cfg is not None
        if cfg.approvals is None:
            fail(f"{config}: approvals are turned off ([approvals] enabled = false)")
            raise AssertionError
        socket_path = cfg.approvals.socket
    return AdminClient(socket_path=socket_path)


def _call(action: Any) -> Any:
    try:
        return action()
    except AdminError as exc:
        fail(exc.message, 1)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(sql: str | None, width: int = 60) -> str:
    text = " ".join((sql or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(approvals: list[dict[str, Any]]) -> Table:
    table = Table(show_lines=False)
    for column in ("id", "state", "asked (UTC)", "who", "target", "rule", "rows", "statement"):
        table.add_column(column, overflow="fold")
    for a in approvals:
        table.add_row(
            a["id"],
            a["state"],
            _when(a["asked_at"]),
            escape(str(a["requester"].get("name"))),
            escape(a["target"]),
            escape(a["rule"]),
            "-" if a.get("estimate") is None else str(a["estimate"]),
            escape(_short(a.get("sql"))),
        )
    return table


@approvals_app.command("list")
def list_approvals(
    all_states: Annotated[
        bool, typer.Option("--all", help="Every kept request, not only pending ones.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep running and print each new request.")
    ] = False,
    json_out: JsonOption = False,
    config: ConfigOption = Path("hoopy.toml"),
    socket_path: SocketOption = None,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
) -> None:
    """The pending approvals (with --watch: and each new one as it arrives)."""
    client = _client(config, socket_path, url, token_file, ca)
    state = "all" if all_states else "pending"
    result = _call(lambda: client.list(state))
    if not watch:
        if json_out:
            print(json.dumps(result["approvals"], indent=2))
        elif not result["approvals"]:
            out.print("no pending approvals" if not all_states else "no approvals")
        else:
            out.print(_table(result["approvals"]))
        return
    seen: set[str] = set()
    changes = -1
    try:
        while True:
            for a in result["approvals"]:
                if a["id"] in seen:
                    continue
                seen.add(a["id"])
                if json_out:
                    print(json.dumps(a), flush=True)
                else:
                    out.print(_table([a]))
            changes = result["changes"]
            try:
                result = client.list(state, wait=25, after=changes)
            except AdminError as exc:
                err.print(f"[yellow]{escape(exc.message)}; retrying[/]")
                time.sleep(2)
                result = {"approvals": [], "changes": changes}
    except KeyboardInterrupt:
        pass


@approvals_app.command("show")
def show(
    approval_id: Annotated[str, typer.Argument(help="The approval id (ap-...).")],
    json_out: JsonOption = False,
    config: ConfigOption = Path("hoopy.toml"),
    socket_path: SocketOption = None,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
) -> None:
    """Everything about one request: who asked, the statement, the rule, the decisions."""
    client = _client(config, socket_path, url, token_file, ca)
    a = _call(lambda: client.show(approval_id))
    if json_out:
        print(json.dumps(a, indent=2))
        return
    _print_request(a)


def _print_request(a: dict[str, Any]) -> None:
    r = a["requester"]
    policy = a["policy"]
    lines = [
        f"[bold]{a['id']}[/]  {a['state']}  ({a['mode']} mode)",
        f"asked      {_when(a['asked_at'])} UTC by {escape(str(r.get('name')))} "
        f"({r.get('method')}{', issuer ' + escape(str(r['issuer'])) if r.get('issuer') else ''})",
        f"groups     {escape(', '.join(r.get('groups') or []) or '-')}",
    ]
    for name, value in (r.get("claims") or {}).items():
        lines.append(f"  {escape(name):<9} {escape(str(value))}")
    lines += [
        f"target     {escape(a['target'])}, database {escape(str(a.get('database') or '-'))}",
        f"session    {a['session']} statement #{a['seq']} ({a['command']})",
        f"rule       {escape(a['rule'])}{': ' + escape(a['message']) if a.get('message') else ''}",
        "rows       "
        + ("EXPLAIN estimate not available" if a.get("estimate") is None else str(a["estimate"])),
        f"approvers  {policy['approvals']} from "
        f"{escape(', '.join(policy['approvers']) or 'anyone on the admin socket')}"
        f" ({policy['require']})",
        f"expires    {_when(a['expires_at'])} UTC",
    ]
    for d in a.get("approvals") or []:
        lines.append(f"approved   by {escape(d['name'])} ({d['via']}) at {_when(d['at'])} UTC")
    if a.get("reason"):
        lines.append(f"reason     {escape(a['reason'])}")
    out.print("\n".join(lines))
    out.print("statement:", style="bold")
    out.print(escape(a.get("sql") or "(not recorded)"), soft_wrap=True)
    if a.get("params"):
        out.print("parameters:", style="bold")
        for i, p in enumerate(a["params"], 1):
            value = p.get("value", p.get("hex"))
            out.print(f"  {i}. {escape(str(p.get('type')))} {escape(json.dumps(value))}")


def _decide(
    approve: bool,
    approval_id: str,
    reason: str | None,
    json_out: bool,
    client: AdminClient,
) -> None:
    result = _call(lambda: client.decide(approval_id, approve, reason))
    if json_out:
        print(json.dumps(result, indent=2))
        return
    out.print(f"{approval_id}: {escape(result['outcome'])}")


@approvals_app.command("approve")
def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval id (ap-...).")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    json_out: JsonOption = False,
    config: ConfigOption = Path("hoopy.toml"),
    socket_path: SocketOption = None,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
) -> None:
    """Approve a request (it runs once enough approvers have)."""
    _decide(True, approval_id, reason, json_out, _client(config, socket_path, url, token_file, ca))


@approvals_app.command("deny")
def deny(
    approval_id: Annotated[str, typer.Argument(help="The approval id (ap-...).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (the client is told).")],
    json_out: JsonOption = False,
    config: ConfigOption = Path("hoopy.toml"),
    socket_path: SocketOption = None,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
    ca: CaOption = None,
) -> None:
    """Deny a request: the statement does not run, and its client is told why."""
    _decide(False, approval_id, reason, json_out, _client(config, socket_path, url, token_file, ca))
