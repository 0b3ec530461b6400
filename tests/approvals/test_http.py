"""The admin API's sans-IO HTTP/1.1: requests in any chunking, capped, refused cleanly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.approvals.http import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    REASONS,
    HTTPError,
    Request,
    RequestReader,
    error_response,
    response,
)

Outcome = tuple[Any, ...]


def parse(data: bytes) -> Request:
    request = RequestReader().feed(data)
    assert request is not None
    return request


def status_of(data: bytes) -> int:
    with pytest.raises(HTTPError) as caught:
        RequestReader().feed(data)
    return caught.value.status


def outcome(chunks: list[bytes]) -> Outcome:
    """What a reader makes of these chunks: the request, an error's status, or incomplete."""
    reader = RequestReader()
    try:
        for i, chunk in enumerate(chunks):
            request = reader.feed(chunk)
            if request is not None:
                assert reader.request is request
                return ("request", request, i)
    except HTTPError as exc:
        assert exc.status in REASONS
        assert isinstance(exc.message, str) and exc.message
        return ("error", exc.status)
    return ("incomplete",)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def head(n: int) -> bytes:
    """A request head of exactly n bytes (its terminating blank line not counted)."""
    start = b"GET /v1/approvals HTTP/1.1\r\nX-Pad: "
    assert n >= len(start)
    return start + b"a" * (n - len(start))


# --- requests that parse ---------------------------------------------------------------------


def test_a_get() -> None:
    request = parse(
        b"GET /v1/approvals?state=all&wait=30&state=pending HTTP/1.1\r\n"
        b"Host: localhost\r\nAuthorization: Bearer abc.def\r\nAccept: */*\r\n\r\n"
    )
    assert request == Request(
        "GET",
        "/v1/approvals",
        {"state": ["all", "pending"], "wait": ["30"]},
        {"host": "localhost", "authorization": "Bearer abc.def", "accept": "*/*"},
        b"",
    )


def test_a_post_with_a_body() -> None:
    body = b'{"reason": "ok\\r\\n\\r\\n"}\r\n\r\n'
    request = parse(
        b"POST /v1/approvals/ap-23456789/approve HTTP/1.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    assert request.method == "POST"
    assert request.path == "/v1/approvals/ap-23456789/approve"
    assert request.headers["content-length"] == str(len(body))
    assert request.body == body


def test_the_request_is_kept_and_bytes_after_it_are_ignored() -> None:
    reader = RequestReader()
    assert reader.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab") is None
    assert reader.request is None
    request = reader.feed(b"cGET /next HTTP/1.1\r\n\r\n")  # no pipelining
    assert request is not None and request.body == b"abc"
    assert reader.request is request


def test_without_content_length_there_is_no_body() -> None:
    reader = RequestReader()
    request = reader.feed(b'POST /v1 HTTP/1.1\r\nHost: x\r\n\r\n{"reason": 1}')
    assert request is not None and request.body == b""


def test_a_bytearray_may_be_fed() -> None:
    reader = RequestReader()
    assert reader.feed(bytearray(b"GET / HTTP/1.1\r\n")) is None
    assert reader.feed(bytearray(b"\r\n")) == Request("GET", "/", {}, {}, b"")


def test_http_1_0_and_lower_case_methods_are_accepted() -> None:
    assert parse(b"get / HTTP/1.0\r\n\r\n").method == "GET"
    assert parse(b"Post / HTTP/1.1\r\n\r\n").method == "POST"


def test_the_target_is_split_into_path_and_query() -> None:
    request = parse(b"GET /v1/approvals/ap-x%2Fy?a=1&b=%20two&a=3&flag#frag HTTP/1.1\r\n\r\n")
    assert request.path == "/v1/approvals/ap-x%2Fy"  # not percent-decoded: no new '/'
    assert request.query == {"a": ["1", "3"], "b": [" two"]}


@pytest.mark.parametrize(
    ("field", "name", "value"),
    [
        (b"Host:x", "host", "x"),
        (b"Host:   x  \t", "host", "x"),
        (b"Host:\tx", "host", "x"),
        (b"Host: a:b:c", "host", "a:b:c"),
        (b"X-Empty:", "x-empty", ""),
        (b"X-Inner: a  b", "x-inner", "a  b"),
        (b"AUTHORIZATION: Bearer T", "authorization", "Bearer T"),
    ],
)
def test_header_fields(field: bytes, name: str, value: str) -> None:
    assert parse(b"GET / HTTP/1.1\r\n" + field + b"\r\n\r\n").headers == {name: value}


def test_repeated_fields_are_joined() -> None:
    request = parse(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nX-B: 3\r\nX-A: 4\r\n\r\n")
    assert request.headers == {"x-a": "1, 2, 4", "x-b": "3"}


# --- chunking --------------------------------------------------------------------------------

tchar = st.sampled_from(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
)
field_names = st.text(tchar, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding")
)
field_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20).map(
    lambda v: v.replace("a", " a ").strip()
)
segments = st.text(st.sampled_from("abcxyz0123-._~!$&'()*+,;=:@%"), max_size=8)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, Request]:
    method = draw(st.sampled_from(["GET", "POST", "DELETE", "PATCH"]))
    path = "/" + "/".join(draw(st.lists(segments, max_size=4)))
    if path.startswith("//"):
        path = "/x" + path
    query = draw(
        st.dictionaries(
            st.text("abc_", min_size=1, max_size=4),
            st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=3),
            max_size=3,
        )
    )
    fields = draw(st.lists(st.tuples(field_names, field_values), max_size=5))
    body = draw(st.binary(max_size=300))
    if body or draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), ("Content-Length", str(len(body))))
    target = path + ("?" + urlencode(query, doseq=True) if query else "")
    raw = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
    headers: dict[str, str] = {}
    for name, value in fields:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return raw.encode() + body, Request(method, path, query, headers, body)


