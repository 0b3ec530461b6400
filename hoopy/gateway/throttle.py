"""Failed-login throttling per client address (like MySQL's max_connect_errors, but timed)."""

from __future__ import annotations

import logging
import time
from collections import deque

log = logging.getLogger("hoopy.server")

# Addresses tracked at once; the oldest are forgotten first, so a flood of addresses cannot
# grow memory without bound.
MAX_TRACKED_ADDRESSES = 100_000


class LoginThrottle:
    """At most ``limit`` failed logins per address within ``window`` seconds; past that the
    address is refused until its oldest failure leaves the window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
        return failures

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        failures = self._recent(address, now)
        if not failures:
            if len(self._failures) >= MAX_TRACKED_ADDRESSES:
                self._failures.pop(next(iter(self._failures)))
            self._failures[address] = failures
        failures.append(now)
        if len(failures) == self.limit:
            log.warning(
                "%s: %d failed logins within %gs: refusing it until they age out",
                address,
                self.limit,
                self.window,
            )

    def blocked(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return len(self._recent(address, now)) >= self.limit
