"""The starter config ``hoopy init`` writes: built as data, written with tomli-w, then
commented key by key (tomli-w writes no comments), so what a user reads first explains
itself. Pure: ``starter_config`` returns the text; the command asks, writes and lints it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import tomli_w

LOGINS = ("tokens", "gateway_users", "passthrough")


@dataclass(frozen=True)
class StarterChoices:
    """What a user must decide; everything else gets hoopy's defaults."""

    target: str = "app"
    host: str = "127.0.0.1"
    port: int = 3306
    database: str | None = None
    login: str = "tokens"
    user: str = "hoopy"  # hoopy's own account on the database (not for passthrough)
    password_env: str = "HOOPY_DB_PASSWORD"
    listen: str = "127.0.0.1:3307"
    issuer: str = "dev"  # "dev" (hoopy token) or "github" (GitHub Actions OIDC)
    github_owner: str = ""  # for issuer "github": the organisation or user
    group: str = "agents"  # who gets the target: a group from the token or gateway user
    masking: bool = True


_HEADER = """\
# hoopy config, written by `hoopy init`. Every key is described in docs/configuration.md;
# check changes with `hoopy lint-config`. Paths are relative to this file.
"""

# Comments by dotted key ("" for a table's header).
_COMMENTS: dict[str, str] = {
    "gateway": "the gateway process",
    "gateway.state_dir": "TLS certificate, approvals, audit trail (by default)",
    "listeners": "where clients connect; one listener per target",
    "listeners.tcp": "loopback only; 0.0.0.0:PORT to take connections from other machines",
    "listeners.tls": "offer TLS (a self-signed certificate is made on first start)",
    "listeners.allow_cleartext_password": "loopback only: lets the mariadb CLI send a token",
    "targets.*": "the database hoopy stands in front of",
    "targets.*.login": "tokens | gateway_users | passthrough (docs/configuration.md#login-modes)",
    "targets.*.user": "hoopy's own account on the database: clients never see it",
    "targets.*.password_env": "the environment variable holding that account's password",
    "targets.*.guardrails": "the built-in rules: no DELETE/UPDATE without WHERE, no DROP, ...",
    "targets.*.masking": "masking sets applied to every session on this target",
    "issuers.*": "who may sign the tokens clients send as their password",
    "issuers.*.jwks_file": "written by `hoopy token init --dir .hoopy`",
    "roles.*": "who gets which target: matched on the token's (or user's) groups",
    "masking.*": "sensitive columns, masked in results (docs/masking.md)",
    "masking.*.hmac_key_env": "a random key: openssl rand -hex 32",
    "masking.*.rules.strategy": "redact | keep_last | hmac | null",
    "audit": "the audit trail: every statement, before it runs (docs/audit.md)",
    "audit.durability": "os: survives a hoopy crash; strict: fsync before each statement",
}


def starter_data(c: StarterChoices) -> dict[str, Any]:
    if c.login not in LOGINS:
        raise ValueError(f"login must be one of {', '.join(LOGINS)}")
    target: dict[str, Any] = {"host": c.host, "port": c.port, "login": c.login}
    if c.login != "passthrough":
        target["user"] = c.user
        target["password_env"] = c.password_env
    if c.database:
        target["database"] = c.database
    target["guardrails"] = ["default"]
    listener: dict[str, Any] = {"name": c.target, "target": c.target, "tcp": c.listen, "tls": True}
    if c.login == "tokens" and c.listen.startswith(("127.", "localhost:", "[::1]:")):
        listener["allow_cleartext_password"] = True
    data: dict[str, Any] = {
        "gateway": {"state_dir": ".hoopy"},
        "listeners": [listener],
        "targets": {c.target: target},
    }
    if c.masking:
        target["masking"] = ["pii"]
        data["masking"] = {
            "pii": {
                "rules": [
                    {"name": "emails", "columns": ["*.email"], "strategy": "redact"},
                    {"name": "cards", "columns": ["*.card*"], "strategy": "keep_last",
                     "keep": 4},
                ]
            }
        }  # fmt: skip
    if c.login == "tokens":
        if c.issuer == "github":
            owner = c.github_owner or "YOUR-ORG"
            data["issuers"] = {
                "github": {
                    "issuer": "https://token.actions.githubusercontent.com",
                    "audience": f"https://github.com/{owner}",
                    "jwks_url": "https://token.actions.githubusercontent.com/.well-known/jwks",
                    "groups_claim": "repository_owner",
                }
            }
            data["roles"] = {
                "ci": {"issuers": ["github"], "groups": [owner], "targets": [c.target]}
            }
        else:
            data["issuers"] = {
                "dev": {
                    "issuer": "hoopy-dev",
                    "audience": "hoopy",
                    "jwks_file": ".hoopy/dev-jwks.json",
                }
            }
            data["roles"] = {
                c.group: {"issuers": ["dev"], "groups": [c.group], "targets": [c.target]}
            }
    elif c.login == "gateway_users":
        data["roles"] = {c.group: {"groups": [c.group], "targets": [c.target]}}
    data["audit"] = {"durability": "os"}
    return data


def starter_config(c: StarterChoices) -> str:
    """The commented TOML text for ``c``."""
    return _HEADER + _annotate(tomli_w.dumps(starter_data(c)))


_TABLE = re.compile(r"^\[\[?([^\]]+)\]\]?$")
_KEY = re.compile(r"^([A-Za-z0-9_-]+) = ")


def _comment_for(table: str, key: str) -> str | None:
    parts = table.split(".") if table else []
    candidates = [".".join([*parts, key]) if key else ".".join(parts)]
    if len(parts) >= 2:
        starred = [parts[0], "*", *parts[2:]]
        candidates.append(".".join([*starred, key]) if key else ".".join(starred))
    return next((_COMMENTS[k] for k in candidates if k in _COMMENTS), None)


def _annotate(text: str) -> str:
    out: list[str] = []
    table = ""
    for line in text.splitlines():
        header = _TABLE.match(line)
        if header:
            table = header.group(1).strip()
            comment = _comment_for(table, "")
            if comment:
                out.append(f"# {comment}")
            out.append(line)
            continue
        key = _KEY.match(line)
        comment = _comment_for(table, key.group(1)) if key else None
        out.append(f"{line}  # {comment}" if comment else line)
    return "\n".join(out) + "\n"
