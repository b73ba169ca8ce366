"""Opening the agent's WebSocket: URLs, the proxy the environment names, the RFC 6455 handshake
against scripted servers on loopback (directly and through a CONNECT proxy, which blob transfers
take too), refusals typed, and an agent that never needs OpenSSL or a WebSocket library to
start."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import websocket

from hatchway.errors import RelayUnreachable, TokenRefused
from hatchway.transport import blobs, handshake, proxy, wire
from hatchway.transport.handshake import Address, HandshakeFailed, HandshakeRefused
from hatchway.transport.proxy import Proxy, ProxyRefused, proxy_for
from support.blob_server import scripted_server

WAIT = 10.0
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("ws://127.0.0.1:8080/connect", Address(False, "127.0.0.1", 8080, "/connect")),
        (
            "wss://relay.example.com/connect?x=1",
            Address(True, "relay.example.com", 443, "/connect?x=1"),
        ),
        ("ws://relay.example.com", Address(False, "relay.example.com", 80, "/")),
        ("ws://[::1]:9000/c", Address(False, "::1", 9000, "/c")),
    ],
)
def test_a_relay_url_gives_its_address(url: str, address: Address) -> None:
    assert handshake.parse_url(url) == address


def test_the_host_header_brackets_an_ipv6_literal() -> None:
    assert handshake.parse_url("ws://[::1]:9000/").authority == "[::1]:9000"
    assert handshake.parse_url("wss://r.example.com/").authority == "r.example.com:443"


@pytest.mark.parametrize("url", ["http://relay.example.com/", "relay.example.com", "ws:///path"])
def test_a_url_that_is_not_a_websocket_one_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        handshake.parse_url(url)


CREDENTIALS = "Basic " + base64.b64encode(b"me:p@ss").decode()


@pytest.mark.parametrize(
    ("url", "environ", "proxy"),
    [
        ("wss://r.example.com/", {}, None),
        (
            "wss://r.example.com/",
            {"https_proxy": "http://proxy.lan:3128"},
            Proxy("proxy.lan", 3128),
        ),
        ("wss://r.example.com/", {"HTTPS_PROXY": "proxy.lan:3128"}, Proxy("proxy.lan", 3128)),
        ("wss://r.example.com/", {"http_proxy": "http://proxy.lan:3128"}, None),
        ("ws://r.example.com/", {"http_proxy": "http://proxy.lan"}, Proxy("proxy.lan", 80)),
        (
            "wss://r.example.com/",
            {"https_proxy": "http://me:p%40ss@proxy.lan:3128"},
            Proxy("proxy.lan", 3128, CREDENTIALS),
        ),
        ("wss://r.example.com/", {"https_proxy": "http://p:1", "no_proxy": "example.com"}, None),
        ("wss://r.example.com/", {"https_proxy": "http://p:1", "NO_PROXY": ".example.com"}, None),
        ("wss://r.example.com/", {"https_proxy": "http://p:1", "no_proxy": "*"}, None),
        (
            "wss://r.example.com/",
            {"https_proxy": "http://p:1", "no_proxy": "other.com, ample.com"},
            Proxy("p", 1),
        ),
        ("ws://127.0.0.1:8080/", {"http_proxy": "http://p:1"}, None),
        ("ws://127.0.0.2:8080/", {"http_proxy": "http://p:1"}, None),
        ("ws://127.example.com/", {"http_proxy": "http://p:1"}, Proxy("p", 1)),
        ("ws://localhost:8080/", {"http_proxy": "http://p:1"}, None),
        ("ws://[::1]:8080/", {"http_proxy": "http://p:1"}, None),
        ("ws://relay.localhost:8080/", {"http_proxy": "http://p:1"}, None),
    ],
)
def test_the_proxy_comes_from_the_environment(
    url: str, environ: dict[str, str], proxy: Proxy | None
) -> None:
    address = handshake.parse_url(url)
    assert proxy_for(address.host, address.secure, environ) == proxy


def test_only_plain_http_proxies_are_understood() -> None:
    with pytest.raises(ValueError, match="only http:// proxies"):
        proxy_for("r.example.com", True, {"https_proxy": "socks5://p:1080"})


Script = Callable[[socket.socket, dict[str, str]], None]
ServerAndHeads = AbstractContextManager[tuple[int, list[tuple[str, dict[str, str]]]]]


def accept_value(key: str) -> bytes:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())


def read_head(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """The request line, the headers (lower-cased names), and bytes read past the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before a whole head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return first, headers, rest