@settings(max_examples=150)
@given(requests(), st.lists(st.integers(0, 2000), max_size=12))
def test_any_chunking_gives_the_same_request(
    sample: tuple[bytes, Request], cuts: list[int]
) -> None:
    data, expected = sample
    assert parse(data) == expected
    chunks = split(data, cuts)
    assert outcome(chunks) == ("request", expected, len(chunks) - 1)  # not a chunk early


@settings(max_examples=50)
@given(requests())
def test_byte_by_byte_gives_the_same_request(sample: tuple[bytes, Request]) -> None:
    data, expected = sample
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert outcome(chunks) == ("request", expected, len(chunks) - 1)


@given(requests(), st.integers(1, 50))
def test_a_request_cut_short_is_incomplete(sample: tuple[bytes, Request], short: int) -> None:
    data, _ = sample
    assert outcome([data[: max(0, len(data) - short)]]) == ("incomplete",)


@settings(max_examples=50)
@given(requests(), st.lists(st.integers(0, 2000), max_size=8))
def test_empty_chunks_change_nothing(sample: tuple[bytes, Request], cuts: list[int]) -> None:
    data, expected = sample
    chunks = [piece for chunk in split(data, cuts) for piece in (b"", chunk)]
    assert outcome(chunks)[:2] == ("request", expected)


