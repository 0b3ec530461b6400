"""Who a session acts for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """The identity a session's statements are attributed to.

    ``method`` says how it was established: ``passthrough`` (a database account, verified
    by the target itself), ``gateway_user`` (a static user verified by hoopy) or ``token``
    (an OIDC/JWT token verified by hoopy; then ``issuer``, ``claims`` and ``expires_at`` are
    set, and ``name`` is the token's subject).
    """

    name: str
    method: str
    groups: tuple[str, ...] = ()
    issuer: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    token_id: str | None = None
    client_id: str | None = None
    expires_at: float | None = None
    roles: tuple[str, ...] = ()  # the roles that granted the session's target