def welcome_with_a_frame(sock: socket.socket, headers: dict[str, str]) -> None:
    """A 101 with a text frame in the same write, and an echo of the agent's next message."""
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_value(headers["sec-websocket-key"]) + b"\r\n\r\n"
        b"\x81\x05hello"
    )
    frames = websocket._abnf.frame_buffer(sock.recv, skip_utf8_validation=True)
    sock.sendall(b"\x81" + bytes([len(data := frames.recv_frame().data)]) + data)


@contextmanager
def one_connection(
    handle: Callable[[socket.socket, dict[str, str], bytes], None],
) -> Iterator[tuple[int, list[tuple[str, dict[str, str]]]]]:
    """A server on 127.0.0.1 for one connection: it reads the first head and hands the socket,
    the headers and the bytes read past the head to ``handle``; yields its port and the request
    line and headers it received."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[tuple[str, dict[str, str]]] = []

    def serve() -> None:
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        with sock:
            sock.settimeout(WAIT)
            first, headers, rest = read_head(sock)
            seen.append((first, headers))
            handle(sock, headers, rest)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        listener.close()
        thread.join(WAIT)


def scripted_relay(script: Script) -> ServerAndHeads:
    """A relay that answers one handshake with ``script``."""
    return one_connection(lambda sock, headers, _: script(sock, headers))


def test_the_handshake_opens_a_link_that_keeps_the_bytes_after_the_101() -> None:
    with scripted_relay(welcome_with_a_frame) as (port, seen):
        link = handshake.open_link(
            f"ws://127.0.0.1:{port}/connect?v=1", [("Authorization", "Bearer hw_t")], WAIT, {}
        )
        try:
            assert link.receive_text() == b"hello"
            link.writer.message([b"again"])
            assert link.receive_text() == b"again"
        finally:
            link.close()
    first, headers = seen[0]
    assert first == "GET /connect?v=1 HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["upgrade"] == "websocket" and headers["connection"] == "Upgrade"
    assert headers["sec-websocket-version"] == "13"
    assert len(base64.b64decode(headers["sec-websocket-key"])) == handshake.KEY_BYTES
    assert headers["authorization"] == "Bearer hw_t"


def refusing(status: int, body: bytes = b"", declared: int | None = None) -> Script:
    """A refusal with ``body``, announced as ``declared`` bytes (its true size by default)."""
    length = len(body) if declared is None else declared

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        head = b"HTTP/1.1 %d No\r\nContent-Length: %d\r\n\r\n" % (status, length)
        with contextlib.suppress(OSError):  # the agent may hang up before all of it is sent
            sock.sendall(head + body)

    return script


@pytest.mark.parametrize(
    ("body", "declared"),
    [
        (b"x" * proxy.MAX_REFUSAL_BYTES, None),  # at the limit: read whole
        (b"x" * (proxy.MAX_REFUSAL_BYTES + 1), None),  # beyond it: not read
        (b"x" * 1000, 50_000_000),  # a body far larger than anything read
    ],
)
def test_a_refusal_is_reported_by_status_whatever_its_body(
    body: bytes, declared: int | None
) -> None:
    with (
        scripted_relay(refusing(401, body, declared)) as (port, _),
        pytest.raises(TokenRefused, match="refused the token"),
    ):
        handshake.connect(f"ws://127.0.0.1:{port}/", "hw_t", WAIT)


@pytest.mark.parametrize("status", [401, 403, 429, 502])
def test_a_refusal_keeps_its_status(status: int) -> None:
    with (
        scripted_relay(refusing(status)) as (port, _),
        pytest.raises(HandshakeRefused, match=f"relay answered HTTP {status}") as refused,
    ):
        handshake.open_link(f"ws://127.0.0.1:{port}/", [], WAIT, {})
    assert refused.value.status == status


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (401, TokenRefused, "refused the token. Get one"),
        (403, TokenRefused, "refused the token"),
        (502, RelayUnreachable, "answered HTTP 502"),
    ],
)
def test_connect_says_which_refusal_it_was(status: int, error: type, words: str) -> None:
    with (
        scripted_relay(refusing(status)) as (port, _),
        pytest.raises(error, match=words),
    ):
        handshake.connect(f"ws://127.0.0.1:{port}/", "hw_t", WAIT)


def test_a_relay_that_stops_inside_its_answer_is_unreachable_not_a_crash() -> None:
    def cut(sock: socket.socket, headers: dict[str, str]) -> None:
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs")

    with scripted_relay(cut) as (port, _), pytest.raises(RelayUnreachable, match="inside"):
        handshake.connect(f"ws://127.0.0.1:{port}/", "hw_t", WAIT)


def upgrade_answer(*lines: bytes, accept: bool = True) -> Script:
    """A 101 with the given header lines, plus a right or wrong Sec-WebSocket-Accept."""

    def script(sock: socket.socket, headers: dict[str, str]) -> None:
        key = headers["sec-websocket-key"] if accept else "bm90IHRoZSBrZXk="
        extra = b"".join(line + b"\r\n" for line in lines)
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            + extra
            + b"Sec-WebSocket-Accept: "
            + accept_value(key)
            + b"\r\n\r\n"
        )

    return script


UPGRADE = (b"Upgrade: websocket", b"Connection: Upgrade")


@pytest.mark.parametrize(
    ("script", "words"),
    [
        (upgrade_answer(*UPGRADE, accept=False), "does not accept this WebSocket handshake"),
        (upgrade_answer(b"Connection: Upgrade"), "does not upgrade to a WebSocket"),
        (upgrade_answer(b"Upgrade: h2c", b"Connection: Upgrade"), "does not upgrade"),
        (upgrade_answer(b"Upgrade: websocket", b"Connection: keep-alive"), "does not upgrade"),
        (
            upgrade_answer(*UPGRADE, b"Sec-WebSocket-Extensions: permessage-deflate"),
            "sets sec-websocket-extensions, which was not asked for",
        ),
        (upgrade_answer(*UPGRADE, b"Sec-WebSocket-Protocol: chat"), "sec-websocket-protocol"),
    ],
)
def test_a_101_that_does_not_accept_this_handshake_is_refused(script: Script, words: str) -> None:
    with scripted_relay(script) as (port, _), pytest.raises(HandshakeFailed, match=words):
        handshake.open_link(f"ws://127.0.0.1:{port}/", [], WAIT, {})


def test_a_101_with_upgrade_among_other_connection_tokens_is_accepted() -> None:
    script = upgrade_answer(b"Upgrade: WebSocket", b"Connection: keep-alive, Upgrade")
    with scripted_relay(script) as (port, _):
        handshake.open_link(f"ws://127.0.0.1:{port}/", [], WAIT, {}).close()


def test_an_unreachable_relay_is_reported_as_such() -> None:
    with socket.create_server(("127.0.0.1", 0)) as gone:
        port = gone.getsockname()[1]
    with pytest.raises(RelayUnreachable, match="cannot reach the relay"):
        handshake.connect(f"ws://127.0.0.1:{port}/", "hw_t", WAIT)


def connect_proxy(relay_port: int, status: bytes = b"200 Connection established") -> ServerAndHeads:
    """An HTTP proxy on 127.0.0.1 that tunnels a CONNECT to ``relay_port`` on 127.0.0.1,
    whatever host it names (nothing leaves loopback)."""

    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:  # an end on one side ends the other (shutdown also wakes its reader)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)

    def tunnel(client: socket.socket, headers: dict[str, str], rest: bytes) -> None:
        client.sendall(b"HTTP/1.1 " + status + b"\r\n\r\n")
        if not status.startswith(b"200"):
            return
        with socket.create_connection(("127.0.0.1", relay_port), WAIT) as upstream:
            upstream.sendall(rest)
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
            pump(client, upstream)

    return one_connection(tunnel)


def test_a_proxy_from_the_environment_tunnels_the_connection() -> None:
    with (
        scripted_relay(welcome_with_a_frame) as (relay_port, relayed),
        connect_proxy(relay_port) as (proxy_port, connects),
    ):
        environ = {"http_proxy": f"http://me:p%40ss@127.0.0.1:{proxy_port}"}
        link = handshake.open_link("ws://relay.example.test:8080/connect", [], WAIT, environ)
        try:
            assert link.receive_text() == b"hello"
        finally:
            link.close()
    first, headers = connects[0]
    assert first == "CONNECT relay.example.test:8080 HTTP/1.1"
    assert headers["host"] == "relay.example.test:8080"
    assert headers["proxy-authorization"] == CREDENTIALS
    assert relayed[0][1]["host"] == "relay.example.test:8080"


def test_a_proxy_that_refuses_is_named_in_the_error() -> None:
    refusing = connect_proxy(0, b"407 Proxy Authentication Required")  # tunnels to nowhere
    with refusing as (proxy_port, _):
        environ = {"https_proxy": f"http://127.0.0.1:{proxy_port}"}
        with pytest.raises(
            ProxyRefused, match=f"proxy at 127.0.0.1:{proxy_port} answered HTTP 407 to CONNECT"
        ):
            handshake.open_link("wss://relay.example.test/connect", [], WAIT, environ)


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 8, 125, 126, 1000, 65537])
def test_masking_in_python_gives_the_bytes_websocket_client_gives(size: int) -> None:
    key, payload = b"\x01\x80\xfe\x37", bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = websocket.ABNF.mask(key, payload)
    assert wire._mask_in_python(key, payload) == expected
    assert wire.mask(key, payload) == expected


def test_the_agent_starts_without_openssl_or_a_websocket_library() -> None:
    """TLS, OpenSSL's hashes and websocket-client stay unloaded until a URL or option needs
    them: on a plain ws:// relay they would be 5 MiB of the agent's memory for nothing."""
    probe = (
        "import sys, hatchway.cli, hatchway.serving.session\n"
        "import hatchway.transport.handshake, hatchway.transport.blobs\n"
        "print(sorted({'ssl', '_ssl', '_hashlib', 'hashlib', 'websocket'} & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_a_proxy_setting_that_cannot_be_used_fails_the_blob_transfer_in_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("https_proxy", "socks5://127.0.0.1:1080")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(blobs.BlobError, match="only http:// proxies"):
        blobs.fetch("https://bucket.s3.example.test/b/2?X-Signature=abc", 1024, WAIT)


def test_blob_transfers_go_through_the_same_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with scripted_server() as store:
        store.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
        store_port = int(store.url.rpartition(":")[2])
        with connect_proxy(store_port) as (proxy_port, connects):
            monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy_port}")
            monkeypatch.delenv("no_proxy", raising=False)
            monkeypatch.delenv("NO_PROXY", raising=False)
            url = "http://blobs.example.test:8081/b/1?X-Signature=abc"
            assert blobs.fetch(url, 1024, WAIT) == b"body"
    assert connects[0][0] == "CONNECT blobs.example.test:8081 HTTP/1.1"
    assert store.received[0].startswith(b"GET /b/1?X-Signature=abc HTTP/1.1\r\n")
