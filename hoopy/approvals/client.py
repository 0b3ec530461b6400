"""The admin API's client, for ``hoopy approvals`` (blocking: the CLI's own process).

Over the gateway's local unix socket (the approver is this process's OS user) or over its
TLS admin listener with a bearer token (``--url https://HOST:PORT``).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit


class AdminError(Exception):
    """The gateway refused the request, or could not be reached (the message says which)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.path))
        self.sock = sock


class AdminClient:
    def __init__(
        self,
        *,
        socket_path: Path | None = None,
        url: str | None = None,
        token: str | None = None,
        ca_file: Path | None = None,
        timeout: float = 40.0,
    ) -> None:
        self.socket_path = socket_path
        self.url = url
        self.token = token
        self.ca_file = ca_file
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if self.url is None:
            assert self.socket_path is not None
            return _UnixConnection(self.socket_path, self.timeout)
        split = urlsplit(self.url)
        if split.scheme != "https" or not split.hostname:
            raise AdminError(f"{self.url}: the admin listener's URL is https://HOST:PORT")
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        return http.client.HTTPSConnection(
            split.hostname, split.port or 443, timeout=self.timeout, context=context
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = self._connection()
        where = self.url or str(self.socket_path)
        try:
            connection.request(method, path, body=data, headers=headers)
            reply = connection.getresponse()
            raw = reply.read()
        except FileNotFoundError:
            raise AdminError(
                f"no admin socket at {where}: is the gateway running (hoopy serve) with this "
                "config?"
            ) from None
        except PermissionError:
            raise AdminError(
                f"permission denied on {where}: its file mode ([approvals] socket_mode) decides "
                "who may approve"
            ) from None
        except ssl.SSLError as exc:
            raise AdminError(
                f"TLS to {where} failed: {exc.reason}; pass --ca with the gateway's certificate"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise AdminError(f"cannot reach the gateway at {where}: {exc}") from None
        finally:
            connection.close()
        try:
            payload = json.loads(raw)
        except ValueError:
            raise AdminError(f"the gateway at {where} sent a reply that is not JSON") from None
        if reply.status != 200:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise AdminError(str(message or f"HTTP {reply.status}"), reply.status)
        return payload

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/v1/whoami")
        return result

    def list(
        self, state: str = "pending", *, wait: float = 0.0, after: int = -1
    ) -> dict[str, Any]:
        query = f"?state={quote(state)}"
        if wait:
            query += f"&wait={wait:g}&after={after}"
        result: dict[str, Any] = self.call("GET", "/v1/approvals" + query)
        return result

    def show(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/approvals/{quote(request_id, safe='')}")
        return result

    def decide(self, request_id: str, approve: bool, reason: str | None) -> dict[str, Any]:
        verb = "approve" if approve else "deny"
        body = {"reason": reason} if reason is not None else {}
        result: dict[str, Any] = self.call(
            "POST", f"/v1/approvals/{quote(request_id, safe='')}/{verb}", body
        )
        return result