# Pieces of requests, good and bad, for the fuzzers. Without '[' and ']': see
# test_a_bracket_in_an_authority_is_a_bad_request.
pieces = st.lists(
    st.sampled_from(
        [
            b"GET",
            b"post",
            b" ",
            b"  ",
            b"/",
            b"//",
            b"x",
            b"?",
            b"a=1",
            b"&",
            b"#",
            b"%",
            b"%zz",
            b"HTTP/1.1",
            b"HTTP/1.",
            b"HTTP/2",
            b"\r\n",
            b"\r\n\r\n",
            b"\r",
            b"\n",
            b":",
            b": ",
            b"Content-Length",
            b"content-length: ",
            b"Transfer-Encoding: chunked",
            b"0",
            b"5",
            b"-1",
            b"99999999999999",
            b"\t",
            b"\x00",
            b"\x7f",
            b"\x80",
            b"\xff",
            b"\xc3\xa9",
            b"{}",
        ]
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=300)
@given(st.one_of(pieces, st.binary(max_size=200)), st.lists(st.integers(0, 300), max_size=8))
def test_any_bytes_give_a_request_or_an_http_error(data: bytes, cuts: list[int]) -> None:
    # outcome() lets only HTTPError through; anything else fails the test.
    first = outcome([data])
    assert outcome(split(data, cuts))[:2] == first[:2]


@settings(max_examples=100)
@given(pieces)
def test_a_bad_request_stays_bad(data: bytes) -> None:
    reader = RequestReader()
    try:
        reader.feed(data)
    except HTTPError as exc:
        with pytest.raises(HTTPError) as again:
            reader.feed(b"\r\n\r\n")
        assert again.value.status == exc.status


# --- limits ----------------------------------------------------------------------------------


def test_a_head_of_the_largest_size_is_accepted() -> None:
    data = head(MAX_HEAD_BYTES) + b"\r\n\r\n"
    assert len(parse(data).headers["x-pad"]) > MAX_HEAD_BYTES - 100
    assert outcome(split(data, list(range(1000, len(data), 1000))))[0] == "request"


def test_a_head_one_byte_larger_is_refused() -> None:
    assert status_of(head(MAX_HEAD_BYTES + 1) + b"\r\n\r\n") == 431


def test_an_endless_head_is_refused_once_over_the_cap() -> None:
    reader = RequestReader()
    assert reader.feed(b"GET / HTTP/1.1\r\nX: ") is None
    chunk = b"a" * 1000
    with pytest.raises(HTTPError) as caught:
        for _ in range(MAX_HEAD_BYTES // len(chunk) + 2):
            reader.feed(chunk)
            assert len(reader.buffer) <= MAX_HEAD_BYTES
    assert caught.value.status == 431


def test_many_small_fields_count_towards_the_cap() -> None:
    fields = b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEAD_BYTES // 8))
    assert status_of(b"GET / HTTP/1.1\r\n" + fields + b"\r\n") == 431


@pytest.mark.parametrize(
    ("size", "late"),
    # the head's size, and how many of its terminator's 4 bytes come in a second read
    [
        (MAX_HEAD_BYTES, 1),
        (MAX_HEAD_BYTES, 2),
        (MAX_HEAD_BYTES, 3),
        (MAX_HEAD_BYTES - 1, 1),
        (MAX_HEAD_BYTES - 1, 2),
        (MAX_HEAD_BYTES - 2, 1),
    ],
)
def test_the_head_cap_does_not_depend_on_chunking(size: int, late: int) -> None:
    data = head(size) + b"\r\n\r\n"
    assert outcome([data])[0] == "request"
    assert outcome([data[:-late], data[-late:]])[0] == "request"


def test_a_body_of_the_largest_size_is_accepted() -> None:
    reader = RequestReader()
    assert reader.feed(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % MAX_BODY_BYTES) is None
    assert reader.feed(b"x" * (MAX_BODY_BYTES - 1)) is None
    request = reader.feed(b"x")
    assert request is not None and len(request.body) == MAX_BODY_BYTES


@pytest.mark.parametrize("length", [MAX_BODY_BYTES + 1, 10**6, 999_999_999_999])
def test_a_larger_body_is_refused_before_it_is_sent(length: int) -> None:
    # Refused from the head alone: the reader does not wait for (or buffer) the body.
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % length) == 413


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        b"Transfer-Encoding: chunked",
        b"transfer-encoding: identity",
        b"TRANSFER-ENCODING: gzip, chunked",
        b"Transfer-Encoding:",
        b"Content-Length: 5\r\nTransfer-Encoding: chunked",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5",
    ],
)
def test_transfer_encoding_is_not_implemented(field: bytes) -> None:
    assert status_of(b"POST / HTTP/1.1\r\n" + field + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n") == 501


@pytest.mark.parametrize(
    ("value", "length"),
    [(b"0", 0), (b"5", 5), (b"005", 5), (b" 5 ", 5), (b"\t5", 5), (b"000000000005", 5)],
)
def test_content_length(value: bytes, length: int) -> None:
    reader = RequestReader()
    assert (
        reader.feed(b"POST / HTTP/1.1\r\nContent-Length:" + value + b"\r\n\r\n") is None
        or not length
    )
    request = reader.feed(b"abcdefgh")
    assert request is not None and request.body == b"abcdefgh"[:length]


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"-1",
        b"+5",
        b"5.0",
        b"0x5",
        b"5 5",
        b"5,5",
        b"1e3",
        b"five",
        b"0000000000005",
        b"\x0b5",
    ],
)
def test_a_bad_content_length_is_refused(value: bytes) -> None:
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n") == 400


def test_repeated_content_lengths_are_refused() -> None:
    # Even equal ones: they join to "5, 5", which is not a length.
    assert (
        status_of(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello") == 400
    )
    assert (
        status_of(b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 0\r\n\r\nhello") == 400
    )


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"GET",
        b"GET /",
        b"GET  / HTTP/1.1",
        b" GET / HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b"GET / HTTP/1.1 extra",
        b"GET\t/\tHTTP/1.1",
        b"GET / HTTP/2",
        b"GET / HTTP/2.0",
        b"GET / http/1.1",
        b"GET / HTTP/1",
        b"GET / FTP/1.1",
        b"GET * HTTP/1.1",
        b"GET http://localhost/v1 HTTP/1.1",
        b"GET v1/approvals HTTP/1.1",
        b"GET  HTTP/1.1",
        b" / HTTP/1.1",
        b"G3T / HTTP/1.1",
        b"G-T / HTTP/1.1",
        b"GET\x00 / HTTP/1.1",
        b"\r\nGET / HTTP/1.1",
    ],
)
def test_a_malformed_request_line_is_refused(line: bytes) -> None:
    assert status_of(line + b"\r\nHost: x\r\n\r\n") == 400


