"""The approvals webhook: an HTTP POST with a JSON body on each new request and decision.

Resource handling: ``Webhook.run`` owns a queue and sends its events one at a time, each in
a worker thread (urllib blocks). Error handling: a failed delivery is retried
(``RETRY_DELAYS``) and then logged and dropped; the webhook is a notification, never part
of a decision, so nothing waits for it and nothing fails because of it. The log names the
event and the HTTP status, never the body or the secret.

With a secret, each body is signed the way GitHub signs its webhooks:
``X-Hoopy-Signature: sha256=<hex HMAC-SHA256(secret, body)>``, so a receiver can check the
request came from this gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from typing import Any

import trio

from hoopy.config.model import SecretUnavailable, WebhookSettings

log = logging.getLogger("hoopy.approvals")

# Seconds before each retry of a delivery that failed (then it is dropped).
RETRY_DELAYS = (1.0, 5.0)
# Events waiting beyond this are dropped (and logged): a dead receiver must not grow memory.
QUEUE_SIZE = 1000


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook POST that redirects is refused: a 307 could carry the body elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Webhook:
    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](QUEUE_SIZE)

    def notify(self, event: str, approval: dict[str, Any]) -> None:
        """Queue one event (never blocks)."""
        try:
            self._send.send_nowait({"event": event, "approval": approval})
        except trio.WouldBlock:
            log.error("approvals webhook: queue full, %s of %s dropped", event, approval["id"])

    async def run(self) -> None:
        async for body in self._receive:
            await self._deliver(body)

    async def _deliver(self, body: dict[str, Any]) -> None:
        data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        label = f"{body['event']} of {body['approval']['id']}"
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            if delay:
                await trio.sleep(delay)
            try:
                status = await trio.to_thread.run_sync(self._post, data, abandon_on_cancel=True)
            except SecretUnavailable as exc:
                log.error("approvals webhook: cannot sign %s: %s", label, exc)
                return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                log.warning("approvals webhook: %s, attempt %d: %s", label, attempt + 1, reason)
                continue
            if 200 <= status < 300:
                return
            log.warning("approvals webhook: %s, attempt %d: HTTP %d", label, attempt + 1, status)
        log.error("approvals webhook: %s not delivered", label)

    def _post(self, data: bytes) -> int:
        headers = {"Content-Type": "application/json", "User-Agent": "hoopy-approvals"}
        if self.settings.secret is not None:
            mac = hmac.new(self.settings.secret.read(), data, hashlib.sha256).hexdigest()
            headers["X-Hoopy-Signature"] = f"sha256={mac}"
        request = urllib.request.Request(
            self.settings.url, data=data, headers=headers, method="POST"
        )
        opener = urllib.request.build_opener(_NoRedirects)
        try:
            with opener.open(request, timeout=self.settings.timeout) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code
