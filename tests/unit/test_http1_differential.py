"""``hatchway.transport.http1`` held to h11, the well-kept sans-IO HTTP/1.1 implementation, on
generated and hostile responses: status lines, headers (folded ones too), Content-Length (bad,
repeated), chunked bodies (extensions, trailers), bodies read to the close.

Where both read a response, they agree on status, headers and body. Where h11 refuses one as a
protocol error, ours refuses it too. The differences that remain are deliberate, each listed in
``DELIBERATE`` with its reason; any other is a bug in ours.
"""

from __future__ import annotations

import socket
from typing import Any

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hatchway.transport import http1

LIMIT = 1 << 20

Read = tuple[int, list[tuple[bytes, bytes]], bytes] | str
"""(status, headers with lowercased names, body), or "refused"."""


def ours(raw: bytes, method: str = "GET") -> Read:
    server, client = socket.socketpair()
    try:
        server.sendall(raw)
        server.shutdown(socket.SHUT_WR)
        try:
            reply = http1.Connection(client).receive(method, LIMIT)
        except (http1.BadReply, http1.Truncated, http1.Closed):
            return "refused"
        headers = [
            (name.lower().encode("latin-1"), value.encode("utf-8", "surrogateescape"))
            for name, value in reply.headers
        ]
        return reply.status, headers, reply.body
    finally:
        server.close()
        client.close()


def theirs(raw: bytes, method: str = "GET") -> Read:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "app")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")  # the server closed after it
    status, headers, body = 0, [], b""
    try:
        while True:
            event: Any = conn.next_event()
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status, headers = event.status_code, [(n, v) for n, v in event.headers]
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body
            else:  # NEED_DATA after the close, or the close itself before the end
                return "refused"
    except h11.RemoteProtocolError:
        return "refused"


DELIBERATE = {
    "lenient-lf": "a head whose lines end in a bare LF (no CR) is read, as browsers and curl do",
    "repeated-length": "repeated equal Content-Length headers are kept as the app sent them (h11 "
    "folds them into one); the body is read alike, and the relay sends its own length anyway",
    "control-in-value": "a header value holding a vertical tab or a form feed is kept, as RFC "
    "9110 5.5 allows a recipient for robustness (both keep the other control characters); h11 "
    "refuses the whole response, which would cost the visitor the app's answer",
}

_CONTROLS = b"\x0b\x0c"
"""The control characters h11 refuses in a value and ours keeps (``control-in-value``)."""


def _as_h11_lists(read: Read) -> Read:
    """``read`` with the one listed difference of header lists folded away."""
    if isinstance(read, str):
        return read
    status, headers, body = read
    lengths = [h for h in headers if h[0] == b"content-length"]
    folded = [h for h in headers if h[0] != b"content-length" or h is lengths[0]]
    return status, folded if len(set(lengths)) == 1 else headers, body


def agree(raw: bytes, method: str = "GET") -> None:
    mine, reference = _as_h11_lists(ours(raw, method)), theirs(raw, method)
    assert mine == reference, (raw, mine, reference)


# --- Table-driven: the cases the RFC spells out ------------------------------------------------

CASES = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", id="content-length"),
    pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", id="204 has no body"),
    pytest.param(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", id="304 no body"),
    pytest.param(b"HTTP/1.1 200 OK\r\n\r\nread to the close", id="close-delimited"),
    pytest.param(b"HTTP/1.0 200 OK\r\n\r\nold server", id="HTTP/1.0"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        id="chunked",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6;x\r\n world\r\n0\r\n\r\n",
        id="chunk extensions",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n",
        id="trailers",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
        id="chunked wins over content-length",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", id="truncated body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", id="bad content-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative length"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        id="conflicting lengths",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        id="repeated equal lengths",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        id="bad chunk size",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        id="chunked truncated",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n", id="fold"),
    pytest.param(b"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n", id="bad name"),
    pytest.param(b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n", id="no colon"),
    pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", id="four-digit status"),
    pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", id="status not a number"),
    pytest.param(b"FTP/1.1 200 OK\r\n\r\n", id="not HTTP"),
    pytest.param(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", id="no reason phrase"),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        id="interim response",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-Bytes: caf\xc3\xa9 \xff\r\n\r\n", id="non-ASCII value"),
    pytest.param(b"", id="nothing at all"),
]


@pytest.mark.parametrize("raw", CASES)
def test_ours_reads_what_h11_reads_and_refuses_what_it_refuses(raw: bytes) -> None:
    agree(raw)


@pytest.mark.parametrize(
    ("raw", "method"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD"),
    ],
)
def test_a_head_requests_answer_has_no_body_for_both(raw: bytes, method: str) -> None:
    agree(raw, method)


@pytest.mark.parametrize("control", [b"\x0b", b"\x0c"])
def test_a_control_character_in_a_value_is_kept_deliberately(control: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Odd: a" + control + b"b\r\nContent-Length: 0\r\n\r\n"
    assert theirs(raw) == "refused"
    assert ours(raw) == (200, [(b"x-odd", b"a" + control + b"b"), (b"content-length", b"0")], b"")
    assert "control-in-value" in DELIBERATE


def test_a_bare_lf_head_is_read_deliberately() -> None:
    raw = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"
    assert ours(raw) == (200, [(b"content-length", b"2")], b"ok")
    assert "lenient-lf" in DELIBERATE


# --- Generated responses -----------------------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'", min_size=1)
VALUE = st.binary(max_size=30).map(
    lambda v: v.translate(None, b"\r\n\x00" + _CONTROLS).strip(b" \t")
)
HEADERS = st.lists(st.tuples(TOKEN.filter(lambda n: n.lower() not in _FRAMING), VALUE), max_size=6)
_FRAMING = {"content-length", "transfer-encoding", "connection"}


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))
    reason = draw(st.sampled_from([b"OK", b"Whatever", b""]))
    headers = draw(HEADERS)
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["length", "chunked", "close", "bad-length", "short-length"]))
    head = [version + b" " + str(status).encode() + (b" " + reason if reason else b"")]
    head += [n.encode() + b": " + v for n, v in headers]
    if framing == "length":
        head.append(b"Content-Length: " + str(len(body)).encode())
        payload = body
    elif framing == "short-length":
        head.append(b"Content-Length: " + str(len(body) + 1).encode())
        payload = body
    elif framing == "bad-length":
        head.append(b"Content-Length: " + draw(st.sampled_from([b"1.5", b"+3", b"3 4", b""])))
        payload = body
    elif framing == "chunked" and version == b"HTTP/1.1":
        head.append(b"Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 50), max_size=4))
        payload, at = b"", 0
        for size in sizes:
            piece = body[at : at + size]
            at += size
            if piece:
                payload += format(len(piece), "x").encode() + b"\r\n" + piece + b"\r\n"
        payload += b"0\r\n\r\n"
    else:
        payload = body
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


@settings(max_examples=300, deadline=None)
@given(responses())
@example(b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n")
def test_generated_responses_read_alike(raw: bytes) -> None:
    agree(raw)
