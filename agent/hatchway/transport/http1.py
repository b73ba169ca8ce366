"""A small HTTP/1.1 client for the agent's two kinds of exchange: with the local app and with
the relay's blob store. Each request goes out in one write; each response is read with its
framing checked (Content-Length, chunked, or up to the close) and its body bounded.

The standard library's ``http.client`` parses every response head through the ``email``
package and spent more Python per request than the rest of the agent's path together; this
client reads a head with one split. It adds no header of its own, sends header values as UTF-8
(bytes that are not UTF-8 as they came, through ``surrogateescape``) and reads them back the
same way, where ``http.client`` would use Latin-1.

Idle connections are pooled (``Pool``); one the server closed while idle is replaced before
anything is written to it, and an exchange is repeated on a fresh connection only when the
caller says it is safe to repeat.
"""

from __future__ import annotations

import io
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import ssl

MAX_HEAD_BYTES = 64 * 1024
"""Longest response head (status line and headers) read from a server; a longer one is a bad
reply. ``http.client`` allowed 64 KiB per line: no working app comes near either."""

RECEIVE_BYTES = 64 * 1024
"""Most bytes asked of the socket at once, and the buffer a streamed body passes through:
below glibc's 128 KiB mmap threshold, so that reading allocates nothing the heap cannot reuse
(256 KiB reads took the agent's peak RSS from 30 to 55-70 MiB with four 1 MB bodies at once)."""

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
"""Linux only: acknowledge at once instead of after the delayed-ACK timer (see ``send``)."""

_BODILESS_STATUSES = frozenset({204, 304})
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_UNSAFE_START_LINE = re.compile(r"[\x00-\x20\x7f]")

T = TypeVar("T")


class Closed(ConnectionResetError):
    """The server closed the connection before sending any byte of a response: a kept
    connection it had dropped, or one it dropped on reading the request."""


class BodyTimedOut(TimeoutError):
    """The response's head came, but its body was still coming when the time was up."""


class Truncated(Exception):
    """The server ended the connection before the body it announced was complete."""


class BadReply(Exception):
    """What the server sent is not an HTTP/1.x response."""


STALE_ERRORS = (BrokenPipeError, ConnectionResetError)
"""What a kept connection the server closed raises on the next exchange (``Closed`` is one)."""


