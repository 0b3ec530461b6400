"""Who a session acts for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """The identity a session's statements are attributed to.

    ``method`` says how it was established: ``passthrough`` (a database account, verified
    by the target itself) or ``gateway_user`` (a static user verified by hoopy).
    """

    name: str
    method: str
    groups: tuple[str, ...] = ()
