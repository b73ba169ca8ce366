"""``StoreSource``: the dashboard's rows from any ``AdminStore`` (the memory store, DynamoDB under
moto, and a running ``hatchway-local`` through its admin API), and the operator's actions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import boto3
import pytest
from moto import mock_aws

from hatchway import protocol
from hatchway_local.admin_api import RemoteStore
from hatchway_local.dashboard.data import Refused, StoreSource, parse_limits
from hatchway_local.server import run_local
from hatchway_relay.adapters.dynamo_store import DynamoStore, create_table
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.admin import AdminStore
from hatchway_relay.ports import (
    Claim,
    ConnectionRecord,
    PoolMember,
    Store,
    TokenLimits,
    TunnelReport,
)
from support.aws_credentials import use_fake_credentials

RELAYS: dict[int, Store] = {}
"""The relay's own store behind each admin store (the same object but for ``RemoteStore``)."""


@pytest.fixture(params=["memory", "dynamodb", "local"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdminStore]:
    if request.param == "memory":
        memory = MemoryStore()
        RELAYS[id(memory)] = memory
        yield memory
    elif request.param == "dynamodb":
        use_fake_credentials(monkeypatch, "us-east-1")
        with mock_aws():
            resource = boto3.resource("dynamodb", region_name="us-east-1")
            create_table(resource, "relay")
            dynamo = DynamoStore(resource.Table("relay"))
            RELAYS[id(dynamo)] = dynamo
            yield dynamo
    else:
        with run_local() as server:
            remote = RemoteStore(server.admin.url, server.admin.key)
            RELAYS[id(remote)] = server.store
            yield remote


def serve(
    store: AdminStore,
    token_id: str,
    name: str,
    served: int,
    report: TunnelReport | None = None,
    **claim: object,
) -> str:
    """A live agent connection of ``token_id`` holding ``name``, as the relay writes them (its
    heartbeat reports ``served``, or all of ``report``)."""
    relay = RELAYS[id(store)]
    now = time.time()
    connection_id = f"conn-{name}"
    relay.put_connection(
        ConnectionRecord(connection_id, token_id, now - 60, now + 600, (name,), "198.51.100.7")
    )
    relay.claim_name(Claim(name, connection_id, token_id, now + 600, **claim), now)  # type: ignore[arg-type]
    relay.renew_claim(name, connection_id, now + 600, report or TunnelReport(served))
    return connection_id


def test_a_snapshot_joins_tokens_tunnels_and_reservations(store: AdminStore) -> None:
    source = StoreSource(store)
    shop = source.create_token("shop laptop", ("shop",), TokenLimits(rate=5, burst=10))
    idle = source.create_token("ci", (), TokenLimits())
    serve(
        store,
        shop.row.token_id,
        "shop",
        42,
        basic_auth="salted-hash",
        webhook_secret="sealed-secret",
        access=protocol.AccessRules(allow=("203.0.113.0/24",), rate=2.0),
    )
    snapshot = source.snapshot()

    (tunnel,) = snapshot.tunnels
    assert (tunnel.name, tunnel.token_label) == ("shop", "shop laptop")
    assert tunnel.token_id == shop.row.token_id
    assert (tunnel.source_ip, tunnel.served) == ("198.51.100.7", 42)
    assert tunnel.access == {"allow": ["203.0.113.0/24"], "deny": [], "rate": 2.0, "burst": 2}
    assert tunnel.guards == {"basic_auth": True, "webhook": "", "large_responses": "refuse"}
    tokens = {row.token_id: row for row in snapshot.tokens}
    assert tokens[shop.row.token_id].tunnels == ("shop",)
    assert tokens[shop.row.token_id].connections == 1
    assert tokens[shop.row.token_id].in_use_since is not None
    assert tokens[shop.row.token_id].limits == {
        "rate": 5.0,
        "burst": 10,
        "max_tunnels": 0,
        "requests_per_day": 0,
    }
    assert tokens[idle.row.token_id].in_use_since is None
    assert [(r.name, r.token_label, r.live) for r in snapshot.reservations] == [
        ("shop", "shop laptop", True)
    ]
    # No secret crosses to the page: not the token, its hash, the password hash or the secret.
    shown = json.dumps(snapshot.as_json())
    for secret in (shop.token, "salted-hash", "sealed-secret", store.list_tokens()[0].token_hash):
        assert secret not in shown


def test_a_tunnel_shows_its_errors_by_cause_and_recent_latency(store: AdminStore) -> None:
    source = StoreSource(store)
    token = source.create_token("laptop", (), TokenLimits())
    serve(store, token.row.token_id, "quiet", 0)
    report = TunnelReport(12, (("app-5xx", 1), ("local-app-refused", 3)), 8, 120)
    serve(store, token.row.token_id, "shop", 0, report)
    quiet, shop = source.snapshot().tunnels
    assert (quiet.errors, quiet.latency_p50_ms, quiet.latency_p95_ms) == ({}, None, None)
    assert shop.served == 12
    assert list(shop.errors.items()) == [("local-app-refused", 3), ("app-5xx", 1)]
    assert (shop.latency_p50_ms, shop.latency_p95_ms) == (8, 120)
    shown = source.snapshot().as_json()["tunnels"][1]
    assert shown["errors"] == {"local-app-refused": 3, "app-5xx": 1}


def test_each_pool_member_shows_its_own_report(store: AdminStore) -> None:
    source = StoreSource(store)
    token = source.create_token("fleet", (), TokenLimits())
    relay, now = RELAYS[id(store)], time.time()
    reports = [
        TunnelReport(7, (("app-5xx", 2),), 10, 40),
        TunnelReport(3, (("app-5xx", 1), ("tunnel-busy", 4)), 30, 90),
    ]
    for n, report in enumerate(reports):
        connection_id = f"m{n}"
        relay.put_connection(
            ConnectionRecord(connection_id, token.row.token_id, now, now + 600, ("shop",))
        )
        member = PoolMember(connection_id, f"i{n}", now + n, now + 600)
        pool = Claim("shop", "", token.row.token_id, now + 600, pool=True, members=(member,))
        assert relay.join_pool(replace(pool, pooled_since=now), now)
        assert relay.renew_member("shop", connection_id, now + 600, report)
    (tunnel,) = source.snapshot().tunnels
    assert [(m["served"], m["errors"], m["latency_p95_ms"]) for m in tunnel.members] == [
        (7, {"app-5xx": 2}, 40),
        (3, {"tunnel-busy": 4, "app-5xx": 1}, 90),
    ]
    assert tunnel.errors == {"tunnel-busy": 4, "app-5xx": 3}
    assert (tunnel.latency_p50_ms, tunnel.latency_p95_ms) == (30, 90)  # its slowest member


def test_a_token_shows_when_it_was_last_used(store: AdminStore) -> None:
    source = StoreSource(store)
    token = source.create_token("laptop", (), TokenLimits())
    assert token.row.last_used is None
    (row,) = source.snapshot().tokens
    assert row.last_used is None  # never connected
    relay = RELAYS[id(store)]
    (record,) = store.list_tokens()
    relay.note_token_use(record.token_hash, 1_700_000_000.0)
    (row,) = source.snapshot().tokens
    assert (row.last_used, row.in_use_since) == (1_700_000_000.0, None)
    serve(store, token.row.token_id, "shop", 0)
    snapshot = source.snapshot()
    (row,) = snapshot.tokens
    assert row.last_used == snapshot.taken_at  # in use now
    assert row.in_use_since is not None


def test_expired_claims_and_dead_connections_are_not_live(store: AdminStore) -> None:
    source = StoreSource(store)
    token = source.create_token("old", (), TokenLimits())
    serve(store, token.row.token_id, "gone", 1)
    later = StoreSource(store, clock=lambda: time.time() + 3600)
    assert later.snapshot().tunnels == ()
    assert later.snapshot().tokens[0].connections == 0


def test_revoking_cuts_the_tokens_tunnels_and_frees_its_names(store: AdminStore) -> None:
    source = StoreSource(store)
    token = source.create_token("doomed", ("mine",), TokenLimits())
    serve(store, token.row.token_id, "mine", 3)
    assert source.revoke_token(token.row.token_id) == ("conn-mine",)
    snapshot = source.snapshot()
    assert (snapshot.tokens, snapshot.tunnels, snapshot.reservations) == ((), (), ())
    with pytest.raises(Refused, match="no token") as refused:
        source.revoke_token(token.row.token_id)
    assert refused.value.status == 404


def test_reserve_and_release_and_their_refusals(store: AdminStore) -> None:
    source = StoreSource(store)
    one = source.create_token("one", (), TokenLimits())
    two = source.create_token("two", (), TokenLimits())
    source.reserve("payments", one.row.token_id)
    assert [(r.name, r.token_id) for r in source.snapshot().reservations] == [
        ("payments", one.row.token_id)
    ]
    with pytest.raises(Refused, match="reserved for another token") as taken:
        source.reserve("payments", two.row.token_id)
    assert taken.value.status == 409
    with pytest.raises(Refused, match="no token") as unknown:
        source.reserve("other", "0123456789ab")
    assert unknown.value.status == 404
    with pytest.raises(Refused, match="holds no reservation"):
        source.release("payments", two.row.token_id)
    source.release("payments", one.row.token_id)
    assert source.snapshot().reservations == ()


def test_a_new_token_needs_a_label_and_free_valid_names(store: AdminStore) -> None:
    source = StoreSource(store)
    with pytest.raises(Refused, match="label"):
        source.create_token("  ", (), TokenLimits())
    with pytest.raises(Refused, match="tunnel name"):
        source.create_token("bad", ("Not_A_Name",), TokenLimits())
    source.create_token("first", ("taken",), TokenLimits())
    with pytest.raises(Refused, match="reserved for another token"):
        source.create_token("second", ("taken",), TokenLimits())


def test_limits_from_the_form() -> None:
    assert parse_limits(None) == TokenLimits()
    form = {"rate": "2.5", "burst": 5, "max_tunnels": "", "requests_per_day": None}
    assert parse_limits(form) == TokenLimits(rate=2.5, burst=5)
    bad_forms = [{"rate": "fast"}, {"burst": -1}, {"rate": float("inf")}, {"max_tunnels": 1e12}]
    for bad in bad_forms:
        with pytest.raises(Refused):
            parse_limits(bad)


@dataclass(frozen=True)
class Member:
    """A pool member as the store lists it (the pool's fields, read by name)."""

    connection_id: str
    since: float
    expires_at: float
    served: int
    source_ip: str
    errors: tuple[tuple[str, int], ...] = ()
    latency_p50_ms: int | None = None
    latency_p95_ms: int | None = None

    def alive(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class PooledClaim(Claim):
    pool: bool = True
    members: tuple[Member, ...] = ()
    pooled_since: float = 0.0

    def alive(self, now: float) -> bool:
        return any(m.alive(now) for m in self.members)


def test_a_pool_is_one_tunnel_with_its_live_members() -> None:
    now = time.time()
    store = MemoryStore()
    for connection_id in ("a", "b", "gone"):
        store.put_connection(
            ConnectionRecord(
                connection_id, "t1", now - 60, now + (600 if connection_id != "gone" else -1)
            )
        )
    members = (
        Member("a", now - 60, now + 600, 10, "192.0.2.1"),
        Member("b", now - 30, now + 600, 5, "192.0.2.2"),
        Member("gone", now - 90, now + 600, 99, "192.0.2.3"),  # its connection died
        Member("c", now - 90, now - 1, 7, "192.0.2.4"),  # its lease ran out
    )
    pooled = PooledClaim("shop", "", "t1", now + 600, members=members, pooled_since=now - 90)
    store.list_claims = lambda: [pooled]  # type: ignore[method-assign]
    (tunnel,) = StoreSource(store).snapshot().tunnels
    assert (tunnel.served, tunnel.connected_at) == (15, now - 90)
    assert tunnel.source_ip == "192.0.2.1, 192.0.2.2"
    assert [m["served"] for m in tunnel.members] == [10, 5]
