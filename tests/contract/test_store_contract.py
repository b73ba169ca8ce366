"""One contract, every ``Store`` adapter: MemoryStore, and DynamoStore on moto (in process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from hatchway_relay.adapters.dynamo_store import DynamoStore, create_table
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.ports import Claim, ConnectionRecord, Store, StoredFrame, TokenRecord
from support.fake_clock import FakeClock

NOW = 1_700_000_000.0


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        create_table(resource, "hatchway-contract")
        create_table(resource, "hatchway-contract")  # idempotent
        yield DynamoStore(resource.Table("hatchway-contract"), clock)


def claim(
    name: str = "myapp", conn: str = "c1", token: str = "t1", expires: float = NOW + 60
) -> Claim:
    return Claim(name, conn, token, expires)


def frame(index: int, count: int = 3) -> StoredFrame:
    return StoredFrame(index, count, f'{{"part":{index}}}')


def test_tokens_round_trip(store: Store) -> None:
    record = TokenRecord("ab" * 32, "abababababab", "laptop", NOW, ("myapp",))
    store.put_token(record)
    assert store.get_token("ab" * 32) == record
    assert store.get_token("cd" * 32) is None


def test_connections_round_trip_hold_names_and_are_deleted(store: Store) -> None:
    record = ConnectionRecord("c1", "t1", NOW, NOW + 7200, (), "203.0.113.9")
    store.put_connection(record)
    assert store.get_connection("c1") == record
    store.set_connection_names("c1", ("a", "b"))
    assert store.get_connection("c1").names == ("a", "b")  # type: ignore[union-attr]
    store.delete_connection("c1")
    assert store.get_connection("c1") is None
    store.set_connection_names("c1", ("a",))  # on a gone connection: nothing, no error
    assert store.get_connection("c1") is None


@pytest.mark.parametrize(
    ("held", "wanted", "takeover_from", "wins"),
    [
        (None, claim(), None, True),  # free name
        (claim(conn="c1"), claim(conn="c2"), None, True),  # same token: reconnect takes it
        (claim(conn="c1"), claim(conn="c2", token="t2"), None, False),  # other token, alive
        (claim(expires=NOW - 1), claim(conn="c2", token="t2"), None, True),  # expired
        (claim(expires=NOW), claim(conn="c2", token="t2"), None, True),  # expires exactly now
        (claim(conn="c1"), claim(conn="c2", token="t2"), "c1", True),  # holder found dead
        (claim(conn="c1"), claim(conn="c2", token="t2"), "c9", False),  # someone else was dead
    ],
)
def test_claim_conditions(
    store: Store, held: Claim | None, wanted: Claim, takeover_from: str | None, wins: bool
) -> None:
    if held is not None:
        assert store.claim_name(held, NOW - 10)
    assert store.claim_name(wanted, NOW, takeover_from) is wins
    assert store.get_claim("myapp") == (wanted if wins else held)


def test_only_the_holder_renews_or_releases(store: Store) -> None:
    store.claim_name(claim(conn="c1"), NOW)
    assert store.renew_claim("myapp", "c2", NOW + 999) is False
    assert store.release_claim("myapp", "c2") is False
    assert store.renew_claim("myapp", "c1", NOW + 999) is True
    assert store.get_claim("myapp").expires_at == NOW + 999  # type: ignore[union-attr]
    assert store.release_claim("myapp", "c1") is True
    assert store.get_claim("myapp") is None
    assert store.release_claim("myapp", "c1") is False


def test_memory_store_two_tokens_racing_for_a_name_exactly_one_wins() -> None:
    """Atomicity is MemoryStore's own job (its lock). For DynamoStore it is DynamoDB's guarantee
    for a conditional PutItem, specified by the sequential condition cases above: moto's
    in-process backend evaluates conditions without a lock, so a threaded race there would test
    moto, not us."""
    store = MemoryStore(FakeClock(NOW))
    for round_ in range(10):
        name = f"race-{round_}"
        barrier = threading.Barrier(2)
        results: dict[str, bool] = {}

        def attempt(
            token: str,
            name: str = name,
            barrier: threading.Barrier = barrier,
            results: dict[str, bool] = results,
        ) -> None:
            barrier.wait()
            results[token] = store.claim_name(claim(name, f"conn-{token}", token), NOW)

        threads = [threading.Thread(target=attempt, args=(t,)) for t in ("t1", "t2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(results.values()) == [False, True]
        winner = next(t for t, won in results.items() if won)
        assert store.get_claim(name).token_id == winner  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("connection", "now", "repeat", "accepted"),
    [
        ("c1", NOW, False, True),  # the owner
        ("c2", NOW, False, False),  # a foreign connection
        ("c1", NOW + 31, False, False),  # after the pending request expired
        ("c1", NOW, True, False),  # the same part twice
    ],
)
def test_response_frames_only_from_the_owner_once(
    store: Store, connection: str, now: float, repeat: bool, accepted: bool
) -> None:
    store.put_pending("r1", "c1", NOW + 30)
    if repeat:
        assert store.add_response_frame("r1", "c1", frame(0), NOW)
    assert store.add_response_frame("r1", connection, frame(0), now) is accepted


def test_frames_for_an_unknown_request_are_refused(store: Store) -> None:
    assert store.add_response_frame("nope", "c1", frame(0), NOW) is False


def test_wait_returns_every_frame_in_order_once_complete(store: Store) -> None:
    store.put_pending("r1", "c1", NOW + 30)
    for index in (2, 0):
        assert store.add_response_frame("r1", "c1", frame(index), NOW)
    assert store.wait_response("r1", NOW) is None  # incomplete at the deadline
    assert store.add_response_frame("r1", "c1", frame(1), NOW)
    assert store.wait_response("r1", NOW + 1) == [frame(0), frame(1), frame(2)]


def test_wait_gives_up_at_the_deadline_in_fake_time(store: Store) -> None:
    store.put_pending("r1", "c1", NOW + 30)
    assert store.wait_response("r1", NOW + 5) is None
    assert store.wait_response("missing", NOW + 5) is None


def test_many_frames_span_query_pages(store: Store) -> None:
    store.put_pending("r1", "c1", NOW + 30)
    big = [StoredFrame(i, 40, "x" * 30_000) for i in range(40)]  # ~1.2 MB: several pages
    for f in big:
        assert store.add_response_frame("r1", "c1", f, NOW)
    assert store.wait_response("r1", NOW) == big
    store.delete_request("r1")
    assert store.wait_response("r1", NOW) is None
    assert store.add_response_frame("r1", "c1", frame(0), NOW) is False


def test_memory_store_wakes_the_waiter_the_moment_the_last_frame_lands() -> None:
    store = MemoryStore()  # real clock: the wake-up is the point
    store.put_pending("r1", "c1", 1e12)
    store.add_response_frame("r1", "c1", StoredFrame(0, 2, "a"), 0)
    result: list[object] = []
    deadline = time.time() + 5  # a waiter that is not woken fails the test after 5 s
    waiter = threading.Thread(target=lambda: result.append(store.wait_response("r1", deadline)))
    waiter.start()
    store.add_response_frame("r1", "c1", StoredFrame(1, 2, "b"), 0)
    waiter.join(6)
    assert result == [[StoredFrame(0, 2, "a"), StoredFrame(1, 2, "b")]]


def test_memory_store_wakes_the_waiter_when_its_connection_goes() -> None:
    store = MemoryStore()
    store.put_connection(ConnectionRecord("c1", "t1", 0, 1e12))
    store.put_pending("r1", "c1", 1e12)
    result: list[object] = []
    deadline = time.time() + 30  # far beyond the loop below: only a wake-up ends the wait
    waiter = threading.Thread(target=lambda: result.append(store.wait_response("r1", deadline)))
    waiter.start()
    # The waiter may not be waiting yet when we first delete: repeat (bounded) until it wakes.
    for _ in range(500):
        store.delete_connection("c1")
        waiter.join(0.01)
        if not waiter.is_alive():
            break
    assert not waiter.is_alive() and result == [None]
