"""The protocol's messages and limits: what each message accepts, every limit at and one past its
edge with the HTTP status it answers, guards, targets, hop-by-hop headers, secrets kept out of
reprs. (How messages travel as text is ``test_codec``.)"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway import protocol as p
from hatchway.protocol import ProtocolError

SALT = b"s" * p.BASIC_AUTH_SALT_BYTES
HASHED = p.hash_basic_auth("alice:pw", SALT)
BLOB_URL = "https://blobs.example.test/b/r1?X-Amz-Signature=abc"


def refused(build: Callable[..., object], *args: object, **kwargs: object) -> ProtocolError:
    """The ProtocolError that ``build(*args, **kwargs)`` raises."""
    with pytest.raises(ProtocolError) as caught:
        build(*args, **kwargs)
    return caught.value


def test_a_protocol_error_is_a_value_error_that_answers_400_by_default() -> None:
    assert isinstance(ProtocolError("x"), ValueError)
    assert ProtocolError("x").status == 400
    assert ProtocolError("x", status=413).status == 413


# --- Limits -----------------------------------------------------------------------------------


def test_the_limits_add_up() -> None:
    # A message is sent in whole frames, and the largest inline body (as base64) fits in one
    # message next to the largest head and one blob URL.
    assert p.MAX_MESSAGE_BYTES % p.MAX_FRAME_BYTES == 0
    inline_as_base64 = math.ceil(p.MAX_INLINE_BODY_BYTES / 3) * 4
    assert inline_as_base64 + p.MAX_HEAD_BYTES + p.MAX_BLOB_URL_LENGTH < p.MAX_MESSAGE_BYTES
    assert p.MAX_INLINE_BODY_BYTES < p.MAX_BODY_BYTES < p.MAX_BLOB_BYTES
    assert p.MIN_HEARTBEAT_SECONDS <= p.HEARTBEAT_SECONDS <= p.MAX_HEARTBEAT_SECONDS
    assert p.MAX_HEARTBEAT_SECONDS < p.CLAIM_LEASE_SECONDS
    assert p.RESPONSE_TIMEOUT_SECONDS < 30
    assert p.CONNECTION_ROTATE_SECONDS < p.MAX_CONNECTION_SECONDS
    # A pool's members fit in one DynamoDB item (400 KB) next to its guards, at ~200 bytes each.
    assert p.MAX_POOL_MEMBERS * 200 < 400_000 // 10


# --- Tunnel names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", True),
        ("0", True),
        ("my-app-2", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-app", False),
        ("app-", False),
        ("My-App", False),
        ("my_app", False),
        ("my.app", False),
        ("my app", False),
        ("café", False),
        ("", False),
        *((name, False) for name in sorted(p.RESERVED_NAMES)),
    ],
)
def test_a_tunnel_name_is_one_lowercase_dns_label_and_not_reserved(name: str, valid: bool) -> None:
    if valid:
        assert p.validate_name(name) == name
    else:
        refused(p.validate_name, name)


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(lambda: p.validate_name("app\n"), id="tunnel name"),
        pytest.param(lambda: p.validate_id("r1\n"), id="request id"),
        pytest.param(lambda: p.Request("r1", "app", "GET\n", "/"), id="method"),
        pytest.param(
            lambda: p.Request("r1", "app", "GET", "/", "", (("x-a\n", "1"),)), id="header"
        ),
        pytest.param(lambda: p.Hello((p.TunnelSpec("app"),), instance="i-1\n"), id="instance"),
    ],
)
def test_a_trailing_newline_never_passes_for_a_valid_field(check: Callable[[], object]) -> None:
    # ``$`` matches before a final newline: every pattern ends in ``\Z`` instead.
    with pytest.raises(ProtocolError):
        check()


@pytest.mark.parametrize("name", [None, 7, b"app", ["app"]])
def test_a_tunnel_name_that_is_not_a_string_is_refused(name: object) -> None:
    refused(p.validate_name, name)


# --- Hello and its tunnel specs ---------------------------------------------------------------


def test_one_connection_asks_for_1_to_16_tunnels() -> None:
    p.Hello((p.TunnelSpec(None),) * p.MAX_TUNNELS_PER_CONNECTION)
    refused(p.Hello, (p.TunnelSpec(None),) * (p.MAX_TUNNELS_PER_CONNECTION + 1))
    refused(p.Hello, ())


def test_a_hello_speaks_the_current_protocol_version_by_default() -> None:
    assert p.Hello((p.TunnelSpec("a"),)).version == p.PROTOCOL_VERSION == 2


def test_a_spec_lists_the_guards_the_relay_must_confirm() -> None:
    spec = p.TunnelSpec("shop", basic_auth=HASHED, webhook="stripe", webhook_secret="whsec_1")
    assert spec.guards == ("basic_auth", "webhook:stripe")
    assert p.TunnelSpec("plain").guards == ()
    assert p.TunnelSpec("b", basic_auth=HASHED).guards == ("basic_auth",)


def test_a_pool_is_asked_for_by_name_only() -> None:
    assert p.TunnelSpec("shop").pool is False
    assert p.TunnelSpec("shop", pool=True).pool is True
    error = refused(p.TunnelSpec, None, pool=True)
    assert "a pool needs a name" in str(error)


def test_a_welcome_and_a_pong_say_nothing_of_pools_by_default() -> None:
    info = p.TunnelInfo("a", None, "https://x/t/a/")
    assert (info.pool_size, info.pooled_since) == (0, 0.0)
    assert p.Pong(1.0).pools == ()


@pytest.mark.parametrize(
    ("mode", "valid"),
    [("refuse", True), ("redirect", True), ("", False), ("Redirect", False), ("stream", False)],
)
def test_large_responses_is_refuse_or_redirect(mode: str, valid: bool) -> None:
    assert p.TunnelSpec("a").large_responses == "refuse"
    if valid:
        assert p.TunnelSpec("a", large_responses=mode).large_responses == mode
    else:
        refused(p.TunnelSpec, "a", large_responses=mode)


def test_basic_auth_leaves_the_agent_only_as_a_salted_hash() -> None:
    iterations, salt, digest = p.parse_basic_auth_hash(HASHED)
    assert (iterations, salt) == (p.BASIC_AUTH_ITERATIONS, SALT)
    assert digest == p.derive_basic_auth(b"alice:pw", SALT, iterations)
    assert HASHED.startswith(p.BASIC_AUTH_SCHEME + "$")
    assert "alice" not in HASHED
    assert p.hash_basic_auth("alice:pw", b"t" * p.BASIC_AUTH_SALT_BYTES) != HASHED


@pytest.mark.parametrize(
    ("iterations", "valid"),
    [
        (p.MIN_BASIC_AUTH_ITERATIONS - 1, False),
        (p.MIN_BASIC_AUTH_ITERATIONS, True),
        (p.MAX_BASIC_AUTH_ITERATIONS, True),
        (p.MAX_BASIC_AUTH_ITERATIONS + 1, False),
    ],
)
def test_basic_auth_rounds_are_bounded(iterations: int, valid: bool) -> None:
    hashed = p.hash_basic_auth("a:b", SALT, iterations)
    if valid:
        assert p.parse_basic_auth_hash(hashed)[0] == iterations
    else:
        refused(p.parse_basic_auth_hash, hashed)


GUARD_REFUSALS = [
    pytest.param({"basic_auth": "alice:pw"}, id="a password instead of a hash"),
    pytest.param({"basic_auth": ""}, id="empty hash"),
    pytest.param({"basic_auth": HASHED.replace("10000", "999")}, id="too few rounds"),
    pytest.param({"basic_auth": HASHED.replace("10000", "1000000")}, id="too many rounds"),
    pytest.param({"basic_auth": p.hash_basic_auth("a:b", b"short")}, id="short salt"),
    pytest.param({"basic_auth": HASHED[:-4]}, id="short digest"),
    pytest.param({"basic_auth": HASHED[:-1] + "é"}, id="not base64"),
    pytest.param({"basic_auth": "md5$10000$abc$def"}, id="another scheme"),
    pytest.param({"webhook": "github"}, id="provider without secret"),
    pytest.param({"webhook_secret": "s3cret"}, id="secret without provider"),
    pytest.param({"webhook": "gitlab", "webhook_secret": "s3cret"}, id="unknown provider"),
    pytest.param({"webhook": "github", "webhook_secret": ""}, id="empty secret"),
    pytest.param(
        {"webhook": "github", "webhook_secret": "s" * (p.MAX_WEBHOOK_SECRET_LENGTH + 1)},
        id="secret one past the limit",
    ),
    pytest.param({"webhook": "github", "webhook_secret": "s3cret\n"}, id="control character"),
    pytest.param({"webhook": "github", "webhook_secret": "s3cret\x7f"}, id="DEL character"),
]


@pytest.mark.parametrize("fields", GUARD_REFUSALS)
def test_invalid_guards_are_refused_without_repeating_secrets(fields: dict[str, str]) -> None:
    error = refused(p.TunnelSpec, "shop", **fields)
    assert "s3cret" not in str(error) and "alice:pw" not in str(error)
    assert error.status == 400


@pytest.mark.parametrize("provider", sorted(p.WEBHOOK_PROVIDERS))
def test_the_longest_webhook_secret_fits_for_every_provider(provider: str) -> None:
    secret = "s" * p.MAX_WEBHOOK_SECRET_LENGTH
    assert p.TunnelSpec("a", webhook=provider, webhook_secret=secret).webhook == provider


def test_a_webhook_secret_that_is_not_utf8_is_refused() -> None:
    refused(p.TunnelSpec, "a", webhook="github", webhook_secret="s3cret\ud800")


# --- Welcome ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "valid"),
    [
        (p.MIN_HEARTBEAT_SECONDS, True),
        (p.HEARTBEAT_SECONDS, True),
        (p.MAX_HEARTBEAT_SECONDS, True),
        (0.999, False),
        (0.0, False),
        (-1.0, False),
        (540.001, False),
        (1e308, False),
        (math.inf, False),
        (-math.inf, False),
        (math.nan, False),
    ],
)
def test_a_welcome_asks_for_a_heartbeat_of_1_to_540_seconds(seconds: float, valid: bool) -> None:
    if valid:
        assert p.Welcome((), seconds).heartbeat_seconds == seconds
    else:
        refused(p.Welcome, (), seconds)


def test_a_tunnel_answers_at_its_custom_urls_first_and_its_path_url_last() -> None:
    info = p.TunnelInfo("a", "https://a.t.example/", "https://x/t/a/", (), ("https://c.test/",))
    assert info.public_urls == ("https://c.test/", "https://a.t.example/", "https://x/t/a/")
    assert p.TunnelInfo("a", None, "https://x/t/a/").public_urls == ("https://x/t/a/",)


# --- Requests ---------------------------------------------------------------------------------


def request(**fields: object) -> p.Request:
    defaults: dict[str, object] = {"id": "r1", "tunnel": "myapp", "method": "GET", "path": "/"}
    return p.Request(**(defaults | fields))  # type: ignore[arg-type]


def headers_of(count: int) -> p.Headers:
    return (("x", "1"),) * count


# (fields, status): None means the request is valid; otherwise the status it is refused with.
REQUEST_EDGES = [
    pytest.param({"body": b"x" * p.MAX_BODY_BYTES}, None, id="body at the ceiling"),
    pytest.param({"body": b"x" * (p.MAX_BODY_BYTES + 1)}, 413, id="body one byte over"),
    pytest.param(
        {"body_url": BLOB_URL, "body_size": p.MAX_BODY_BYTES}, None, id="blob body at the ceiling"
    ),
    pytest.param(
        {"body_url": BLOB_URL, "body_size": p.MAX_BODY_BYTES + 1}, 413, id="blob body one over"
    ),
    pytest.param({"headers": headers_of(p.MAX_HEADERS)}, None, id="most headers"),
    pytest.param({"headers": headers_of(p.MAX_HEADERS + 1)}, 431, id="one header too many"),
    pytest.param({"inline_max": 0}, None, id="inline_max 0"),
    pytest.param({"inline_max": p.MAX_INLINE_RESPONSE_BYTES}, None, id="inline_max at the limit"),
    pytest.param({"inline_max": p.MAX_INLINE_RESPONSE_BYTES + 1}, 400, id="inline_max over"),
    pytest.param({"inline_max": -1}, 400, id="inline_max negative"),
    pytest.param(
        {"upload_url": "https://" + "u" * (p.MAX_BLOB_URL_LENGTH - 8)}, None, id="longest URL"
    ),
    pytest.param(
        {"upload_url": "https://" + "u" * (p.MAX_BLOB_URL_LENGTH - 7)}, 400, id="URL one too long"
    ),
    pytest.param({"upload_url": "http://127.0.0.1:9000/b"}, None, id="http URL"),
    pytest.param({"upload_url": "ftp://blobs/b"}, 400, id="ftp URL"),
    pytest.param({"upload_url": "/b/r1"}, 400, id="relative URL"),
    pytest.param({"upload_url": "https://blobs/a b"}, 400, id="URL with a space"),
    pytest.param({"body_url": "file:///etc/passwd", "body_size": 1}, 400, id="file URL"),
    pytest.param({"body_url": "https://b/\r\nx", "body_size": 1}, 400, id="URL with CRLF"),
    pytest.param({"id": "a" * p.MAX_ID_LENGTH}, None, id="longest id"),
    pytest.param({"id": "a" * (p.MAX_ID_LENGTH + 1)}, 400, id="id one too long"),
    pytest.param({"id": ""}, 400, id="empty id"),
    pytest.param({"id": "../etc"}, 400, id="id with a path"),
    pytest.param({"id": "r 1"}, 400, id="id with a space"),
    pytest.param({"id": "ré"}, 400, id="id not ASCII"),
    pytest.param({"tunnel": "Bad"}, 400, id="invalid tunnel"),
    pytest.param({"tunnel": "connect"}, 400, id="reserved tunnel"),
    pytest.param({"method": "PROPFIND"}, None, id="extension method"),
    pytest.param({"method": "M-SEARCH"}, None, id="method with a hyphen"),
    pytest.param({"method": "A" * 20}, None, id="longest method"),
    pytest.param({"method": "A" * 21}, 400, id="method one too long"),
    pytest.param({"method": "get"}, 400, id="lowercase method"),
    pytest.param({"method": ""}, 400, id="empty method"),
    pytest.param({"method": "GET /x"}, 400, id="method with a space"),
    pytest.param({"method": "GET\r\n"}, 400, id="method with CRLF"),
    pytest.param({"headers": (("bad name", "v"),)}, 400, id="header name with a space"),
    pytest.param({"headers": (("", "v"),)}, 400, id="empty header name"),
    pytest.param({"headers": (("x", "a\r\nInjected: yes"),)}, 400, id="header value CRLF"),
    pytest.param({"headers": (("x", "a\x00"),)}, 400, id="header value NUL"),
    pytest.param({"headers": (("x",),)}, 400, id="header without a value"),
    pytest.param({"headers": (("x", "Zoë ✓\t"),)}, None, id="header value unicode and tab"),
]


@pytest.mark.parametrize(("fields", "status"), REQUEST_EDGES)
def test_request_limits_at_and_beyond_each_edge(
    fields: dict[str, object], status: int | None
) -> None:
    if status is None:
        request(**fields)
    else:
        assert refused(request, **fields).status == status


def test_an_oversized_request_body_is_413_naming_the_visitor() -> None:
    error = refused(request, body=b"x" * (p.MAX_BODY_BYTES + 1))
    assert "visitor" in str(error) and str(p.MAX_BODY_BYTES) in str(error)


def test_a_request_target_is_the_path_plus_the_raw_query() -> None:
    assert request(path="/a", query="x=1&x=2").target == "/a?x=1&x=2"
    assert request(path="/a").target == "/a"


@pytest.mark.parametrize(
    ("path", "query", "ok"),
    [
        ("/", "", True),
        ("/a/b%2F%2Fc", "x=1&x=2", True),
        ("/caf%C3%A9", "", True),
        ("/a/?b", "", True),
        ("http://evil.example/", "", False),
        ("//evil.example/x", "", False),
        ("evil.example:80", "", False),
        ("*", "", False),
        ("/a\r\nHost: evil", "", False),
        ("/a b", "", False),
        ("/a\tb", "", False),
        ("/a", "x=1 HTTP/1.1\r\nHost: evil", False),
        ("/a\x00", "", False),
        ("/a\x7f", "", False),
        ("", "", False),
    ],
)
def test_request_targets_must_be_plain_paths(path: str, query: str, ok: bool) -> None:
    if ok:
        p.check_target(path, query)
    else:
        refused(p.check_target, path, query)


# --- Responses --------------------------------------------------------------------------------


def response(**fields: object) -> p.Response:
    defaults: dict[str, object] = {"id": "r1", "status": 200}
    return p.Response(**(defaults | fields))  # type: ignore[arg-type]


RESPONSE_EDGES = [
    pytest.param({"status": 100}, None, id="status 100"),
    pytest.param({"status": 599}, None, id="status 599"),
    pytest.param({"status": 99}, 502, id="status 99"),
    pytest.param({"status": 600}, 502, id="status 600"),
    pytest.param({"status": -200}, 502, id="negative status"),
    pytest.param({"body": b"x" * p.MAX_BODY_BYTES}, None, id="body at the ceiling"),
    pytest.param({"body": b"x" * (p.MAX_BODY_BYTES + 1)}, 413, id="body one byte over"),
    pytest.param({"uploaded": 0}, None, id="empty upload"),
    pytest.param({"uploaded": p.MAX_BLOB_BYTES}, None, id="upload at the ceiling"),
    pytest.param({"uploaded": p.MAX_BLOB_BYTES + 1}, 502, id="upload one byte over"),
    pytest.param({"uploaded": -1}, 502, id="negative upload"),
    pytest.param({"uploaded": 5, "body": b"hello"}, 502, id="upload and a body"),
    pytest.param({"headers": headers_of(p.MAX_HEADERS)}, None, id="most headers"),
    pytest.param({"headers": (("bad name", "v"),)}, 502, id="header name with a space"),
    pytest.param({"headers": (("x", "a\r\nInjected: yes"),)}, 502, id="header value CRLF"),
    pytest.param({"headers": (("x",),)}, 502, id="header without a value"),
    pytest.param({"id": "../etc"}, 400, id="invalid id"),
]


@pytest.mark.parametrize(("fields", "status"), RESPONSE_EDGES)
def test_response_limits_at_and_beyond_each_edge(
    fields: dict[str, object], status: int | None
) -> None:
    if status is None:
        response(**fields)
    else:
        assert refused(response, **fields).status == status


def test_an_oversized_response_body_is_413_naming_the_local_app() -> None:
    error = refused(response, body=b"x" * (p.MAX_BODY_BYTES + 1))
    assert "local app" in str(error) and str(p.MAX_BODY_BYTES) in str(error)


def test_a_response_with_too_many_headers_is_the_local_apps_fault_502() -> None:
    assert refused(response, headers=headers_of(p.MAX_HEADERS + 1)).status == 502


def test_a_response_size_is_its_body_wherever_the_body_is() -> None:
    assert response(body=b"hello").size == 5
    assert response(uploaded=7_000_000).size == 7_000_000
    assert response().size == 0


# --- Header checks -----------------------------------------------------------------------------

TOKEN_CHARACTERS = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"


def header_is_valid(pair: object) -> bool:
    """The rule for one header, written out plainly: what the one-pass check must agree with."""
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        return False
    name, value = pair
    return (
        isinstance(name, str)
        and 1 <= len(name) <= 256
        and all(c in TOKEN_CHARACTERS for c in name)
        and isinstance(value, str)
        and not any(c in value for c in "\x00\r\n")
    )


@pytest.mark.parametrize(
    ("headers", "valid"),
    [
        pytest.param((), True, id="none"),
        pytest.param((("x" * 256, "v"),), True, id="longest name"),
        pytest.param((("x" * 257, "v"),), False, id="name one too long"),
        pytest.param((("a", "1"), ("x" * 257, "v"), ("b", "2")), False, id="long name inside"),
        pytest.param((("a", "1"), ("b", "2"), ("c", "3\n")), False, id="last value with LF"),
        pytest.param((("a", "1"), ("", "2")), False, id="empty name after another"),
        pytest.param((("a\nb", "1"),), False, id="LF inside a name"),
        pytest.param((("a", "1"), (3, "2")), False, id="name not a string"),
        pytest.param((("a", None),), False, id="value not a string"),
        pytest.param((("a", "1", "2"),), False, id="three items"),
        pytest.param((["a", "1"],), True, id="a list pair"),
        pytest.param((("a", ""), ("b", "Zoë ✓\t")), True, id="empty and unicode values"),
    ],
)
def test_header_checks_agree_with_the_rule_for_each_header(headers: p.Headers, valid: bool) -> None:
    assert all(header_is_valid(pair) for pair in headers) is valid
    if valid:
        p.validate_headers(headers, "visitor")
    else:
        with pytest.raises(ProtocolError):
            p.validate_headers(headers, "visitor")


_header_text = st.text(alphabet=TOKEN_CHARACTERS + " :\r\n\x00é", max_size=300)


@given(st.lists(st.tuples(_header_text, _header_text), max_size=6))
def test_one_pass_header_check_refuses_exactly_the_bad_heads(
    pairs: list[tuple[str, str]],
) -> None:
    headers = tuple(pairs)
    if all(header_is_valid(pair) for pair in headers):
        p.validate_headers(headers, "local app", status=502)
    else:
        with pytest.raises(ProtocolError) as refused:
            p.validate_headers(headers, "local app", status=502)
        assert refused.value.status == 502


def test_a_bad_header_is_named_whichever_place_it_has() -> None:
    with pytest.raises(ProtocolError, match="invalid header name 'bad name'"):
        p.validate_headers((("a", "1"), ("bad name", "2"), ("c", "3")), "visitor")
    with pytest.raises(ProtocolError, match="header 'c' with CR, LF, NUL"):
        p.validate_headers((("a", "1"), ("c", "3\r\n")), "visitor")


# --- Hop-by-hop headers -----------------------------------------------------------------------


def test_hop_by_hop_headers_and_those_named_by_connection_are_dropped() -> None:
    headers = (
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("X-Secret-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "5"),
        ("Upgrade", "websocket"),
        ("X-Kept", "a"),
        ("x-kept", "b"),
    )
    assert p.strip_hop_by_hop(headers) == (("X-Kept", "a"), ("x-kept", "b"))
    assert p.strip_hop_by_hop(iter(headers)) == (("X-Kept", "a"), ("x-kept", "b"))


def test_a_head_without_hop_by_hop_headers_comes_back_whole_as_pairs() -> None:
    headers = [["Host", "a.example"], ["X-Kept", "a"]]
    assert p.strip_hop_by_hop(headers) == (("Host", "a.example"), ("X-Kept", "a"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "listed", "hop"),
    [
        *((name, frozenset(), True) for name in sorted(p.HOP_BY_HOP_HEADERS)),
        ("TE", frozenset(), True),
        ("Proxy-Authorization", frozenset(), True),
        ("X-Custom", frozenset({"x-custom"}), True),
        ("Content-Type", frozenset(), False),
        ("Set-Cookie", frozenset(), False),
        ("Authorization", frozenset(), False),
    ],
)
def test_which_headers_are_hop_by_hop(name: str, listed: frozenset[str], hop: bool) -> None:
    assert p.is_hop_by_hop(name, listed) is hop


# --- Secrets stay out of reprs ----------------------------------------------------------------


def test_secrets_and_bodies_stay_out_of_reprs() -> None:
    spec = p.TunnelSpec("shop", basic_auth=HASHED, webhook="github", webhook_secret="s3cret")
    signed = request(
        body=b"card=4242",
        upload_url="https://blobs/up?X-Amz-Signature=sig1",
    )
    fetched = request(body_url="https://blobs/down?X-Amz-Signature=sig2", body_size=9)
    for message in (spec, p.Hello((spec,)), signed, fetched, response(body=b"card=4242")):
        text = repr(message)
        for secret in ("s3cret", HASHED, "4242", "sig1", "sig2"):
            assert secret not in text, f"{secret!r} in {text}"
