"""The admin API's HTTP/1.1, sans-IO: one request per connection, JSON in and out.

Just enough of RFC 9112 for ``hoopy approvals``, ``curl --unix-socket`` and webhook-style
tools: a request line, header fields, and a body framed by ``Content-Length`` (section 6.3,
rule 6: without it a request has no body; ``Transfer-Encoding`` is refused with 501 rather
than guessed at, rule 4). Every response closes the connection (``Connection: close``), so
there is no pipelining to get wrong. Sizes are capped before anything is parsed: a request
head larger than ``MAX_HEAD_BYTES`` or a body larger than ``MAX_BODY_BYTES`` is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

# nginx's large_client_header_buffers is 8 KiB per line; a bearer token (a JWT with many
# groups) fits in 16 KiB with room to spare.
MAX_HEAD_BYTES = 32 * 1024
# A decision is a reason string; nothing the API accepts is bigger.
MAX_BODY_BYTES = 64 * 1024

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; a repeated field's values joined by ", "
    body: bytes = b""

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            data = json.loads(self.body)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the stack
            raise HTTPError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return data


@dataclass
class RequestReader:
    """Feed bytes as they arrive; ``request`` is set once the whole request is in."""

    buffer: bytearray = field(default_factory=bytearray)
    request: Request | None = None
    _head: tuple[str, str, dict[str, list[str]], dict[str, str], int] | None = None

    def feed(self, data: bytes | bytearray) -> Request | None:
        """Raises HTTPError for a request that cannot be served."""
        self.buffer += data
        if self._head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                # Up to three bytes of the blank line may be in already: the same head is
                # refused or not whichever way it was cut into reads.
                if len(self.buffer) > MAX_HEAD_BYTES + 3:
                    raise HTTPError(431, "request head too large")
                return None
            if end > MAX_HEAD_BYTES:
                raise HTTPError(431, "request head too large")
            self._head = _parse_head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
        method, path, query, headers, length = self._head
        if len(self.buffer) < length:
            return None
        self.request = Request(method, path, query, headers, bytes(self.buffer[:length]))
        return self.request


def _parse_head(head: bytes) -> tuple[str, str, dict[str, list[str]], dict[str, str], int]:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HTTPError(400, "the request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HTTPError(400, "malformed request line")
    method, target, _ = parts
    if not method.isalpha() or not target.startswith("/"):
        raise HTTPError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HTTPError(400, "malformed header field")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "transfer-encoding" in headers:
        raise HTTPError(501, "Transfer-Encoding is not supported; send Content-Length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit() or len(length_text) > 12:
        raise HTTPError(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise HTTPError(413, "request body too large")
    try:
        split = urlsplit(target)
    except ValueError:  # brackets that do not make an IPv6 authority
        raise HTTPError(400, "malformed request target") from None
    return method.upper(), split.path, parse_qs(split.query), headers, length


def response(status: int, body: Any) -> bytes:
    """A complete response with a JSON body; the connection closes after it."""
    data = json.dumps(body, indent=None, separators=(",", ":"), default=str).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Connection: close\r\n"
        "Cache-Control: no-store\r\n\r\n"
    )
    return head.encode("ascii") + data


def error_response(status: int, message: str) -> bytes:
    return response(status, {"error": message})
