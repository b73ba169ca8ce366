"""The agent's HTTP/1.1 client against a raw socket app: every response framing a server may
use, read exactly and bounded; broken answers as errors that say what broke; requests written
as given, and requests that would say something else refused before a byte is written."""

from __future__ import annotations

import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from hatchway.transport.http1 import (
    MAX_HEAD_BYTES,
    BadReply,
    Closed,
    Connection,
    Pool,
    Reply,
    SourceFailed,
    Truncated,
    before_blocking,
)
from support.raw_app import RawAnswer, RawRequest, ok, run_raw_app

LIMIT = 100
"""The body limit the exchanges below read with."""


def exchange(answer: RawAnswer, method: str = "GET", limit: int = LIMIT) -> tuple[Reply, bool]:
    """The reply to one request answered with ``answer``, and whether the connection may be
    kept for another."""
    with run_raw_app(lambda request: answer) as app:
        conn = Connection.open("127.0.0.1", app.port, timeout=5)
        try:
            conn.send(method, "/x", [("Host", "app")])
            return conn.receive(method, limit), conn.reusable
        finally:
            conn.close()


@pytest.mark.parametrize(
    ("data", "method", "status", "body", "kept"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET", 200, b"hello", True),
        (b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", 200, b"", True),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi", "GET", 200, b"hi", True),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
            "GET", 200, b"hi", False,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", "GET", 200, b"hi", False),
        (
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi",
            "GET", 200, b"hi", True,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", "GET", 200, b"until the end", False),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n",
            "GET", 200, b"hello world", True,
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw", "GET", 200, b"raw", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", "HEAD", 200, b"", True),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "GET", 204, b"", True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "GET", 304, b"", True),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            "POST", 201, b"ok", True,
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "GET", 101, b"", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc", "GET", 200, b"abc", True),
    ],
)  # fmt: skip
def test_every_framing_is_read_exactly(
    data: bytes, method: str, status: int, body: bytes, kept: bool
) -> None:
    reply, reusable = exchange(RawAnswer(data, "close" if not kept else "keep"), method)
    assert (reply.status, reply.body, reply.too_large, reusable) == (status, body, False, kept)


def test_headers_keep_order_repeats_and_bytes() -> None:
    reply, _ = exchange(
        ok(b"", b"Set-Cookie: a=1", b"set-cookie: b=2", "X-Name: café".encode(), b"X-Raw: \xff",
           b"X-Folded: one\r\n  two", b"X-Space:   padded  ")
    )  # fmt: skip
    assert reply.headers[1:] == [
        ("Set-Cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("X-Name", "café"),
        ("X-Raw", "\udcff"),
        ("X-Folded", "one two"),
        ("X-Space", "padded"),
    ]
    assert reply.header("SET-COOKIE") == "a=1" and reply.header("missing") is None


@pytest.mark.parametrize(
    ("data", "method"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n" + b"x" * 101, "GET"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 101, "GET"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 100
         + b"\r\n1\r\nx\r\n0\r\n\r\n", "GET"),
    ],
)  # fmt: skip
def test_a_body_beyond_the_limit_is_not_read_and_the_connection_not_kept(
    data: bytes, method: str
) -> None:
    reply, reusable = exchange(RawAnswer(data, "close"), method)
    assert reply.too_large and not reusable
    assert len(reply.body) <= LIMIT + 1


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 100
        + b"\r\n0\r\n\r\n",
    ],
)  # fmt: skip
def test_a_body_at_the_limit_is_whole(data: bytes) -> None:
    reply, _ = exchange(RawAnswer(data, "close"))
    assert reply.body == b"x" * LIMIT and not reply.too_large


