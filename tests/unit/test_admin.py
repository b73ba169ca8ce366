"""hatchway-admin against a DynamoDB table (moto): a token is shown once, stored as a hash,
listed by id only, and revoked tokens no longer connect."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from hatchway_local.server import run_local
from hatchway_relay import admin
from hatchway_relay.adapters.dynamo_store import DynamoStore, create_table
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.ports import Claim, ConnectionRecord, PoolMember, TunnelReport
from hatchway_relay.tokens import hash_token
from support.aws_credentials import use_fake_credentials

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "hatchway_admin.py"


@pytest.fixture
def cli() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hatchway_admin", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Relay:
    """Where the commands point (``args``) and a direct view of the same state (``store``)."""

    args: list[str]
    store: MemoryStore | DynamoStore


@pytest.fixture(params=["dynamodb", "local"])
def relay(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Relay]:
    if request.param == "local":
        # A running hatchway-local with its memory store, reached through its admin API.
        with run_local() as server:
            admin_file = tmp_path / "local-admin.json"
            server.admin.write_admin_file(admin_file)
            yield Relay(["--local", "--admin-file", str(admin_file)], server.store)  # type: ignore[arg-type]
        return
    use_fake_credentials(monkeypatch, "us-east-1")
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        create_table(resource, "relay")
        yield Relay(["--table", "relay"], DynamoStore(resource.Table("relay")))


def run(
    cli: ModuleType, capsys: pytest.CaptureFixture[str], relay: Relay, *args: str
) -> tuple[int, str, str]:
    code = cli.main([*relay.args, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_shows_the_token_once_and_stores_its_hash(
    cli: ModuleType, relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        cli, capsys, relay, "token", "create", "--name", "laptop", "--reserve", "myapp"
    )
    assert code == 0
    token = out.split()[1]
    record = relay.store.get_token(hash_token(token))
    assert record is not None and record.label == "laptop" and record.reserved == ("myapp",)

    code, listing, _ = run(cli, capsys, relay, "token", "list")
    assert code == 0 and record.token_id in listing and "laptop" in listing
    assert token not in listing


def test_revoke_by_id(cli: ModuleType, relay: Relay, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(cli, capsys, relay, "token", "create", "--name", "old")
    token = out.split()[1]
    token_id = hash_token(token)[:12]
    assert run(cli, capsys, relay, "token", "revoke", token_id)[0] == 0
    assert relay.store.get_token(hash_token(token)) is None
    code, _, err = run(cli, capsys, relay, "token", "revoke", token_id)
    assert code == 1 and "no token with id" in err


def test_invalid_reserved_name_is_refused(
    cli: ModuleType, relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        cli, capsys, relay, "token", "create", "--name", "x", "--reserve", "Bad_Name"
    )
    assert code == 2 and "invalid tunnel name" in err
    assert relay.store.list_tokens() == []


def test_reserved_names_are_exclusive_and_released_on_revoke(
    cli: ModuleType, relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(cli, capsys, relay, "token", "create", "--name", "a", "--reserve", "shop")
    first_id = hash_token(out.split()[1])[:12]
    code, _, err = run(cli, capsys, relay, "token", "create", "--name", "b", "--reserve", "shop")
    assert code == 2 and "reserved for another token" in err
    assert relay.store.get_reservation("shop") == first_id
    run(cli, capsys, relay, "token", "revoke", first_id)
    assert relay.store.get_reservation("shop") is None
    assert run(cli, capsys, relay, "token", "create", "--name", "b", "--reserve", "shop")[0] == 0


def test_reserve_and_release_by_token_id(
    cli: ModuleType, relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(cli, capsys, relay, "token", "create", "--name", "a")
    token_id = hash_token(out.split()[1])[:12]
    assert run(cli, capsys, relay, "reserve", "shop", "--token-id", token_id)[0] == 0
    assert relay.store.get_reservation("shop") == token_id
    assert relay.store.list_tokens()[0].reserved == ("shop",)
    code, _, err = run(cli, capsys, relay, "reserve", "shop", "--token-id", "000000000000")
    assert code == 1 and "no token with id" in err
    assert run(cli, capsys, relay, "release", "shop", "--token-id", token_id)[0] == 0
    assert relay.store.get_reservation("shop") is None
    assert relay.store.list_tokens()[0].reserved == ()
    assert run(cli, capsys, relay, "release", "shop", "--token-id", token_id)[0] == 1


def test_tunnels_lists_only_live_ones(
    cli: ModuleType, relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    _, out, _ = run(cli, capsys, relay, "token", "create", "--name", "laptop")
    token_id = hash_token(out.split()[1])[:12]
    relay.store.put_connection(ConnectionRecord("c1", token_id, now - 60, now + 3600))
    relay.store.claim_name(Claim("live", "c1", token_id, now + 600), now)
    relay.store.claim_name(Claim("expired", "c1", token_id, now - 1), now - 700)
    relay.store.claim_name(Claim("orphan", "gone", token_id, now + 600), now)  # no connection
    code, listing, _ = run(cli, capsys, relay, "tunnels")
    assert code == 0
    assert len(listing.splitlines()) == 1  # not the expired claim, nor the orphan
    assert listing.startswith(f"live  {token_id}  laptop  since ")
    assert listing.rstrip().endswith("agents 1  served 0")
    relay.store.renew_claim("live", "c1", time.time() + 60, TunnelReport(2))  # as a ping
    assert run(cli, capsys, relay, "tunnels")[1].rstrip().endswith("served 2")
    report = TunnelReport(5, (("app-5xx", 1), ("local-app-refused", 2)), 12, 80)
    relay.store.renew_claim("live", "c1", time.time() + 60, report)
    assert (
        run(cli, capsys, relay, "tunnels")[1]
        .rstrip()
        .endswith("served 5  errors local-app-refused=2,app-5xx=1  latency p50 12 ms p95 80 ms")
    )


def test_a_pools_errors_are_summed_and_its_latency_is_its_slowest_members() -> None:
    now = time.time()
    store = MemoryStore()
    for n, (errors, p50, p95) in enumerate(
        [
            ((("app-5xx", 2),), 10, 40),
            ((("app-5xx", 1), ("tunnel-busy", 4)), 30, 90),
            ((), None, None),
        ]
    ):
        connection = f"c{n}"
        store.put_connection(ConnectionRecord(connection, "t1", now, now + 600, ("shop",)))
        member = PoolMember(connection, f"i{n}", now + n, now + 600)
        store.join_pool(Claim("shop", "", "t1", now + 600, pool=True, members=(member,)), now)
        store.renew_member("shop", connection, now + 600, TunnelReport(n, errors, p50, p95))
    (tunnel,) = admin.live_tunnels(store, now)
    assert tunnel.agents == 3
    assert tunnel.errors == (("tunnel-busy", 4), ("app-5xx", 3))
    assert (tunnel.latency_p50_ms, tunnel.latency_p95_ms) == (30, 90)


def test_a_tunnel_whose_lone_agent_is_stopping_is_no_longer_live() -> None:
    # Held for its restart (visitors wait), not served: the list says what visitors get.
    now = time.time()
    store = MemoryStore()
    store.put_connection(ConnectionRecord("c1", "t1", now, now + 600, ("app",)))
    store.claim_name(Claim("app", "c1", "t1", now + 600), now)
    assert [t.name for t in admin.live_tunnels(store, now)] == ["app"]
    assert store.leave_claim("app", "c1", now, now + 10)
    assert admin.live_tunnels(store, now + 1) == []


def test_revoke_cuts_the_tokens_open_connections_and_frees_their_names(
    cli: ModuleType, relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    _, out, _ = run(cli, capsys, relay, "token", "create", "--name", "laptop")
    revoked_id = hash_token(out.split()[1])[:12]
    _, out, _ = run(cli, capsys, relay, "token", "create", "--name", "other")
    other_id = hash_token(out.split()[1])[:12]
    for connection, token_id, name in (("c1", revoked_id, "mine"), ("c2", other_id, "theirs")):
        relay.store.put_connection(
            ConnectionRecord(connection, token_id, now - 60, now + 3600, (name,))
        )
        relay.store.claim_name(Claim(name, connection, token_id, now + 600), now)
    relay.store.put_connection(ConnectionRecord("c3", revoked_id, now, now + 3600))  # no hello yet

    code, out, _ = run(cli, capsys, relay, "token", "revoke", revoked_id)

    assert code == 0 and "2 open connection(s) cut" in out
    assert relay.store.get_connection("c1") is None and relay.store.get_connection("c3") is None
    assert relay.store.get_claim("mine") is None
    assert relay.store.get_connection("c2") is not None  # another token's: untouched
    assert relay.store.get_claim("theirs") is not None


def test_stack_mode_reads_the_table_from_the_stacks_outputs(
    cli: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_fake_credentials(monkeypatch, "eu-west-1")
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="eu-west-1")
        create_table(resource, "hatchway-RelayTable-1ABC")
        cloudformation = boto3.client("cloudformation", region_name="eu-west-1")
        cloudformation.create_stack(
            StackName="hatchway",
            TemplateBody=json.dumps(
                {
                    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {"TableName": {"Value": "hatchway-RelayTable-1ABC"}},
                }
            ),
        )
        code = cli.main(["--stack", "hatchway", "token", "create", "--name", "laptop"])
        assert code == 0, capsys.readouterr().err
        token = capsys.readouterr().out.split()[1]
        stored = DynamoStore(resource.Table("hatchway-RelayTable-1ABC")).get_token(
            hash_token(token)
        )
        assert stored is not None and stored.label == "laptop"

        assert cli.main(["--stack", "nothing-here", "token", "list"]) == 1
        assert "cannot read stack 'nothing-here'" in capsys.readouterr().err


def test_create_sets_the_tokens_limits(
    cli: ModuleType, relay: Relay, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        cli,
        capsys,
        relay,
        "token",
        "create",
        "--name",
        "ci",
        "--rate-limit",
        "50/s",
        "--max-tunnels",
        "3",
        "--max-requests-per-day",
        "100000",
    )
    assert code == 0
    record = relay.store.get_token(hash_token(out.split()[1]))
    assert record is not None
    assert (record.limits.rate, record.limits.max_tunnels, record.limits.requests_per_day) == (
        50,
        3,
        100000,
    )
    listing = run(cli, capsys, relay, "token", "list")[1]
    assert "limits rate=50/s tunnels=3 day=100000" in listing


@pytest.mark.parametrize(
    ("flags", "says"),
    [(["--rate-limit", "fast"], "rate"), (["--max-tunnels", "-1"], "negative")],
)
def test_bad_limits_are_refused(
    cli: ModuleType,
    relay: Relay,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    says: str,
) -> None:
    code, _, err = run(cli, capsys, relay, "token", "create", "--name", "x", *flags)
    assert code == 2 and says in err


def test_the_dashboard_command_takes_a_port_and_a_refresh(cli: ModuleType) -> None:
    args = cli.build_parser().parse_args(
        ["--local", "dashboard", "--port", "4051", "--refresh", "3"]
    )
    assert (args.command, args.port, args.refresh) == ("dashboard", 4051, 3.0)


# --- logs ------------------------------------------------------------------------------------


def test_local_logs_show_the_tunnels_visitors_from_the_gateways_access_log(
    cli: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from support.visitor import visit

    with run_local() as server:
        admin_file = tmp_path / "local-admin.json"
        server.admin.write_admin_file(admin_file)
        local = ["--local", "--admin-file", str(admin_file)]
        # No agent serves these names: the relay answers each itself, and each is logged.
        for name, path in (("myapp", "/a"), ("myapp", "/b"), ("other", "/c")):
            assert visit(server.port, "GET", path, f"{name}.localhost:{server.port}").status
        visit(server.port, "GET", "/t/myapp/d", f"127.0.0.1:{server.port}")

        assert cli.main([*local, "logs", "--tunnel", "myapp", "--json"]) == 0
        entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(e["host"], e["path"]) for e in entries] == [
            ("myapp.localhost", "/a"),
            ("myapp.localhost", "/b"),
            ("127.0.0.1", "/t/myapp/d"),
        ]
        assert {e["status"] for e in entries} == {"404"}

        assert cli.main([*local, "logs", "--tunnel", "myapp", "--limit", "1"]) == 0
        (shown,) = capsys.readouterr().out.splitlines()
        assert "GET 127.0.0.1/t/myapp/d  404" in shown

        assert cli.main([*local, "logs", "--tunnel", "nobody"]) == 0
        assert "no tunnel nobody's access-log lines" in capsys.readouterr().err


def put_lines(logs: object, group: str, lines: list[str], at: float) -> None:
    client: Any = logs
    client.create_log_group(logGroupName=group)
    client.create_log_stream(logGroupName=group, logStreamName="s")
    events = [{"timestamp": int(at * 1000) + i, "message": line} for i, line in enumerate(lines)]
    client.put_log_events(logGroupName=group, logStreamName="s", logEvents=events)


def test_stack_logs_read_the_stacks_log_groups_with_its_domain_and_hostnames(
    cli: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hatchway_local.access_log import AccessLog

    use_fake_credentials(monkeypatch, "eu-west-1")
    now = time.time()
    log = AccessLog()  # the template's formats, as API Gateway fills them in
    visitors = [
        log.visitor({"requestId": rid, "requestTimeEpoch": int(now * 1000), "domainName": host})
        for rid, host in (
            ("r1", "myapp.t.example.com"),
            ("r2", "api.mycompany.com"),
            ("r3", "other.t.example.com"),
        )
    ]
    agents = [
        log.agent(
            {
                "requestId": "a1",
                "requestTimeEpoch": int(now * 1000),
                "connectionId": "C1=",
                "routeKey": "$connect",
            }
        )
    ]
    with mock_aws():
        logs = boto3.client("logs", region_name="eu-west-1")
        put_lines(logs, "/aws/apigateway/hatchway/visitors", visitors, now)
        put_lines(logs, "/aws/apigateway/hatchway/agents", agents, now)
        boto3.client("cloudformation", region_name="eu-west-1").create_stack(
            StackName="hatchway",
            TemplateBody=json.dumps(
                {
                    "Parameters": {
                        "DomainName": {"Type": "String"},
                        "CustomHostnames": {"Type": "String"},
                    },
                    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {
                        "VisitorAccessLogGroup": {"Value": "/aws/apigateway/hatchway/visitors"},
                        "AgentAccessLogGroup": {"Value": "/aws/apigateway/hatchway/agents"},
                    },
                }
            ),
            Parameters=[
                {"ParameterKey": "DomainName", "ParameterValue": "t.example.com"},
                {"ParameterKey": "CustomHostnames", "ParameterValue": "api.mycompany.com=myapp"},
            ],
        )
        stack = ["--stack", "hatchway", "--region", "eu-west-1"]
        assert cli.main([*stack, "logs", "--tunnel", "myapp", "--json"]) == 0
        shown = [json.loads(line)["requestId"] for line in capsys.readouterr().out.splitlines()]
        assert shown == ["r1", "r2"]
        assert cli.main([*stack, "logs", "--agents", "--json"]) == 0
        assert [json.loads(x)["requestId"] for x in capsys.readouterr().out.splitlines()] == ["a1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "relay", "logs"], "logs needs --stack"),
        (["--local", "--admin-file", "/nonexistent/admin.json", "logs"], "start it first"),
        (["--table", "relay", "logs", "--since", "0"], "--since must be a positive"),
        (["--table", "relay", "logs", "--limit", "0"], "limit must be between"),
    ],
)
def test_logs_say_what_they_need(
    cli: ModuleType, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main(args) != 0
    assert message in capsys.readouterr().err
