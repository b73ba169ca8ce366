"""ApiGatewayPoster: posts through boto3; a 410 Gone becomes ConnectionGone (moto never
raises Gone, so that path uses botocore's Stubber)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from hatchway_relay.adapters.apigateway_poster import ApiGatewayPoster, make_client
from hatchway_relay.ports import ConnectionGone


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return make_client("https://abc.execute-api.eu-west-1.amazonaws.com/prod", "eu-west-1")


def test_post_sends_the_text_as_utf8(client) -> None:  # type: ignore[no-untyped-def]
    with Stubber(client) as stub:
        stub.add_response(
            "post_to_connection", {}, {"ConnectionId": "c1", "Data": "héllo".encode()}
        )
        ApiGatewayPoster(client).post("c1", "héllo")
        stub.assert_no_pending_responses()


def test_gone_becomes_connection_gone(client) -> None:  # type: ignore[no-untyped-def]
    with Stubber(client) as stub:
        stub.add_client_error("post_to_connection", "GoneException", http_status_code=410)
        with pytest.raises(ConnectionGone) as exc:
            ApiGatewayPoster(client).post("c1", "x")
    assert exc.value.connection_id == "c1"


def test_other_errors_are_not_mistaken_for_gone(client) -> None:  # type: ignore[no-untyped-def]
    with Stubber(client) as stub:
        stub.add_client_error("post_to_connection", "LimitExceededException", http_status_code=429)
        with pytest.raises(ClientError):
            ApiGatewayPoster(client).post("c1", "x")
