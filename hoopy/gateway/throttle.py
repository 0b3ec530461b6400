"""Failed-login delays per (user, client address), on the model of MySQL's connection_control.

MySQL's ``connection_control`` plugin (MySQL 8.0 reference, 8.4.2 "Connection Control
Plugins") counts consecutive failed connection attempts per ``user@host`` and, past
``connection_control_failed_connections_threshold`` (default 3), answers each further attempt
for that account only after a delay that grows with the count, up to
``connection_control_max_connection_delay``; a successful login resets the count. It never
refuses outright, so a stranger who mistypes (or attacks) one account from a shared address
cannot lock anyone else out, and the account's owner still gets in with the right password,
only later.

hoopy does the same, keyed by the user name the client sent and its address (``unix-socket``
for unix-socket clients), for logins and ``COM_CHANGE_USER`` alike:

- the delay is applied *before the answer*, whatever the answer is, so its length tells an
  attacker nothing about whether a guess was right;
- it doubles with each failure past the threshold (``base``, ``2 * base``, ...), capped;
- counts are forgotten after ``forget_after`` seconds without a failure, and at most
  ``MAX_TRACKED_KEYS`` keys are kept (the least recently failed are dropped first), so a
  flood of made-up user names cannot grow memory without bound.

Only the client's own failures count: hoopy's failure to log into the target (a rotated
database password) is an operator problem and is never held against the client.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

log = logging.getLogger("hoopy.server")

# Keys tracked at once. 100,000 entries are a few tens of MiB at most.
MAX_TRACKED_KEYS = 100_000


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class LoginDelays:
    """Consecutive failed logins per (user, address) and the delay they earn."""

    def __init__(
        self, threshold: int, base_delay: float, max_delay: float, forget_after: float
    ) -> None:
        self.threshold = threshold
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()

    def _current(self, key: tuple[str, str], now: float) -> _Failures | None:
        entry = self._failures.get(key)
        if entry is not None and now - entry.last >= self.forget_after:
            del self._failures[key]
            return None
        return entry

    def failures(self, user: str, address: str, now: float | None = None) -> int:
        entry = self._current((user, address), time.monotonic() if now is None else now)
        return 0 if entry is None else entry.count

    def delay(self, user: str, address: str, now: float | None = None) -> float:
        """Seconds to wait before answering this attempt (0 below the threshold)."""
        count = self.failures(user, address, now)
        if count < self.threshold:
            return 0.0
        # 2 ** 64 is far past any cap; bounding the exponent keeps the float finite.
        exponent = min(count - self.threshold, 64)
        return float(min(self.max_delay, self.base_delay * 2.0**exponent))

    def failed(self, user: str, address: str, now: float | None = None) -> int:
        """Count a failure; returns the new consecutive count."""
        now = time.monotonic() if now is None else now
        key = (user, address)
        entry = self._current(key, now)
        if entry is None:
            while len(self._failures) >= MAX_TRACKED_KEYS:
                self._failures.popitem(last=False)
            entry = self._failures[key] = _Failures(0, now)
        else:
            self._failures.move_to_end(key)
        entry.count += 1
        entry.last = now
        if entry.count == self.threshold:
            log.warning(
                "%d failed logins in a row for user %r from %s: its next attempts are delayed "
                "(login_delay_after_failures)",
                entry.count,
                user,
                address,
            )
        return entry.count

    def succeeded(self, user: str, address: str) -> None:
        self._failures.pop((user, address), None)
