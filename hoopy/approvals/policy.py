"""Who may approve a held statement, and when a request has enough approvals. Sans-IO, pure.

A guardrail rule with ``action = "review"`` carries an ``ApprovalPolicy`` (its
``[guardrails.SET.rules.approval]`` table, or the ``[approvals]`` defaults): the mode, how
long a request waits, which groups may approve, how many distinct people must, and whether
they must together cover every listed group (``require = "all"``) or each be in one of them
(``"any"``). The principal who asked never counts as an approver (no self-approval).

Identities are strings that cannot collide across the ways a person proves who they are:
``token:<issuer>:<subject>``, ``gateway_user:<name>``, ``passthrough:<name>`` for the
requester, ``os:<user>`` for an approver on the local admin socket and ``token:...`` for one
on the remote admin listener. A token approver with the requester's issuer and subject is the
requester.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hoopy.identity.principal import Principal


class Mode(enum.Enum):
    HOLD = "hold"  # the client's statement waits for the decision
    RETRY = "retry"  # the client is refused with the approval id and sends it again


class Require(enum.Enum):
    ANY = "any"  # each approver is in one of ``approvers``
    ALL = "all"  # the approvers together cover every group of ``approvers``


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    mode: Mode = Mode.HOLD
    # hold: how long the statement waits; retry: how long the request waits for a decision.
    timeout: float = 300.0
    # retry: how long an approval, once granted, lets the same statement through (once).
    valid_for: float = 3600.0
    approvers: tuple[str, ...] = ()  # groups; empty: anyone who can reach the admin socket
    approvals: int = 1  # distinct approvers needed
    require: Require = Require.ANY

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "timeout": self.timeout,
            "valid_for": self.valid_for,
            "approvers": list(self.approvers),
            "approvals": self.approvals,
            "require": self.require.value,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApprovalPolicy:
        return cls(
            mode=Mode(data["mode"]),
            timeout=float(data["timeout"]),
            valid_for=float(data["valid_for"]),
            approvers=tuple(data["approvers"]),
            approvals=int(data["approvals"]),
            require=Require(data["require"]),
        )


@dataclass(frozen=True, slots=True)
class Approver:
    """Someone deciding on a request, as the admin API established them."""

    identity: str
    name: str
    groups: tuple[str, ...]
    via: str  # "unix_socket" or "admin_listener"

    @property
    def remote(self) -> bool:
        return self.via != "unix_socket"

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "name": self.name,
            "groups": list(self.groups),
            "via": self.via,
        }


def principal_identity(principal: Principal) -> str:
    if principal.method == "token":
        return f"token:{principal.issuer}:{principal.name}"
    return f"{principal.method}:{principal.name}"


def os_identity(user: str) -> str:
    return f"os:{user}"


def token_identity(principal: Principal) -> str:
    return f"token:{principal.issuer}:{principal.name}"


def refusal(
    policy: ApprovalPolicy,
    approver: Approver,
    requester: str,
    decided: Iterable[str] = (),
) -> str | None:
    """Why ``approver`` may not decide this request (None: they may).

    ``decided``: the identities that have approved it already."""
    if approver.identity == requester:
        return "the principal who asked for an approval cannot approve it"
    if approver.identity in decided:
        return "you have approved this request already; another approver must"
    if policy.approvers:
        if not set(policy.approvers) & set(approver.groups):
            return (
                f"approving needs membership of one of {', '.join(policy.approvers)}; "
                f"{approver.name} is in {', '.join(approver.groups) or 'no group'}"
            )
    elif approver.remote:
        # Without groups, only the admin socket's file permissions decide; a token from an
        # issuer (every agent has one) is not enough.
        return (
            "this rule names no approver groups, so it can be approved only on the gateway's "
            "local admin socket"
        )
    return None


def satisfied(policy: ApprovalPolicy, approvals: Sequence[Approver]) -> bool:
    """Whether these (distinct, eligible) approvals are enough."""
    if len({a.identity for a in approvals}) < policy.approvals:
        return False
    if policy.require is Require.ALL and policy.approvers:
        covered = {g for a in approvals for g in a.groups}
        return all(g in covered for g in policy.approvers)
    return True


def normalized_text(sql: bytes) -> bytes:
    """The text a retry must repeat: the statement less surrounding white space and trailing
    semicolons. Nothing inside is rewritten: collapsing white space or comments would need
    to know where literals end, which depends on the session's sql_mode; two texts that
    differ anywhere else are two statements."""
    # bytes.strip's default set, plus ";" at the end: "SELECT 1; ;" is "SELECT 1" again.
    return sql.lstrip().rstrip(b" \t\n\r\x0b\x0c;")


def fingerprint(
    key: bytes,
    *,
    requester: str,
    target: str,
    database: str | None,
    command: str,
    sql: bytes,
    params: Sequence[Any] = (),
) -> str:
    """What binds a retry to the approved statement: who, where, which text and parameters.

    Keyed (the store's own random key), so the stored value cannot be used to test guesses
    of a statement's secret literals."""
    head = json.dumps([requester, target, database, command, len(params)]).encode()
    mac = hmac.new(key, head, hashlib.sha256)
    text = normalized_text(sql)
    mac.update(len(text).to_bytes(8, "big") + text)
    for p in params:
        mac.update(b"\x00" + repr(p).encode("utf-8", "backslashreplace"))
    return mac.hexdigest()
