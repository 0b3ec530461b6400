"""Roles: which targets a principal may reach. Pure functions over the config; deny by default."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from hoopy.config.model import Role
from hoopy.identity.principal import Principal


def claim_at(claims: Mapping[str, Any], path: str) -> Any | None:
    """The value at a dotted path (``realm_access.roles``), or None where it is missing.

    Keys may contain dots themselves (Kubernetes' ``kubernetes.io``): at each level the
    longest key that exists wins, so ``kubernetes.io.namespace`` finds
    ``{"kubernetes.io": {"namespace": ...}}``.
    """
    parts = path.split(".")
    value: Any = claims
    while parts:
        if not isinstance(value, Mapping):
            return None
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in value:
                value, parts = value[key], parts[i:]
                break
        else:
            return None
    return value


def _claim_matches(value: Any, patterns: tuple[str, ...]) -> bool:
    """A string (or integer) claim matches a glob; a list claim matches if any item does."""
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, bool) or not isinstance(item, str | int):
            continue
        if any(fnmatch.fnmatchcase(str(item), pattern) for pattern in patterns):
            return True
    return False


def role_matches(role: Role, principal: Principal) -> bool:
    """Every condition the role sets must hold; a role that sets none matches nobody."""
    if not (role.groups or role.claims or role.issuers):
        return False
    if role.groups and not set(role.groups) & set(principal.groups):
        return False
    if role.issuers and principal.issuer not in role.issuers:
        return False
    for path, patterns in role.claims:
        if not _claim_matches(claim_at(principal.claims, path), patterns):
            return False
    return True


def matching_roles(roles: Iterable[Role], principal: Principal) -> list[str]:
    return [role.name for role in roles if role_matches(role, principal)]


def granted_targets(roles: Iterable[Role], principal: Principal) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        if role_matches(role, principal):
            granted.update(role.targets)
    return frozenset(granted)