@pytest.mark.parametrize(
    ("data", "error", "says"),
    [
        (b"", Closed, "without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", Truncated, "inside the response head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", Truncated, "announced 9 bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", Truncated, "cut short"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n", Truncated, "cut"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BadReply, "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", BadReply, "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", BadReply, "longer"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", BadReply, "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", BadReply, "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", BadReply, "header line"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", BadReply, "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", BadReply, "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", BadReply, "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_HEAD_BYTES + b"\r\n\r\n", BadReply, "longer"),
    ],
)  # fmt: skip
def test_broken_answers_raise_what_broke(data: bytes, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        exchange(RawAnswer(data, "close"))


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/x y", []),
        ("GET", "/x\r\nHost: evil", []),
        ("GET\x00", "/x", []),
        ("GET", "/x", [("X-A", "one\r\nHost: evil")]),
        ("GET", "/x", [("X-A", "one\nHost: evil")]),
        ("GET", "/x", [("X-A", "one\rtwo")]),
        ("GET", "/x", [("X-A\r\nHost", "evil")]),
        ("GET", "/x", [("X-A", "nul\x00")]),
    ],
)
def test_a_request_that_would_say_something_else_is_never_written(
    method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    with run_raw_app(lambda request: ok()) as app:
        conn = Connection.open("127.0.0.1", app.port, timeout=5)
        with pytest.raises(ValueError):
            conn.send(method, target, headers)
        conn.close()
    assert app.requests == []


def test_a_request_goes_out_as_given() -> None:
    with run_raw_app(lambda request: ok()) as app:
        conn = Connection.open("127.0.0.1", app.port, timeout=5)
        headers = [("Host", "h"), ("X-Snow", "☃"), ("Content-Length", "2")]
        conn.send("POST", "/a%2Fb?q=%20", headers, b"hi")
        conn.receive("POST", LIMIT)
        conn.close()
    (seen,) = app.requests
    assert seen.head.decode().split("\r\n") == [
        "POST /a%2Fb?q=%20 HTTP/1.1",
        "Host: h",
        "X-Snow: ☃",
        "Content-Length: 2",
    ]
    assert seen.body == b"hi"


def test_a_large_body_goes_out_whole() -> None:
    body = bytes(range(256)) * 4096
    with run_raw_app(lambda request: ok(request.body[-3:])) as app:
        conn = Connection.open("127.0.0.1", app.port, timeout=5)
        conn.send("PUT", "/", [("Content-Length", str(len(body)))], body)
        reply = conn.receive("PUT", LIMIT)
        conn.close()
    assert app.requests[0].body == body and reply.body == body[-3:]


def test_a_large_body_read_whole_is_held_once_while_it_comes() -> None:
    size = 1024 * 1024
    body = bytes(range(256)) * (size // 256)
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
    ours, theirs = socket.socketpair()
    writer = threading.Thread(target=theirs.sendall, args=(head + body,), daemon=True)
    conn = Connection(ours)
    tracemalloc.start()
    try:
        writer.start()
        reply = conn.receive("GET", size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        writer.join(timeout=5)
        ours.close()
        theirs.close()
    assert reply.body == body
    assert peak < 1.25 * size  # the body, and none of it twice


def test_a_silent_server_times_out() -> None:
    with run_raw_app(lambda request: RawAnswer(b"HTTP/1.1 200 OK\r\n")) as app:
        conn = Connection.open("127.0.0.1", app.port, timeout=0.2)
        conn.send("GET", "/", [])
        with pytest.raises(TimeoutError):
            conn.receive("GET", LIMIT)
        conn.close()


def first_then(then: str) -> Callable[[RawRequest], RawAnswer]:
    """Answers a connection's first request with its number, then ends it as ``then`` says."""

    def answer(request: RawRequest) -> RawAnswer:
        return ok(b"%d" % request.connection) if request.index == 0 else RawAnswer(then=then)

    return answer


def pool_for(port: int) -> Pool:
    return Pool(lambda timeout: Connection.open("127.0.0.1", port, timeout), size=2)


def fetch(conn: Connection) -> bytes:
    conn.send("GET", "/", [])
    return conn.receive("GET", LIMIT).body


@pytest.mark.parametrize(("may_repeat", "repeated"), [(True, True), (False, False)])
def test_a_kept_connection_reset_after_the_request_repeats_only_when_allowed(
    may_repeat: bool, repeated: bool
) -> None:
    with run_raw_app(first_then("reset")) as app:
        pool = pool_for(app.port)
        assert pool.exchange(fetch, may_repeat=True, timeout=5) == b"0"
        if repeated:
            assert pool.exchange(fetch, may_repeat=may_repeat, timeout=5) == b"1"
        else:
            with pytest.raises(ConnectionResetError):
                pool.exchange(fetch, may_repeat=may_repeat, timeout=5)
        pool.close()
    assert len(app.requests) == (3 if repeated else 2)


def test_the_pool_reuses_and_bounds_its_connections() -> None:
    with run_raw_app(lambda request: ok(b"%d" % request.connection)) as app:
        pool = pool_for(app.port)
        assert [pool.exchange(fetch, may_repeat=False, timeout=5) for _ in range(3)] == [b"0"] * 3
        conns = [pool._take(5)[0] for _ in range(3)]
        for conn in conns:
            pool._give(conn)
        assert len(pool.idle) == 2
        pool.close()
        assert pool.idle == []


def test_a_kept_connection_the_server_closed_is_not_taken() -> None:
    with run_raw_app(lambda request: RawAnswer(ok().data, "close")) as app:
        conn = Connection.open("127.0.0.1", app.port, timeout=5)
        assert fetch(conn) == b"ok"
        assert conn.sock.recv(1, socket.MSG_PEEK) == b""  # the FIN arrived
        assert conn.reusable and not conn.idle_and_open()
        conn.close()


@contextmanager
def streamed(answer: RawAnswer, stream_above: int = 10) -> Iterator[tuple[Connection, Reply]]:
    with run_raw_app(lambda request: answer) as app:
        conn = Connection.open("127.0.0.1", app.port, timeout=5)
        try:
            conn.send("GET", "/x", [])
            yield conn, conn.receive("GET", LIMIT, stream_above)
        finally:
            conn.close()


@pytest.mark.parametrize(("size", "left_on_the_wire"), [(10, False), (11, True), (101, False)])
def test_only_a_body_above_the_stream_bound_and_within_the_limit_stays_on_the_wire(
    size: int, left_on_the_wire: bool
) -> None:
    with streamed(ok(b"x" * size)) as (conn, reply):
        assert (reply.stream is not None) is left_on_the_wire
        assert reply.too_large is (size > LIMIT)
        if reply.stream is not None:
            assert not conn.reusable  # until it is read


def test_a_stream_peeks_then_reads_to_its_end_and_frees_the_connection() -> None:
    body = bytes(range(100))
    with streamed(ok(body)) as (conn, reply):
        assert reply.stream is not None and reply.stream.size == 100 and reply.body == b""
        assert reply.stream.peek(5) == body[:5]
        assert reply.stream.peek(500) == body
        assert reply.stream.read() == body
        assert conn.reusable


def test_a_stream_cut_short_fails_as_the_servers_fault() -> None:
    cut = RawAnswer(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nabc", "close")
    with streamed(cut) as (conn, reply):
        assert reply.stream is not None
        with pytest.raises(SourceFailed) as failed:
            reply.stream.read()
        assert isinstance(failed.value.cause, Truncated)
        assert "announced 50 bytes and sent 3" in str(failed.value)
        assert not conn.reusable


def live(answer: RawAnswer) -> tuple[Reply, bytes | type[Exception]]:
    """A reply read with ``live``, and its live body's pieces joined (or what broke them)."""
    with run_raw_app(lambda request: answer) as app:
        conn = Connection.open("127.0.0.1", app.port, timeout=5)
        try:
            conn.send("GET", "/x", [])
            reply = conn.receive("GET", LIMIT, live=True)
            if reply.live is None:
                return reply, reply.body
            try:
                return reply, b"".join(reply.live.pieces(idle=5))
            except (Truncated, BadReply) as exc:
                return reply, type(exc)
        finally:
            conn.close()


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENTS = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"


@pytest.mark.parametrize(
    ("answer", "streamed", "body"),
    [
        (RawAnswer(CHUNKED + b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nT: 1\r\n\r\n"), True, b"abcde"),
        (RawAnswer(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", "close"), True, b"until the end"),
        (RawAnswer(EVENTS + b"Content-Length: 9\r\n\r\ndata: 1\n\n"), True, b"data: 1\n\n"),
        (ok(b"known length"), False, b"known length"),  # whole, as always
        (RawAnswer(CHUNKED + b"5\r\nab", "close"), True, Truncated),
        (RawAnswer(EVENTS + b"Content-Length: 9\r\n\r\ndata", "close"), True, Truncated),
        (RawAnswer(CHUNKED + b"zz\r\n", "close"), True, BadReply),
    ],
)
def test_a_live_body_is_passed_on_in_pieces_with_its_framing_taken_off(
    answer: RawAnswer, streamed: bool, body: bytes | type[Exception]
) -> None:
    reply, got = live(answer)
    assert (reply.live is not None) is streamed
    assert got == body


def test_a_request_body_given_as_chunks_goes_out_whole() -> None:
    with run_raw_app(lambda request: ok(request.body)) as app:
        conn = Connection.open("127.0.0.1", app.port, timeout=5)
        conn.send("PUT", "/", [("Content-Length", "9")], iter([b"one", b"two", b"six"]))
        assert conn.receive("PUT", LIMIT).body == b"onetwosix"
        conn.close()


def test_a_threads_hook_hears_every_wait_before_it_happens() -> None:
    """``before_blocking``: the connect (no socket yet), the send with its size, and each
    receive; only on the thread that set it, and no more once it is cleared."""
    heard: list[tuple[bool, int]] = []
    with run_raw_app(lambda request: ok(b"hello")) as app:
        before_blocking(lambda sock, size: heard.append((sock is not None, size)))
        try:
            conn = Connection.open("127.0.0.1", app.port, timeout=5)
            conn.send("GET", "/x", [("Host", "app")])
            conn.receive("GET", LIMIT)
            elsewhere = threading.Thread(target=lambda: exchange(ok(b"other")))
            elsewhere.start()
            elsewhere.join()
        finally:
            before_blocking(None)
        conn.send("GET", "/y", [("Host", "app")])
        conn.receive("GET", LIMIT)
        conn.close()
    head = len(b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n")
    assert heard[:2] == [(False, 0), (True, head)]
    assert heard[2:] and set(heard[2:]) == {(True, 0)}  # receives, as many as reads took