@dataclass(frozen=True)
class Reply:
    """One response. ``body`` holds at most ``limit + 1`` bytes of it; ``too_large`` says
    the server announced or sent more than ``limit`` (then the rest was never read). A body
    left in ``stream`` must be read to its end, or the connection closed, before the connection
    carries anything else."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    too_large: bool = False
    stream: BodyStream | None = None
    """The body still on the wire (``body`` is then empty), when the caller asked for that."""
    live: LiveBody | None = None
    """A body of unknown length to be passed on as it comes (``receive(live=True)``)."""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)


BlockingHook = Callable[[socket.socket | None, int], None]
"""``hook(sock, size)``: called before a socket operation that may block, a receive (``size``
0) or a send of ``size`` bytes; or with ``sock`` None before a connect or other long work."""


class _Hooks(threading.local):
    hook: BlockingHook | None = None
    """The thread's own; the class's None for every other thread (no lookup fails, as
    ``getattr`` with a default on a plain ``threading.local`` does, at a microsecond each)."""


_hooks = _Hooks()


def before_blocking(hook: BlockingHook | None) -> None:
    """Have ``hook`` called, in the calling thread only, before each socket operation of this
    module's connections that may block (None: no longer). A thread that must not stay blocked
    for long (the agent's reader, serving a request itself) uses it to pass its other duties on
    first."""
    _hooks.hook = hook


def long_work_ahead() -> None:
    """Tell the calling thread's hook (``before_blocking``) that what it does next may take
    long, with no socket to wait on."""
    _may_block(None)


def _may_block(sock: socket.socket | None, size: int = 0) -> None:
    hook = _hooks.hook
    if hook is not None:
        hook(sock, size)


class Connection:
    """One connection to an HTTP/1.1 server; one exchange at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reusable = True
        """False once the server said it will close, or a body was left unread."""
        self.lent = False
        """True once a ``LiveBody`` owns the connection: it closes it when done."""
        self._body_deadline: float | None = None
        """While a body is read: when (``time.monotonic``) it must have ended."""
        self._buffer = bytearray()
        self._quickack = type(sock) is socket.socket  # plain TCP, not TLS over it

    @classmethod
    def open(
        cls, host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None
    ) -> Connection:
        _may_block(None)
        sock = socket.create_connection((host, port), timeout)
        try:
            # The head and a body leave in one write, but a body larger than a segment ends in
            # a small one that Nagle would hold back until the server's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def idle_and_open(self) -> bool:
        """Whether a kept connection can carry a request: nothing arrived while it was idle
        (an EOF, a reset or stray bytes: none leaves it usable)."""
        if not self.reusable or self._buffer:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        self.reusable = False
        self.sock.close()

    def detach(self) -> tuple[socket.socket, bytes]:
        """The socket, for a protocol other than HTTP from here on (after a 101, or a 2xx to a
        CONNECT), with the bytes already read past the last response."""
        self.reusable = False
        already, self._buffer = bytes(self._buffer), bytearray()
        return self.sock, already

    def send(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes | Iterable[bytes | memoryview] = b"",
    ) -> None:
        """Write one request exactly as given: nothing is added (the caller gives Host and
        Content-Length) and nothing is re-quoted. ``ValueError`` for a method or target with
        spaces or control characters, or a header with CR, LF or NUL: the request could
        otherwise say something other than what was meant. A body given as chunks is written as
        they come (the headers must give its length)."""
        if _UNSAFE_START_LINE.search(method) or _UNSAFE_START_LINE.search(target):
            raise ValueError(f"the request line {method} {target!r} has a space or control byte")
        lines = [f"{method} {target} HTTP/1.1"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        text = "\r\n".join(lines) + "\r\n\r\n"
        # One CR and one LF per line, and no NUL, or some name or value carries its own.
        if text.count("\n") != len(lines) + 1 or text.count("\r") != len(lines) + 1:
            raise ValueError("a header name or value contains CR or LF")
        if "\x00" in text:
            raise ValueError("a header name or value contains NUL")
        head = text.encode("utf-8", "surrogateescape")
        if isinstance(body, bytes) and len(body) <= RECEIVE_BYTES:
            _may_block(self.sock, len(head) + len(body))
            self.sock.sendall(head + body)
        else:  # a large body is not copied just to join it to its head
            _may_block(self.sock, len(head))
            self.sock.sendall(head)
            for chunk in [body] if isinstance(body, bytes) else body:
                _may_block(self.sock, len(chunk))
                self.sock.sendall(chunk)
        # Servers that write a head and its body apart with Nagle on wait for the ACK of the
        # head, which Linux delays up to 40 ms on request/response connections. The option does
        # not stick (the kernel re-arms delayed ACKs), so it is set for every request.
        if self._quickack and _QUICKACK is not None:
            self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def receive(
        self,
        method: str,
        limit: int,
        stream_above: int | None = None,
        live: bool = False,
        body_deadline: float | None = None,
    ) -> Reply:
        """Read the response to a request sent with ``method``, skipping interim (1xx) ones,
        with at most ``limit + 1`` bytes of its body; a body whose Content-Length is above
        ``stream_above`` (and within ``limit``) is left on the wire, in ``Reply.stream``. With
        ``live``, a body of unknown length (chunked, or until the server closes) or an event
        stream is left on the wire too, in ``Reply.live``: the connection then belongs to it.
        A body read here that has not ended by ``body_deadline`` (``time.monotonic``) raises
        ``BodyTimedOut``."""
        while True:
            status, headers, keep_alive = self._head()
            if not (100 <= status < 200) or status == 101:
                break
        if status == 101:  # this client asks for no upgrade; nothing after it is HTTP
            self.reusable = False
            return Reply(status, headers, b"")
        framing = self._framing(method, status, headers)
        if (
            live
            and framing != "none"
            and (not isinstance(framing, int) or _is_event_stream(headers))
        ):
            self.reusable = False
            self.lent = True
            return Reply(status, headers, b"", live=LiveBody(self, framing))
        if (
            isinstance(framing, int)
            and stream_above is not None
            and stream_above < framing <= limit
        ):
            self.reusable = False  # until the stream has been read to its end
            return Reply(status, headers, b"", stream=BodyStream(self, framing, keep_alive))
        self._body_deadline = body_deadline
        try:
            body, too_large = self._body(framing, limit)
        except TimeoutError as exc:
            raise BodyTimedOut(f"the body was still coming after its head ({exc})") from None
        finally:
            self._body_deadline = None  # a timeout it shortened is reset on the next take
        if not keep_alive or too_large:
            self.reusable = False
        return Reply(status, headers, body, too_large)

    def _head(self) -> tuple[int, list[tuple[str, str]], bool]:
        """Status, headers, and whether the server keeps the connection open after it."""
        found = self._fill_until_head()
        head = bytes(self._buffer[: found.start()])
        del self._buffer[: found.end()]
        status_line, *lines = head.split(b"\n")
        version, _, rest = status_line.rstrip(b"\r").partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit() or rest[3:4] not in b" ":
            raise BadReply(f"bad status line {status_line[:80]!r}")
        headers: list[tuple[str, str]] = []
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line[:1] in (b" ", b"\t") and headers:  # an obsolete folded continuation
                folded_name, start = headers[-1]
                headers[-1] = (folded_name, start + " " + _text(line.strip(b" \t")))
                continue
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.match(name):
                raise BadReply(f"bad header line {line[:80]!r}")
            headers.append((name.decode("latin-1"), _text(value.strip(b" \t"))))
        tokens = set(header_tokens(headers, "connection"))
        keep_alive = "keep-alive" in tokens if version == b"HTTP/1.0" else "close" not in tokens
        return int(code), headers, keep_alive

    def _fill_until_head(self) -> re.Match[bytes]:
        searched = 0
        while True:
            found = _HEAD_END.search(self._buffer, max(0, searched - 3))
            if found is not None and found.start() <= MAX_HEAD_BYTES:
                return found
            if found is not None or len(self._buffer) > MAX_HEAD_BYTES:
                raise BadReply(f"the response head is longer than {MAX_HEAD_BYTES} bytes")
            searched = len(self._buffer)
            if not self._fill():
                if not self._buffer:
                    raise Closed("the server closed the connection without answering")
                raise Truncated("the connection ended inside the response head")

    @staticmethod
    def _framing(method: str, status: int, headers: list[tuple[str, str]]) -> int | str:
        """How the body is delimited: its Content-Length, or "none", "chunked" or "close"."""
        if method == "HEAD" or status in _BODILESS_STATUSES:
            return "none"
        if method == "CONNECT" and 200 <= status < 300:  # a tunnel follows, not a body
            return "none"
        codings = header_tokens(headers, "transfer-encoding")
        if codings:  # RFC 9112 6.3: anything but chunked last is read until the server closes
            return "chunked" if codings[-1] == "chunked" else "close"
        lengths = {
            length.strip()
            for name, value in headers
            if name.lower() == "content-length"
            for length in value.split(",")
        }
        if not lengths:
            return "close"
        if len(lengths) > 1 or not (length := lengths.pop()).isdigit():
            raise BadReply(f"bad Content-Length {sorted(lengths)}")
        return int(length)

    def _body(self, framing: int | str, limit: int) -> tuple[bytes, bool]:
        if framing == "none":
            return b"", False
        if framing == "chunked":
            return self._chunked(limit)
        if framing == "close":
            return self._until_close(limit)
        assert isinstance(framing, int)
        if framing > limit:
            return b"", True
        return self._exactly(framing), False

    def _exactly(self, size: int) -> bytes:
        if len(self._buffer) >= size:
            whole = bytes(self._buffer[:size])
            del self._buffer[:size]
            return whole
        # Received into the buffer of a BytesIO sized to the body, whose ``getvalue`` hands that
        # buffer over as the ``bytes`` once no view of it is left (CPython does not copy it):
        # the body is held once while it is read, where a bytearray and its copy held it twice.
        body = io.BytesIO()
        body.seek(size - 1)
        body.write(b"\0")
        got = len(self._buffer)
        with body.getbuffer() as view:
            view[:got] = self._buffer
            self._buffer.clear()
            while got < size:
                _may_block(self.sock)
                self._bound()
                count = self.sock.recv_into(view[got:], min(size - got, RECEIVE_BYTES))
                if not count:
                    raise Truncated(f"it announced {size} bytes and sent {got}")
                got += count
        return body.getvalue()

    def _until_close(self, limit: int) -> tuple[bytes, bool]:
        self.reusable = False
        while len(self._buffer) <= limit and self._fill():
            pass
        body = bytes(self._buffer[: limit + 1])
        self._buffer.clear()
        return body, len(body) > limit

    def _chunked(self, limit: int) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = _chunk_size(self._line())
            if chunk == 0:
                break
            if size + chunk > limit:
                parts.append(self._exactly_chunk(limit + 1 - size))
                return b"".join(parts), True
            parts.append(self._exactly_chunk(chunk))
            size += chunk
            if self._line():
                raise BadReply("a chunk is longer than its size line says")
        while self._line():  # trailer fields, ignored as a proxy may
            pass
        return b"".join(parts), False

    def _exactly_chunk(self, size: int) -> bytes:
        try:
            return self._exactly(size)
        except Truncated:
            raise Truncated("a chunked body was cut short") from None

    def _line(self) -> bytes:
        """The next line of a chunked body, without its line end."""
        searched = 0
        while (end := self._buffer.find(b"\n", searched)) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise BadReply(f"a chunked body line is longer than {MAX_HEAD_BYTES} bytes")
            searched = len(self._buffer)
            if not self._fill():
                raise Truncated("a chunked body was cut short")
        line = bytes(self._buffer[:end]).rstrip(b"\r")
        del self._buffer[: end + 1]
        return line

    def _bound(self) -> None:
        """Hold the next receive to the body's deadline, if one is set."""
        if self._body_deadline is None:
            return
        left = self._body_deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the time was up")
        current = self.sock.gettimeout()
        if current is None or left < current:
            self.sock.settimeout(left)

    def _fill(self) -> bool:
        """Append what the socket has to the buffer; False at the end of the stream."""
        _may_block(self.sock)
        self._bound()
        data = self.sock.recv(RECEIVE_BYTES)
        self._buffer += data
        return bool(data)


def client_tls() -> ssl.SSLContext:
    """The TLS settings of the agent's connections over TLS: the system's roots, or the CA
    ``SSL_CERT_FILE`` names as it is set now, and hostnames checked. Imported on first use:
    OpenSSL takes about 4 MiB of an agent that only ever speaks plain HTTP on loopback."""
    import ssl

    return ssl.create_default_context()


class BodyStream:
    """A response body of ``size`` bytes still on its connection, read once: ``peek`` at its
    start, then iterate over its chunks. Reading it to its end gives the connection back to
    keep-alive use; failing to, or a failure while reading, leaves the connection to be closed.
    Failures of the server's side come as ``SourceFailed``, so that whoever consumes the chunks
    (a blob upload) cannot mistake them for its own."""

    def __init__(self, conn: Connection, size: int, keep_alive: bool) -> None:
        self.conn = conn
        self.size = size
        self._keep_alive = keep_alive

    def peek(self, count: int) -> bytes:
        """The body's first ``count`` bytes (fewer if it is shorter), left to be read."""
        wanted = min(count, self.size)
        try:
            while len(self.conn._buffer) < wanted:
                if not self.conn._fill():
                    raise Truncated(f"it announced {self.size} bytes and sent fewer")
        except (OSError, Truncated) as exc:
            raise SourceFailed(exc) from exc
        return bytes(self.conn._buffer[:wanted])

    def read(self) -> bytes:
        """The whole body."""
        try:
            body = self.conn._exactly(self.size)
        except (OSError, Truncated) as exc:
            raise SourceFailed(exc) from exc
        self.conn.reusable = self._keep_alive
        return body

    def __iter__(self) -> Iterator[bytes | memoryview]:
        """The body in chunks, each valid only until the next is asked for (they share one
        buffer of ``RECEIVE_BYTES``)."""
        conn, left = self.conn, self.size
        try:
            if conn._buffer:
                first = bytes(conn._buffer[:left])
                del conn._buffer[: len(first)]
                left -= len(first)
                yield first
            view = memoryview(bytearray(min(left, RECEIVE_BYTES)))
            while left:
                _may_block(conn.sock)
                count = conn.sock.recv_into(view, min(left, len(view)))
                if not count:
                    raise Truncated(f"it announced {self.size} bytes and sent {self.size - left}")
                left -= count
                yield view[:count]
        except (OSError, Truncated) as exc:
            raise SourceFailed(exc) from exc
        conn.reusable = self._keep_alive


class LiveBody:
    """A response body passed on as the server writes it: iterating gives each piece as soon as
    it has arrived (at most ``RECEIVE_BYTES``), a chunked body's framing taken off. A server
    silent for ``idle`` seconds raises ``TimeoutError``; a cut body raises ``Truncated``. The
    connection is closed at the end either way: streams are long and rare, and one closed is
    never handed a request it would answer with the rest of a stream."""

    def __init__(self, conn: Connection, framing: int | str) -> None:
        self.conn = conn
        self.framing = framing

    def pieces(self, idle: float) -> Generator[bytes, None, None]:
        conn = self.conn
        try:
            conn.sock.settimeout(idle)
            if self.framing == "chunked":
                yield from self._chunked()
            else:
                yield from self._until(self.framing if isinstance(self.framing, int) else None)
        finally:
            conn.close()

    def _available(self, at_most: int) -> bytes:
        """What is buffered or arrives next (up to ``at_most``); b"" at the server's end."""
        conn = self.conn
        if not conn._buffer and not conn._fill():
            return b""
        piece = bytes(conn._buffer[:at_most])
        del conn._buffer[: len(piece)]
        return piece

    def _until(self, size: int | None) -> Iterator[bytes]:
        """A body of ``size`` bytes, or (None) one that ends when the server closes."""
        got = 0
        while size is None or got < size:
            piece = self._available(
                RECEIVE_BYTES if size is None else min(size - got, RECEIVE_BYTES)
            )
            if not piece:
                if size is None:
                    return
                raise Truncated(f"it announced {size} bytes and sent {got}")
            got += len(piece)
            yield piece

    def _chunked(self) -> Iterator[bytes]:
        conn = self.conn
        while True:
            left = _chunk_size(conn._line())
            if left == 0:
                while conn._line():  # trailer fields, ignored as a proxy may
                    pass
                return
            while left:
                piece = self._available(min(left, RECEIVE_BYTES))
                if not piece:
                    raise Truncated("a chunked body was cut short")
                left -= len(piece)
                yield piece
            if conn._line():
                raise BadReply("a chunk is longer than its size line says")


def _chunk_size(line: bytes) -> int:
    """The size a chunked body's size line announces (its extensions ignored)."""
    digits = line.split(b";", 1)[0].strip()
    try:
        size = int(digits, 16)
    except ValueError:
        raise BadReply(f"bad chunk size line {line[:40]!r}") from None
    if size < 0:
        raise BadReply(f"bad chunk size line {line[:40]!r}")
    return size


def _is_event_stream(headers: list[tuple[str, str]]) -> bool:
    content_type = next((v for n, v in headers if n.lower() == "content-type"), "")
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


class SourceFailed(Exception):
    """Reading a ``BodyStream`` failed on the server's side; ``cause`` says how."""

    def __init__(self, cause: OSError | Truncated) -> None:
        super().__init__(str(cause))
        self.cause = cause


def header_tokens(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    """The comma-separated tokens of every ``name`` header (any case), stripped, lower-cased."""
    name = name.lower()
    return [
        token.strip().lower()
        for header, value in headers
        if header.lower() == name
        for token in value.split(",")
    ]


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


class Pool:
    """Idle connections to one server, at most ``size`` kept. Thread-safe.

    ``connect(timeout)`` opens a fresh connection."""

    def __init__(self, connect: Callable[[float], Connection], size: int) -> None:
        self._connect = connect
        self.size = size
        self.idle: list[Connection] = []
        self._lock = threading.Lock()

    def exchange(self, run: Callable[[Connection], T], may_repeat: bool, timeout: float) -> T:
        """``run`` on a kept connection (or a fresh one) whose every socket operation is
        bounded by ``timeout``, keeping the connection afterwards if it can carry another
        request. When a kept connection turns out closed by the server after the request was
        written, the server may have acted on it: ``run`` goes again on a fresh connection
        only when ``may_repeat``."""
        conn, reused = self._take(timeout)
        try:
            try:
                result = run(conn)
            except STALE_ERRORS:
                if not (reused and may_repeat):
                    raise
                conn.close()
                conn = self._connect(timeout)
                result = run(conn)
        except BaseException:
            conn.close()
            raise
        self._give(conn)
        return result

    def _take(self, timeout: float) -> tuple[Connection, bool]:
        while True:
            with self._lock:
                conn = self.idle.pop() if self.idle else None
            if conn is None:
                return self._connect(timeout), False
            if conn.idle_and_open():
                if conn.sock.gettimeout() != timeout:  # setting it costs a system call
                    conn.sock.settimeout(timeout)
                return conn, True
            conn.close()

    def _give(self, conn: Connection) -> None:
        if conn.lent:  # a live body reads on, then closes it
            return
        if conn.reusable:
            with self._lock:
                if len(self.idle) < self.size:
                    self.idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
