"""ApiGatewayPoster: posts through boto3's management API client; a 410 Gone becomes
ConnectionGone, every other failure PostFailed. moto delivers messages but never answers Gone,
so the error paths use botocore's Stubber."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.stub import Stubber
from moto import mock_aws
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
from moto.core import DEFAULT_ACCOUNT_ID

from hatchway_relay.adapters.apigateway_poster import ApiGatewayPoster, make_client
from hatchway_relay.ports import ConnectionGone, PostFailed

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


@pytest.mark.parametrize(
    ("code", "status", "gone"),
    [
        pytest.param("GoneException", 410, True, id="API Gateway's Gone"),
        pytest.param("Gone", 410, True, id="a bare 410 from another endpoint"),
        pytest.param("LimitExceededException", 429, False, id="throttled"),
        pytest.param("ForbiddenException", 403, False, id="no ManageConnections permission"),
        pytest.param("PayloadTooLargeException", 413, False, id="frame too large"),
    ],
)
def test_only_a_gone_connection_becomes_connection_gone(
    client: Any, code: str, status: int, gone: bool
) -> None:
    with Stubber(client) as stub:
        stub.add_client_error(
            "post_to_connection",
            code,
            http_status_code=status,
            expected_params={"ConnectionId": "c1", "Data": b"x"},
        )
        with pytest.raises(ConnectionGone if gone else PostFailed) as raised:
            ApiGatewayPoster(client).post("c1", "x")
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