@pytest.mark.parametrize(
    "field",
    [
        b"NoColon",
        b": value",
        b"Name : v",
        b"Name\t: v",
        b" Name: v",
        b"\tName: v",
        b"Na me: v",
        b"Host: x\r\n  folded",
    ],
)
def test_a_malformed_header_field_is_refused(field: bytes) -> None:
    assert status_of(b"GET / HTTP/1.1\r\n" + field + b"\r\n\r\n") == 400


@pytest.mark.parametrize(
    "data",
    [b"GET /\xe9 HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", b"\xff\r\n\r\n"],
)
def test_a_head_that_is_not_ascii_is_refused(data: bytes) -> None:
    assert status_of(data) == 400


def test_a_body_that_is_not_ascii_is_fine() -> None:
    assert parse(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n\xff\x00").body == b"\xff\x00"


@pytest.mark.parametrize("target", [b"//[", b"//]", b"//[x]/v1", b"//a]b/v1/approvals"])
def test_a_bracket_in_an_authority_is_a_bad_request(target: bytes) -> None:
    assert outcome([b"GET " + target + b" HTTP/1.1\r\n\r\n"]) == ("error", 400)


# --- bodies ----------------------------------------------------------------------------------


def body(data: bytes) -> Request:
    return Request("POST", "/", {}, {}, data)


def test_json_bodies() -> None:
    assert body(b"").json() == {}
    assert body(b'{"reason": "fine"}').json() == {"reason": "fine"}
    assert body(b'\xef\xbb\xbf{"a": 1}').json() == {"a": 1}  # a UTF-8 BOM is allowed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "the body is not JSON"),
        (b"\xff", "the body is not JSON"),
        (b"{'a': 1}", "the body is not JSON"),
        (b'{"a": 1} x', "the body is not JSON"),
        (b" ", "the body is not JSON"),
        (b"[]", "the body must be a JSON object"),
        (b'"reason"', "the body must be a JSON object"),
        (b"null", "the body must be a JSON object"),
        (b"1", "the body must be a JSON object"),
    ],
)
def test_bad_json_bodies_are_bad_requests(data: bytes, message: str) -> None:
    with pytest.raises(HTTPError) as caught:
        body(data).json()
    assert (caught.value.status, caught.value.message) == (400, message)


@pytest.mark.parametrize("data", [b"[" * 1000, b'{"a":' * 1000, b"[" * MAX_BODY_BYTES])
def test_a_deeply_nested_body_is_a_bad_request(data: bytes) -> None:
    with pytest.raises(HTTPError) as caught:
        body(data).json()
    assert caught.value.status == 400


@settings(max_examples=200)
@given(st.binary(max_size=100) | st.text(max_size=50).map(str.encode))
def test_json_raises_only_http_errors_for_shallow_bodies(data: bytes) -> None:
    try:
        assert isinstance(body(data).json(), dict)
    except HTTPError as exc:
        assert exc.status == 400


# --- responses -------------------------------------------------------------------------------


def read_response(data: bytes) -> tuple[str, dict[str, str], Any]:
    head_bytes, sep, payload = data.partition(b"\r\n\r\n")
    assert sep
    status_line, *fields = head_bytes.decode("ascii").split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(": ")
        headers[name] = value
    assert int(headers["Content-Length"]) == len(payload)
    assert payload.endswith(b"\n")
    return status_line, headers, json.loads(payload)


def test_response() -> None:
    status_line, headers, data = read_response(response(200, {"outcome": "approved", "n": [1]}))
    assert status_line == "HTTP/1.1 200 OK"
    assert headers == {
        "Content-Type": "application/json",
        "Content-Length": headers["Content-Length"],
        "Connection": "close",
        "Cache-Control": "no-store",
    }
    assert data == {"outcome": "approved", "n": [1]}


@pytest.mark.parametrize("status", sorted(REASONS))
def test_every_known_status_has_its_reason(status: int) -> None:
    status_line, _, data = read_response(error_response(status, "why"))
    assert status_line == f"HTTP/1.1 {status} {REASONS[status]}"
    assert data == {"error": "why"}


def test_an_unknown_status_is_an_error() -> None:
    assert read_response(response(418, {}))[0] == "HTTP/1.1 418 Error"


def test_response_bodies_stringify_what_json_cannot_hold() -> None:
    assert read_response(response(200, {"path": Path("/var/lib/hoopy")}))[2] == {
        "path": "/var/lib/hoopy"
    }


@given(st.text(max_size=40))
def test_error_messages_cannot_break_the_head(message: str) -> None:
    # Anything in the message (CR, LF, non-ASCII) stays inside the JSON body.
    data = error_response(400, message)
    assert data.count(b"\r\n\r\n") == 1
    assert read_response(data)[2] == {"error": message}
