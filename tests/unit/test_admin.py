"""hatchway-admin against a DynamoDB table (moto): a token is shown once, stored as a hash,
listed by id only, and revoked tokens no longer connect."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import boto3
import pytest
from moto import mock_aws

from hatchway_relay.adapters.dynamo_store import DynamoStore, create_table
from hatchway_relay.ports import Claim, ConnectionRecord
from hatchway_relay.tokens import hash_token

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "hatchway_admin.py"


@pytest.fixture
def cli() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hatchway_admin", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoStore]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        create_table(resource, "relay")
        yield DynamoStore(resource.Table("relay"))


def run(cli: ModuleType, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["--table", "relay", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_shows_the_token_once_and_stores_its_hash(
    cli: ModuleType, table: DynamoStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(cli, capsys, "token", "create", "--name", "laptop", "--reserve", "myapp")
    assert code == 0
    token = out.split()[1]
    record = table.get_token(hash_token(token))
    assert record is not None and record.label == "laptop" and record.reserved == ("myapp",)

    code, listing, _ = run(cli, capsys, "token", "list")
    assert code == 0 and record.token_id in listing and "laptop" in listing
    assert token not in listing


def test_revoke_by_id(
    cli: ModuleType, table: DynamoStore, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(cli, capsys, "token", "create", "--name", "old")
    token = out.split()[1]
    token_id = hash_token(token)[:12]
    assert run(cli, capsys, "token", "revoke", token_id)[0] == 0
    assert table.get_token(hash_token(token)) is None
    code, _, err = run(cli, capsys, "token", "revoke", token_id)
    assert code == 1 and "no token with id" in err


def test_invalid_reserved_name_is_refused(
    cli: ModuleType, table: DynamoStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(cli, capsys, "token", "create", "--name", "x", "--reserve", "Bad_Name")
    assert code == 2 and "invalid tunnel name" in err
    assert table.list_tokens() == []


def test_reserved_names_are_exclusive_and_released_on_revoke(
    cli: ModuleType, table: DynamoStore, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(cli, capsys, "token", "create", "--name", "a", "--reserve", "shop")
    first_id = hash_token(out.split()[1])[:12]
    code, _, err = run(cli, capsys, "token", "create", "--name", "b", "--reserve", "shop")
    assert code == 2 and "reserved for another token" in err
    assert table.get_reservation("shop") == first_id
    run(cli, capsys, "token", "revoke", first_id)
    assert table.get_reservation("shop") is None
    assert run(cli, capsys, "token", "create", "--name", "b", "--reserve", "shop")[0] == 0


def test_reserve_and_release_by_token_id(
    cli: ModuleType, table: DynamoStore, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(cli, capsys, "token", "create", "--name", "a")
    token_id = hash_token(out.split()[1])[:12]
    assert run(cli, capsys, "reserve", "shop", "--token-id", token_id)[0] == 0
    assert table.get_reservation("shop") == token_id
    assert table.list_tokens()[0].reserved == ("shop",)
    code, _, err = run(cli, capsys, "reserve", "shop", "--token-id", "000000000000")
    assert code == 1 and "no token with id" in err
    assert run(cli, capsys, "release", "shop", "--token-id", token_id)[0] == 0
    assert table.get_reservation("shop") is None and table.list_tokens()[0].reserved == ()
    assert run(cli, capsys, "release", "shop", "--token-id", token_id)[0] == 1


def test_tunnels_lists_only_live_ones(
    cli: ModuleType, table: DynamoStore, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    _, out, _ = run(cli, capsys, "token", "create", "--name", "laptop")
    token_id = hash_token(out.split()[1])[:12]
    table.put_connection(ConnectionRecord("c1", token_id, now - 60, now + 3600))
    table.claim_name(Claim("live", "c1", token_id, now + 600), now)
    table.claim_name(Claim("expired", "c1", token_id, now - 1), now - 700)
    table.claim_name(Claim("orphan", "gone", token_id, now + 600), now)  # no connection
    code, listing, _ = run(cli, capsys, "tunnels")
    assert code == 0
    assert len(listing.splitlines()) == 1  # not the expired claim, nor the orphan
    assert listing.startswith(f"live  {token_id}  laptop  since ")
