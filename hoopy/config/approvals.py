"""``[approvals]`` and each review rule's ``approval`` table (docs/approvals.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hoopy.approvals.policy import ApprovalPolicy, Mode, Require
from hoopy.config.fields import (
    Ctx,
    check_keys,
    enum_value,
    get_value,
    parse_hostport,
    positive_value,
    resolve_path,
    str_list,
)
from hoopy.config.model import AdminListener, ApprovalSettings, Secret, WebhookSettings

POLICY_KEYS = {"mode", "timeout", "valid_for", "approvers", "approvals", "require"}
_SETTINGS_KEYS = POLICY_KEYS | {
    "enabled",
    "socket",
    "socket_mode",
    "directory",
    "listener",
    "webhook_url",
    "webhook_secret_env",
    "webhook_secret_file",
    "webhook_timeout",
}
_LISTENER_KEYS = {"tcp", "tls_cert", "tls_key", "issuers"}


def approval_policy(
    ctx: Ctx, table: dict[str, Any], keys: tuple[str | int, ...], base: ApprovalPolicy
) -> ApprovalPolicy:
    """A policy from ``table``'s keys, each missing one taken from ``base``."""
    mode = enum_value(
        ctx,
        (*keys, "mode"),
        get_value(ctx, table, keys, "mode", str, base.mode.value),
        Mode,
        [m.value for m in Mode],
    )
    require = enum_value(
        ctx,
        (*keys, "require"),
        get_value(ctx, table, keys, "require", str, base.require.value),
        Require,
        [r.value for r in Require],
    )
    approvers = tuple(
        str_list(
            ctx, keys, "approvers", get_value(ctx, table, keys, "approvers", list, base.approvers)
        )
    )
    count = positive_value(ctx, table, keys, "approvals", int, base.approvals)
    return ApprovalPolicy(
        mode=mode,
        timeout=positive_value(ctx, table, keys, "timeout", float, base.timeout),
        valid_for=positive_value(ctx, table, keys, "valid_for", float, base.valid_for),
        approvers=approvers,
        approvals=count,
        require=require,
    )


def parse_approvals(
    ctx: Ctx, data: dict[str, Any], base: Path, state_dir: Path
) -> ApprovalSettings | None:
    keys: tuple[str | int, ...] = ("approvals",)
    a = get_value(ctx, data, (), "approvals", dict, {})
    check_keys(ctx, a, keys, _SETTINGS_KEYS)
    if not get_value(ctx, a, keys, "enabled", bool, True):
        return None
    mode_text = get_value(ctx, a, keys, "socket_mode", str, "0600")
    try:
        socket_mode = int(mode_text, 8)
    except ValueError:
        socket_mode = -1
    if not 0 < socket_mode <= 0o777 or socket_mode & 0o007:
        raise ctx.error(
            (*keys, "socket_mode"),
            f"must be octal like \"0600\" or \"0660\", without permissions for others "
            f"(got {mode_text!r}): whoever can connect can approve",
        )
    socket = get_value(ctx, a, keys, "socket", str, None)
    directory = get_value(ctx, a, keys, "directory", str, None)
    secret_env = get_value(ctx, a, keys, "webhook_secret_env", str, None)
    secret_file = get_value(ctx, a, keys, "webhook_secret_file", str, None)
    if secret_env and secret_file:
        raise ctx.error(
            (*keys, "webhook_secret_file"),
            "set webhook_secret_env or webhook_secret_file, not both",
        )
    url = get_value(ctx, a, keys, "webhook_url", str, None)
    webhook = None
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise ctx.error((*keys, "webhook_url"), "must be an http:// or https:// URL")
        webhook = WebhookSettings(
            url=url,
            secret=Secret(
                env=secret_env, file=resolve_path(base, secret_file) if secret_file else None
            )
            if secret_env or secret_file
            else None,
            timeout=positive_value(ctx, a, keys, "webhook_timeout", float, 5.0),
        )
    elif secret_env or secret_file:
        raise ctx.error((*keys, "webhook_url"), "a webhook secret is set but no webhook_url")
    return ApprovalSettings(
        socket=resolve_path(base, socket) if socket else state_dir / "admin.sock",
        socket_mode=socket_mode,
        directory=resolve_path(base, directory) if directory else None,
        defaults=approval_policy(ctx, a, keys, ApprovalPolicy()),
        listener=_listener(ctx, a, keys, base),
        webhook=webhook,
    )


def _listener(
    ctx: Ctx, a: dict[str, Any], keys: tuple[str | int, ...], base: Path
) -> AdminListener | None:
    table = get_value(ctx, a, keys, "listener", dict, None)
    if table is None:
        return None
    lk: tuple[str | int, ...] = (*keys, "listener")
    check_keys(ctx, table, lk, _LISTENER_KEYS)
    cert = get_value(ctx, table, lk, "tls_cert", str, None)
    key = get_value(ctx, table, lk, "tls_key", str, None)
    if bool(cert) != bool(key):
        raise ctx.error((*lk, "tls_cert"), "set both tls_cert and tls_key, or neither")
    return AdminListener(
        tcp=parse_hostport(ctx, (*lk, "tcp"), get_value(ctx, table, lk, "tcp", str)),
        tls_cert=resolve_path(base, cert) if cert else None,
        tls_key=resolve_path(base, key) if key else None,
        issuers=tuple(str_list(ctx, lk, "issuers", get_value(ctx, table, lk, "issuers", list, []))),
    )
