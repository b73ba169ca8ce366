"""The posters over boto3's management API client: ``ApiGatewayPoster`` posts to agents'
connections, ``ApiGatewaySocketPoster`` sends to visitors' sockets and closes them. A 410 Gone
becomes ConnectionGone (nothing on a close), every other failure PostFailed. moto delivers
messages but never answers Gone, so the error paths use botocore's Stubber."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from botocore.stub import Stubber
from moto import mock_aws
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
from moto.core import DEFAULT_ACCOUNT_ID

from hatchway_relay.adapters.apigateway_poster import ApiGatewayPoster, make_client
from hatchway_relay.adapters.apigateway_socket_poster import ApiGatewaySocketPoster
from hatchway_relay.ports import ConnectionGone, PostFailed, SocketPoster

ENDPOINT = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # Dummy credentials: nothing here may reach a real account.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        yield make_client(ENDPOINT, "eu-west-1")


def test_posted_text_reaches_the_connection_as_utf8(client: Any) -> None:
    poster = ApiGatewayPoster(client)
    poster.post("c1", '{"type":"héllo"}')
    poster.post("c1", "✓")
    poster.post("c2", "other")
    connections = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].connections
    # moto concatenates what one connection received, with no separator.
    assert connections["c1"].data == '{"type":"héllo"}✓'.encode()
    assert connections["c2"].data == b"other"


FAILURES = [
    pytest.param("GoneException", 410, True, id="API Gateway's Gone"),
    pytest.param("Gone", 410, True, id="a bare 410 from another endpoint"),
    pytest.param("LimitExceededException", 429, False, id="throttled"),
    pytest.param("ForbiddenException", 403, False, id="no ManageConnections permission"),
    pytest.param("PayloadTooLargeException", 413, False, id="frame too large"),
    pytest.param("InternalServerError", 500, False, id="a 5xx after the retries"),
]

SENDS = {
    "agent post": lambda client: ApiGatewayPoster(client).post("c1", "x"),
    "visitor send": lambda client: ApiGatewaySocketPoster(client).send("c1", b"x", binary=False),
}
"""Both posters' way of sending one message, ``x``, to connection ``c1``."""


@pytest.mark.parametrize("send", SENDS)
@pytest.mark.parametrize(("code", "status", "gone"), FAILURES)
def test_only_a_gone_connection_becomes_connection_gone(
    client: Any, code: str, status: int, gone: bool, send: str
) -> None:
    with Stubber(client) as stub:
        stub.add_client_error(
            "post_to_connection",
            code,
            http_status_code=status,
            expected_params={"ConnectionId": "c1", "Data": b"x"},
        )
        with pytest.raises(ConnectionGone if gone else PostFailed) as raised:
            SENDS[send](client)
        stub.assert_no_pending_responses()
    assert raised.value.connection_id == "c1"  # the stale connection, not the sender's
    if not gone:
        assert isinstance(raised.value, PostFailed) and raised.value.why == code


def test_a_post_that_times_out_after_the_retries_is_post_failed(client: Any) -> None:
    def time_out(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url=ENDPOINT)

    client.meta.events.register("before-send.apigatewaymanagementapi", time_out)
    with pytest.raises(PostFailed) as raised:
        ApiGatewayPoster(client).post("c1", "x")
    assert raised.value.why == "ReadTimeoutError"


def test_make_client_targets_the_stage_with_a_pool_for_concurrent_posts(client: Any) -> None:
    assert client.meta.endpoint_url == ENDPOINT
    assert client.meta.region_name == "eu-west-1"
    config = client.meta.config
    assert config.max_pool_connections == 64
    assert config.retries["mode"] == "standard"
    # Three attempts of connect + read must fit well inside the HTTP API's 30 s.
    assert 3 * (config.connect_timeout + config.read_timeout) < 30


# --- Visitors' sockets ---------------------------------------------------------------------------


def test_it_is_the_socket_poster_port(client: Any) -> None:
    poster: SocketPoster = ApiGatewaySocketPoster(client)
    assert callable(poster.send) and callable(poster.close)


def test_a_client_made_on_demand_is_made_once_at_the_first_use(client: Any) -> None:
    made: list[Any] = []

    def make() -> Any:
        made.append(client)
        return client

    poster = ApiGatewaySocketPoster(make)
    assert made == []  # a cold start that never touches a socket builds no client
    poster.send("v1", b"one", False)
    poster.close("v1", 1000, "")
    assert made == [client]


def test_sent_messages_reach_the_socket_as_given(client: Any) -> None:
    poster = ApiGatewaySocketPoster(client)
    poster.send("s1", "héllo ✓".encode(), binary=False)
    poster.send("s1", b"\x00\xff", binary=True)  # no frame kind on AWS: the bytes as they are
    poster.send("s2", b"other", binary=False)
    connections = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].connections
    # moto concatenates what one connection received, with no separator.
    assert connections["s1"].data == "héllo ✓".encode() + b"\x00\xff"
    assert connections["s2"].data == b"other"


def test_a_message_goes_out_in_one_post_with_its_bytes(client: Any) -> None:
    with Stubber(client) as stub:
        stub.add_response(
            "post_to_connection", {}, expected_params={"ConnectionId": "s1", "Data": b"\x01ab"}
        )
        ApiGatewaySocketPoster(client).send("s1", b"\x01ab", binary=True)
        stub.assert_no_pending_responses()


def test_close_deletes_the_connection_whatever_the_code(client: Any) -> None:
    with Stubber(client) as stub:
        # DeleteConnection has no code or reason: the visitor sees 1000.
        stub.add_response("delete_connection", {}, expected_params={"ConnectionId": "s1"})
        ApiGatewaySocketPoster(client).close("s1", 1011, "the agent is gone")
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(("code", "status", "gone"), FAILURES)
def test_closing_a_gone_socket_does_nothing_and_other_failures_are_post_failed(
    client: Any, code: str, status: int, gone: bool
) -> None:
    with Stubber(client) as stub:
        stub.add_client_error(
            "delete_connection",
            code,
            http_status_code=status,
            expected_params={"ConnectionId": "s1"},
        )
        poster = ApiGatewaySocketPoster(client)
        if gone:
            poster.close("s1", 1000, "")
        else:
            with pytest.raises(PostFailed) as raised:
                poster.close("s1", 1000, "")
            assert raised.value.connection_id == "s1" and raised.value.why == code
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("operation", ["send", "close"])
def test_a_call_that_times_out_after_the_retries_is_post_failed(
    client: Any, operation: str
) -> None:
    def time_out(**_: Any) -> None:
        raise ConnectTimeoutError(endpoint_url=ENDPOINT)

    client.meta.events.register("before-send.apigatewaymanagementapi", time_out)
    poster = ApiGatewaySocketPoster(client)
    with pytest.raises(PostFailed) as raised:
        if operation == "send":
            poster.send("s1", b"x", binary=False)
        else:
            poster.close("s1", 1001, "going away")
    assert raised.value.why == "ConnectTimeoutError"
