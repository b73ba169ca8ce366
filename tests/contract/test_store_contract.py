"""The ``Store`` contract: one suite, every adapter (MemoryStore, and DynamoStore on moto).

Each contract test runs once per adapter through the ``store`` fixture (on a fake clock, so no
test waits in real time) or ``make_store`` (to pick the clock). What only one adapter promises
(MemoryStore's wake-ups, DynamoStore's polling, retries and table layout) is at the end.
"""

from __future__ import annotations

import base64
import itertools
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from hatchway import protocol
from hatchway_local.integrations import (
    AnswerWrites,
    DynamoDBWrites,
    IntegrationFailed,
    MemoryWrites,
    load_routes,
)
from hatchway_relay.adapters import dynamo_store
from hatchway_relay.adapters.dynamo_store import MAX_POLL_SECONDS, DynamoStore, create_table
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.adapters.sqlite_store import SqliteStore
from hatchway_relay.admin import AdminStore
from hatchway_relay.ports import (
    Claim,
    Clock,
    ConnectionRecord,
    PoolMember,
    ShareRecord,
    SocketRecord,
    SystemClock,
    TokenLimits,
    TokenRecord,
    TunnelReport,
)
from support.fake_clock import START as NOW
from support.fake_clock import FakeClock

TABLE = "hatchway-contract"

# ---------------------------------------------------------------------------------------------
# The adapters under test


StoreFactory = Callable[[Clock], AdminStore]


@dataclass
class MotoTable:
    """The table in moto, and every DynamoDB operation called on it, in order."""

    table: Any
    operations: list[str] = field(default_factory=list)

    @property
    def client(self) -> Any:
        return self.table.meta.client


def serialize_requests(client: Any) -> None:
    """Apply one request at a time, as DynamoDB does for each item.

    moto's in-process backend checks a condition and then writes the item as separate Python
    steps with no lock, so two threads can both pass one condition: a race test would measure
    moto, not the adapter. A lock around each whole request restores per-request atomicity and
    leaves every race *between* requests (read-then-write, say) as open as on AWS.
    """
    lock = threading.Lock()
    holding = threading.local()

    def acquire(**_: Any) -> None:
        lock.acquire()  # returns nothing on purpose: a value here would replace the response
        holding.lock = True

    def release(**_: Any) -> None:
        # A more specific before-call handler may have answered before ``acquire`` ran.
        if getattr(holding, "lock", False):
            holding.lock = False
            lock.release()

    client.meta.events.register("before-call.dynamodb", acquire)
    client.meta.events.register("after-call.dynamodb", release)
    client.meta.events.register("after-call-error.dynamodb", release)


@pytest.fixture
def moto_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoTable]:
    # Dummy credentials: moto accepts anything, and nothing can reach a real account.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        create_table(resource, TABLE)
        moto = MotoTable(resource.Table(TABLE))
        serialize_requests(moto.client)
        moto.client.meta.events.register(
            "before-call.dynamodb", lambda model, **_: moto.operations.append(model.name)
        )
        yield moto


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Builds the adapter under test on the clock a test chooses."""
    if request.param == "memory":
        return MemoryStore
    if request.param == "sqlite":
        files = itertools.count()
        return lambda clock: SqliteStore(tmp_path / f"state-{next(files)}.db", clock)
    moto: MotoTable = request.getfixturevalue("moto_table")
    return lambda clock: DynamoStore(moto.table, clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def store(make_store: StoreFactory, clock: FakeClock) -> AdminStore:
    return make_store(clock)


# ---------------------------------------------------------------------------------------------
# Helpers


def claim(
    name: str = "myapp", conn: str = "c1", token: str = "t1", expires: float = NOW + 60
) -> Claim:
    return Claim(name, conn, token, expires)


def race(*attempts: Callable[[], bool]) -> list[bool]:
    """Start every attempt at the same instant, each in its own thread; their results."""
    barrier = threading.Barrier(len(attempts))
    results: list[bool | None] = [None] * len(attempts)

    def run(slot: int, attempt: Callable[[], bool]) -> None:
        barrier.wait()
        results[slot] = attempt()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert None not in results, "an attempt failed or hung"
    return [bool(r) for r in results]


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 10 µs instead of every 5 ms, so racing calls really interleave."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


class SignallingClock(SystemClock):
    """The real clock, which also tells a test that the waiter found the response incomplete
    and started waiting, and how each condition wait ended (True: woken, False: timed out)."""

    def __init__(self) -> None:
        self.waiting = threading.Event()
        self.wakeups: list[bool] = []

    def sleep(self, seconds: float) -> None:
        self.waiting.set()
        super().sleep(seconds)

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        self.waiting.set()
        self.wakeups.append(condition.wait(seconds))


# ---------------------------------------------------------------------------------------------
# Tokens


def test_tokens_round_trip_and_can_be_listed_and_deleted(store: AdminStore) -> None:
    laptop = TokenRecord("ab" * 32, "abababababab", "laptop", NOW + 0.123456789, ("myapp",))
    ci = TokenRecord("cd" * 32, "cdcdcdcdcdcd")
    store.put_token(laptop)
    store.put_token(ci)
    assert store.get_token("ab" * 32) == laptop
    assert store.get_token("ef" * 32) is None
    assert sorted(store.list_tokens(), key=lambda t: t.token_id) == [laptop, ci]
    store.delete_token("ab" * 32)
    assert store.get_token("ab" * 32) is None
    assert store.list_tokens() == [ci]


# ---------------------------------------------------------------------------------------------
# Connections


def test_connections_round_trip_hold_names_and_are_deleted(store: AdminStore) -> None:
    record = ConnectionRecord("c1", "t1", NOW + 0.25, NOW + 7200.123456, (), "203.0.113.9")
    store.put_connection(record)
    assert store.get_connection("c1") == record
    assert store.get_connection("c2") is None
    store.set_connection_names("c1", ("a", "b"))
    assert store.get_connection("c1") == ConnectionRecord(
        "c1", "t1", NOW + 0.25, NOW + 7200.123456, ("a", "b"), "203.0.113.9"
    )
    store.delete_connection("c1")
    assert store.get_connection("c1") is None
    store.set_connection_names("c1", ("a",))  # on a gone connection: no error, no resurrection
    assert store.get_connection("c1") is None
    store.delete_connection("c1")  # twice: no error


# ---------------------------------------------------------------------------------------------
# Tunnel claims


@pytest.mark.parametrize(
    ("held", "wanted", "takeover_from", "wins"),
    [
        pytest.param(None, claim(), None, True, id="free name"),
        pytest.param(claim(conn="c1"), claim(conn="c2"), None, True, id="same token reconnects"),
        pytest.param(
            replace(claim(conn="c1"), instance="a1"),
            replace(claim(conn="c2"), instance="a1"),
            None,
            True,
            id="same agent process reconnects",
        ),
        pytest.param(
            replace(claim(conn="c1"), instance="a1"),
            replace(claim(conn="c2"), instance="a2"),
            None,
            False,
            id="another process of the same token, holder alive",
        ),
        pytest.param(
            replace(claim(conn="c1"), instance="a1"),
            replace(claim(conn="c2"), instance="a2"),
            "c1",
            True,
            id="another process of the same token, holder found dead",
        ),
        pytest.param(
            claim(conn="c1"), claim(conn="c2", token="t2"), None, False, id="other token, alive"
        ),
        pytest.param(
            claim(expires=NOW - 1), claim(conn="c2", token="t2"), None, True, id="expired"
        ),
        pytest.param(
            claim(expires=NOW), claim(conn="c2", token="t2"), None, True, id="expires right now"
        ),
        pytest.param(
            claim(conn="c1"), claim(conn="c2", token="t2"), "c1", True, id="holder found dead"
        ),
        pytest.param(
            claim(conn="c1"), claim(conn="c2", token="t2"), "c9", False, id="another one dead"
        ),
    ],
)
def test_claim_conditions(
    store: AdminStore, held: Claim | None, wanted: Claim, takeover_from: str | None, wins: bool
) -> None:
    if held is not None:
        assert store.claim_name(held, NOW - 10)
    assert store.claim_name(wanted, NOW, takeover_from) is wins
    assert store.get_claim("myapp") == (wanted if wins else held)


def test_only_the_holder_renews_or_releases(store: AdminStore) -> None:
    assert store.renew_claim("myapp", "c1", NOW + 999) is False  # nothing to renew
    assert store.claim_name(claim(conn="c1"), NOW)
    assert store.renew_claim("myapp", "c2", NOW + 999) is False
    assert store.release_claim("myapp", "c2") is False
    assert store.get_claim("myapp") == claim(conn="c1")
    assert store.renew_claim("myapp", "c1", NOW + 999.5) is True
    assert store.get_claim("myapp") == claim(conn="c1", expires=NOW + 999.5)
    assert store.release_claim("myapp", "c1") is True
    assert store.get_claim("myapp") is None
    assert store.release_claim("myapp", "c1") is False


@pytest.mark.usefixtures("frequent_thread_switches")
def test_two_tokens_racing_for_a_name_exactly_one_wins(store: AdminStore) -> None:
    for round_ in range(20):
        name = f"race-{round_}"
        results = race(
            partial(store.claim_name, claim(name, "conn-a", "ta"), NOW),
            partial(store.claim_name, claim(name, "conn-b", "tb"), NOW),
        )
        assert sorted(results) == [False, True]
        winner = claim(name, "conn-a", "ta") if results[0] else claim(name, "conn-b", "tb")
        assert store.get_claim(name) == winner


def test_refusals_add_up_on_the_claim_and_never_make_one(store: AdminStore) -> None:
    store.count_refusals("ghost", {"rate-limited": 1})
    assert store.get_claim("ghost") is None
    assert store.claim_name(claim(), NOW)
    store.count_refusals("myapp", {"rate-limited": 2, "address-refused": 1})
    store.count_refusals("myapp", {"rate-limited": 3})
    held = store.get_claim("myapp")
    assert held is not None and dict(held.refused) == {"rate-limited": 5, "address-refused": 1}
    assert store.renew_claim("myapp", "c1", NOW + 90, TunnelReport(1))  # a ping keeps them
    held = store.get_claim("myapp")
    assert held is not None and dict(held.refused) == {"rate-limited": 5, "address-refused": 1}
    assert store.release_claim("myapp", "c1")
    assert store.claim_name(claim(conn="c2"), NOW)
    held = store.get_claim("myapp")
    assert held is not None and held.refused == ()  # a new holder starts afresh


# ---------------------------------------------------------------------------------------------
# Responses: one message per visitor request, stored once by API Gateway's answer integration
# (template.yaml's own mapping template, rendered and applied as API Gateway applies it)

ROUTES = load_routes(TABLE)
_WRITES: dict[int, AnswerWrites] = {}


def writes_for(store: AdminStore) -> AnswerWrites:
    """What the answer integration writes to ``store`` with: on DynamoDB a client of its own
    (API Gateway's calls are not the relay's), applying one request at a time as DynamoDB does."""
    if isinstance(store, MemoryStore):
        return MemoryWrites(store, TABLE)
    if id(store) not in _WRITES:
        client = boto3.client("dynamodb", region_name="us-east-1")
        serialize_requests(client)
        _WRITES[id(store)] = DynamoDBWrites(client, TABLE)
    return _WRITES[id(store)]


def answer(
    store: AdminStore,
    request_id: str,
    stored: bytes,
    connection_id: str = "c1",
    kind: str = "response",
) -> None:
    """An agent message on connection ``connection_id``, stored as the deployed API stores it."""
    fields = {"stored": base64.b64encode(stored).decode()} if kind == "response" else {}
    text = json.dumps({"type": kind, "id": request_id, **fields})
    route = ROUTES.select(text)
    assert route is not None, "answers and marks have a route of their own"
    context = {"connectionId": connection_id, "requestTimeEpoch": int(NOW * 1000)}
    route.apply(text, context, writes_for(store))


def stored_by(store: AdminStore, request_id: str, stored: bytes) -> bool:
    """``answer``, for ``race``: True once the write went through."""
    answer(store, request_id, stored)
    return True


def test_the_first_answer_stays_and_a_repeat_or_another_changes_nothing(
    store: AdminStore,
) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    answer(store, "r1", b'{"answer":1}')
    answer(store, "r1", b'{"answer":1}')  # delivered twice
    answer(store, "r1", b'{"answer":2}')
    assert store.wait_response("r1", NOW) == b'{"answer":1}'


def test_an_answer_from_another_connection_is_never_read(store: AdminStore) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    answer(store, "r1", b"forged", connection_id="c2")
    assert store.wait_response("r1", NOW + 1) is None
    answer(store, "r1", b"genuine")
    assert store.wait_response("r1", NOW + 1) == b"genuine"


def test_many_copies_of_one_answer_written_at_once_all_succeed_and_store_one(
    store: AdminStore, frequent_thread_switches: None
) -> None:
    # API Gateway may deliver a message twice and retries calls that landed: copies race.
    # Single-item writes that keep the first answer never conflict.
    for round_ in range(10):
        request = f"r{round_}"
        store.expect_response(request, "c1", NOW + 30)
        same = partial(stored_by, store, request, f'{{"copy":{round_}}}'.encode())
        assert race(*[same] * 8) == [True] * 8
        assert store.wait_response(request, NOW) == f'{{"copy":{round_}}}'.encode()


def test_of_different_answers_racing_exactly_one_is_stored(
    store: AdminStore, frequent_thread_switches: None
) -> None:
    for round_ in range(10):
        request = f"r{round_}"
        store.expect_response(request, "c1", NOW + 30)
        texts = [f'{{"n":{n}}}'.encode() for n in range(6)]
        assert race(*[partial(stored_by, store, request, text) for text in texts]) == [True] * 6
        assert store.wait_response(request, NOW) in texts


def test_a_large_response_comes_back_whole(store: AdminStore) -> None:
    stored = bytes(range(256)) * (protocol.MAX_STORED_ANSWER_BYTES // 256)
    store.expect_response("r1", "c1", NOW + 30)
    answer(store, "r1", stored)
    assert store.wait_response("r1", NOW) == stored


def test_wait_gives_up_exactly_at_the_deadline(store: AdminStore, clock: FakeClock) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    assert store.wait_response("r1", NOW + 5) is None
    assert clock.now() == NOW + 5


def test_a_streamed_bodys_chunks_are_read_in_any_order_they_landed(store: AdminStore) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    store.put_chunk("r1", "c1", 1, b"second")
    store.put_chunk("r1", "c1", 0, b"first")
    assert [store.wait_chunk("r1", seq, NOW) for seq in (0, 1)] == [b"first", b"second"]


def test_a_chunk_from_another_connection_is_never_read_and_the_first_copy_stays(
    store: AdminStore,
) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    store.put_chunk("r1", "c2", 0, b"forged")
    assert store.wait_chunk("r1", 0, NOW + 1) is None
    store.put_chunk("r1", "c1", 0, b"genuine")
    store.put_chunk("r1", "c1", 0, b"a second delivery, changed")
    assert store.wait_chunk("r1", 0, NOW + 1) == b"genuine"


def test_a_chunk_nobody_waits_for_is_not_read(store: AdminStore) -> None:
    store.put_chunk("r1", "c1", 0, b"unasked")
    assert store.wait_chunk("r1", 0, NOW + 1) is None


def test_a_wait_for_a_chunk_gives_up_at_its_time(store: AdminStore, clock: FakeClock) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    assert store.wait_chunk("r1", 0, NOW + 5) is None
    assert clock.now() == NOW + 5


def test_wait_returns_once_another_thread_stores_the_answer(make_store: StoreFactory) -> None:
    store = make_store(SystemClock())
    started = time.time()
    store.expect_response("r1", "c1", started + 30)

    def agent() -> None:
        time.sleep(0.05)  # the waiter is already waiting (or polling) by then
        answer(store, "r1", b"answer")

    writer = threading.Thread(target=agent)
    writer.start()
    assert store.wait_response("r1", started + 10) == b"answer"
    writer.join(10)
    assert time.time() - started < 5


def test_working_marks_are_kept_per_request_and_never_read_as_an_answer(
    store: AdminStore,
) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    store.expect_response("r2", "c1", NOW + 30)
    assert not store.is_working("r1")
    answer(store, "r1", b"", kind="working")
    answer(store, "r1", b"", kind="working")  # twice: harmless
    answer(store, "r2", b"", kind="working", connection_id="c2")  # not the request's agent
    assert store.is_working("r1") and not store.is_working("r2")
    assert store.wait_response("r1", NOW + 1) is None
    answer(store, "r1", b"answer")  # a mark and then the answer, in one item
    assert store.wait_response("r1", NOW + 1) == b"answer" and store.is_working("r1")


def test_a_mark_after_the_answer_keeps_the_answer(store: AdminStore) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    answer(store, "r1", b"answer")
    answer(store, "r1", b"", kind="working")  # a late or repeated mark
    assert store.wait_response("r1", NOW) == b"answer"


@pytest.mark.parametrize(
    "message",
    [
        pytest.param({"type": "response", "id": "r1", "stored": "not base64!"}, id="not base64"),
        pytest.param({"type": "response", "id": "r1"}, id="no stored form"),
        pytest.param({"type": "response", "id": "r1", "stored": 'x", "a": {"S": "y'}, id="quote"),
        pytest.param({"type": "response", "id": "r1'", "stored": "eA=="}, id="quote in the id"),
    ],
)
def test_a_write_dynamodb_would_refuse_fails_and_stores_nothing(
    store: AdminStore, message: dict[str, Any]
) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    text = json.dumps(message)
    route = ROUTES.select(text)
    assert route is not None
    context = {"connectionId": "c1", "requestTimeEpoch": int(NOW * 1000)}
    with pytest.raises(IntegrationFailed):
        route.apply(text, context, writes_for(store))
    assert store.wait_response("r1", NOW + 1) is None


def share(share_id: str = "s1", token: str = "t1", max_uses: int = 0) -> ShareRecord:
    return ShareRecord(
        share_id, token, "myapp", "ab" * 32, ("GET", "HEAD"), "/reports/", NOW + 60, max_uses
    )


def test_share_links_round_trip_and_are_listed_by_their_token(store: AdminStore) -> None:
    store.put_share(share("s1"))
    store.put_share(share("s2", token="t2"))
    assert store.get_share("s1") == share("s1")
    assert store.get_share("nope") is None
    assert [r.share_id for r in store.list_shares("t1")] == ["s1"]


def test_a_share_link_is_used_at_most_max_uses_times_even_at_once(
    store: AdminStore, frequent_thread_switches: None
) -> None:
    store.put_share(share(max_uses=3))
    assert race(*[partial(store.use_share, "s1", NOW)] * 8).count(True) == 3
    assert store.get_share("s1").uses == 3  # type: ignore[union-attr]
    store.put_share(share("s2"))  # no limit
    assert all(store.use_share("s2", NOW) for _ in range(5))


@pytest.mark.parametrize(
    ("change", "now"),
    [
        pytest.param({"revoked": True}, NOW, id="revoked"),
        pytest.param({}, NOW + 60, id="expired"),
        pytest.param({"max_uses": 1, "uses": 1}, NOW, id="used up"),
    ],
)
def test_an_unusable_share_link_is_not_used(
    store: AdminStore, change: dict[str, Any], now: float
) -> None:
    store.put_share(replace(share(), **change))
    assert not store.use_share("s1", now)
    assert not store.use_share("missing", NOW)


def test_only_its_token_revokes_a_share_link(store: AdminStore) -> None:
    store.put_share(share())
    assert not store.revoke_share("s1", "t2")
    assert not store.get_share("s1").revoked  # type: ignore[union-attr]
    assert store.revoke_share("s1", "t1")
    assert store.get_share("s1").revoked  # type: ignore[union-attr]


def test_a_sighting_is_first_once_until_it_expires(store: AdminStore, clock: FakeClock) -> None:
    assert store.first_sighting("sig-a", NOW + 600)
    assert not store.first_sighting("sig-a", NOW + 600)
    assert store.first_sighting("sig-b", NOW + 600)
    clock.advance(700 + dynamo_store.TTL_MARGIN_SECONDS)
    assert store.first_sighting("sig-a", clock.now() + 600)  # long expired: may come again


def test_forget_response_is_safe_twice(store: AdminStore) -> None:
    store.expect_response("r1", "c1", NOW + 30)
    store.forget_response("r1")
    store.forget_response("r1")


def test_the_relay_key_is_random_long_and_stable(make_store: StoreFactory) -> None:
    store = make_store(FakeClock(NOW))
    key = store.relay_key()
    assert len(key) >= 32 and store.relay_key() == key


# ---------------------------------------------------------------------------------------------
# MemoryStore only: a waiter is woken, never polls; nothing is kept that nobody waits for


def test_memory_store_wakes_the_waiter_the_moment_the_answer_lands() -> None:
    clock = SignallingClock()
    store = MemoryStore(clock)
    store.expect_response("r1", "c1", time.time() + 30)

    def agent() -> None:
        if clock.waiting.wait(10):
            answer(store, "r1", b"answer")

    writer = threading.Thread(target=agent)
    writer.start()
    assert store.wait_response("r1", time.time() + 10) == b"answer"
    writer.join(10)
    assert clock.wakeups == [True]  # woken by the answer, not by the timeout


def test_memory_store_wakes_the_waiter_when_its_connection_goes() -> None:
    clock = SignallingClock()
    store = MemoryStore(clock)
    store.put_connection(ConnectionRecord("c1", "t1", 0, time.time() + 60))
    store.expect_response("r1", "c1", time.time() + 30)

    def disconnect() -> None:
        if clock.waiting.wait(10):
            store.delete_connection("c1")

    disconnecting = threading.Thread(target=disconnect)
    disconnecting.start()
    assert store.wait_response("r1", time.time() + 10) is None
    disconnecting.join(10)
    assert clock.wakeups == [True]  # told at once, so the caller can answer 502 now


@pytest.mark.parametrize(
    ("expected", "now", "kept"),
    [
        pytest.param(False, NOW, False, id="nobody waits for it"),
        pytest.param(True, NOW + 31, False, id="the waiter's time is up"),
        pytest.param(True, NOW + 29, True, id="in time"),
    ],
)
def test_memory_store_keeps_only_answers_someone_waits_for(
    expected: bool, now: float, kept: bool
) -> None:
    clock = FakeClock(now)
    store = MemoryStore(clock)
    if expected:
        store.expect_response("r1", "c1", NOW + 30)
    answer(store, "r1", b"answer")
    assert (store.wait_response("r1", now) == b"answer") is kept
    store.forget_response("r1")
    answer(store, "r1", b"answer")
    assert store.wait_response("r1", now) is None  # forgotten: nothing kept


# ---------------------------------------------------------------------------------------------
# DynamoStore only: polling, the table


def test_dynamo_polls_one_item_after_the_hint_then_backs_off_never_past_the_deadline(
    moto_table: MotoTable, clock: FakeClock
) -> None:
    store = DynamoStore(moto_table.table, clock)
    store.expect_response("r1", "c1", NOW + 30)
    polled_at: list[float] = []
    moto_table.client.meta.events.register(
        "provide-client-params.dynamodb.GetItem", lambda **_: polled_at.append(clock.now())
    )
    moto_table.operations.clear()
    assert store.wait_response("r1", NOW + 1, hint=0.05) is None
    assert set(moto_table.operations) == {"GetItem"}  # one small item, never a query
    *backoff, last = clock.sleeps
    # After a miss at the hint the answer is close: the backoff starts from 10 ms.
    assert backoff[:6] == pytest.approx([0.05, 0.01, 0.015, 0.0225, 0.03375, 0.050625])
    assert backoff[9:] == [0.2] * len(backoff[9:])
    assert 0 <= last <= 0.2
    assert polled_at[0] == NOW + 0.05  # no look before the hint: each miss is billed
    assert polled_at[-1] == NOW + 1  # the last look is at the deadline
    assert len(polled_at) == len(clock.sleeps)  # one look after every sleep


def test_dynamo_first_looks_after_10_ms_without_a_hint(
    moto_table: MotoTable, clock: FakeClock
) -> None:
    store = DynamoStore(moto_table.table, clock)
    store.expect_response("r1", "c1", NOW + 30)
    assert store.wait_response("r1", NOW + 0.05) is None
    assert clock.sleeps[:2] == pytest.approx([0.01, 0.015])


def test_dynamo_keeps_its_backoff_across_the_waiters_liveness_windows(
    moto_table: MotoTable, clock: FakeClock
) -> None:
    # The relay looks at the agent's connection every half second and waits again: five
    # seconds of waiting cost about as many looks as one long wait, not ten fresh backoffs.
    store = DynamoStore(moto_table.table, clock)
    store.expect_response("r1", "c1", NOW + 30)
    for window in range(10):
        assert store.wait_response("r1", NOW + 0.5 * (window + 1)) is None
    looks = moto_table.operations.count("GetItem")
    # At most one look per 200 ms once the ramp (nine looks) is done, plus one at each
    # window's end; starting over in every window would take about nine per window (90).
    assert looks <= 9 + 5 / MAX_POLL_SECONDS + 10
    assert clock.sleeps.count(0.01) == 1  # the ramp ran once


def test_dynamo_reads_answers_and_marks_from_one_item_and_never_deletes(
    moto_table: MotoTable,
) -> None:
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    store.expect_response("r1", "c1", NOW + 30)
    answer(store, "r1", b"", kind="working")
    answer(store, "r1", b"answer")
    moto_table.operations.clear()
    assert store.is_working("r1") and store.wait_response("r1", NOW + 1) == b"answer"
    store.forget_response("r1")
    assert moto_table.operations == ["GetItem", "GetItem"]  # no delete: TTL removes it free


def consistent_reads(moto_table: MotoTable) -> list[bool]:
    """Whether each GetItem from now on asks for a strongly consistent read, in order."""
    reads: list[bool] = []
    moto_table.client.meta.events.register(
        "provide-client-params.dynamodb.GetItem",
        lambda params, **_: reads.append(bool(params.get("ConsistentRead"))),
    )
    return reads


def test_dynamo_polls_for_an_answer_at_half_price_and_decides_on_a_consistent_read(
    moto_table: MotoTable,
) -> None:
    reads = consistent_reads(moto_table)
    clock = FakeClock(NOW)
    store = DynamoStore(moto_table.table, clock)
    store.expect_response("r1", "c1", NOW + 30)
    assert store.wait_response("r1", NOW + 1) is None
    # Looks that only miss are eventually consistent; the one after which the waiter may give
    # up is strongly consistent, so a stored answer is never taken for a missing one.
    assert reads[-1] is True and not any(reads[:-1]) and len(reads) > 3
    answer(store, "r1", b"answer")
    reads.clear()
    assert store.wait_response("r1", NOW + 2) == b"answer"
    assert reads == [False]


def test_dynamo_never_scans_or_transacts_on_a_request_path(moto_table: MotoTable) -> None:
    clock = FakeClock(NOW)
    store = DynamoStore(moto_table.table, clock)
    store.relay_key()
    store.put_token(TokenRecord("ab" * 32, "t1"))
    store.get_token("ab" * 32)
    store.put_connection(ConnectionRecord("c1", "t1", NOW, NOW + 7200))
    store.get_connection("c1")
    store.claim_name(claim(), NOW)
    store.set_connection_names("c1", ("myapp",))
    store.get_claim("myapp")
    store.renew_claim("myapp", "c1", NOW + 120, TunnelReport(4))
    store.expect_response("r1", "c1", NOW + 30)
    answer(store, "r1", b"answer")
    answer(store, "r1", b"answer")
    store.is_working("r1")
    store.wait_response("r1", NOW + 1)
    store.forget_response("r1")
    store.leave_claim("myapp", "c1", NOW, NOW + 10)
    store.release_claim("myapp", "c1")
    store.delete_connection("c1")
    assert not {"Scan", "Query", "TransactWriteItems", "BatchWriteItem"} & set(
        moto_table.operations
    )
    store.list_tokens()  # a listing queries the index: nothing ever scans
    assert moto_table.operations[-1] == "Query"


def test_dynamo_items_follow_the_single_table_layout(moto_table: MotoTable) -> None:
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    store.put_token(TokenRecord("ab" * 32, "t1"))
    store.put_connection(ConnectionRecord("c1", "t1", NOW, NOW + 7200))
    store.claim_name(claim(), NOW)
    store.expect_response("r1", "c1", NOW + 30)
    answer(store, "r1", b"answer")
    store.relay_key()
    items = {(i["pk"], i["sk"]): i for i in moto_table.table.scan()["Items"]}
    assert set(items) == {
        ("token#" + "ab" * 32, "token"),
        ("conn#c1", "conn"),
        ("name#myapp", "claim"),
        ("req#r1", "answer#c1"),
        ("relay", "key"),
    }
    assert "ttl" not in items["token#" + "ab" * 32, "token"]  # tokens live until revoked
    # Only long-lived items are in the listings index (it is sparse): no answer, no key.
    assert {key: item["listing"] for key, item in items.items() if "listing" in item} == {
        ("token#" + "ab" * 32, "token"): "tokens",
        ("conn#c1", "conn"): "connections",
        ("name#myapp", "claim"): "claims",
    }
    assert "ttl" not in items["relay", "key"]
    for key in [("conn#c1", "conn"), ("name#myapp", "claim")]:
        assert items[key]["ttl"] > items[key]["expires_at"]  # collected only after expiry
    assert items["req#r1", "answer#c1"]["ttl"] > NOW + 30


def test_create_table_takes_a_client_is_idempotent_and_enables_ttl(
    moto_table: MotoTable,
) -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    create_table(client, "another")
    create_table(client, "another")
    table = client.describe_table(TableName="another")["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {
        "pk": "HASH",
        "sk": "RANGE",
    }
    for name in ("another", TABLE):
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "ttl")
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == dynamo_store.LISTING_INDEX
    assert {k["AttributeName"]: k["KeyType"] for k in index["KeySchema"]} == {
        "listing": "HASH",
        "pk": "RANGE",
    }
    assert index["Projection"] == {"ProjectionType": "ALL"}


def test_create_table_refuses_a_table_without_the_listings_index(moto_table: MotoTable) -> None:
    client = moto_table.client
    client.create_table(
        TableName="older",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
    )
    with pytest.raises(RuntimeError, match="'Listings' index"):
        create_table(client, "older")


VISITOR_ANSWERS = 300
"""Answer items a test leaves in the table, as visitor traffic does until TTL (one a request)."""


def test_dynamo_listings_read_only_what_they_list_however_much_traffic_left_behind(
    moto_table: MotoTable,
) -> None:
    examined: list[int] = []

    def count(model: Any, parsed: dict[str, Any], **_: Any) -> None:
        # Items DynamoDB read to answer (ScannedCount: before any filter), what it bills by.
        if model.name in ("Scan", "Query"):
            examined.append(int(parsed.get("ScannedCount", 0)))

    moto_table.client.meta.events.register("after-call.dynamodb", count)
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    store.put_token(TokenRecord("ab" * 32, "t1"))
    store.put_connection(ConnectionRecord("c1", "t1", NOW, NOW + 7200))
    store.claim_name(claim(), NOW)
    store.put_share(share("s1"))
    store.reserve_name("reserved", "t1")
    store.first_sighting("a-delivery", NOW + 60)
    listings: dict[str, Callable[[], list[Any]]] = {
        "tokens": store.list_tokens,
        "connections": store.list_connections,
        "claims": store.list_claims,
        "shares": partial(store.list_shares, "t1"),
    }

    def items_examined() -> dict[str, int]:
        found = {}
        for name, listing in listings.items():
            examined.clear()
            assert len(listing()) == 1, name
            found[name] = sum(examined)
        return found

    assert items_examined() == dict.fromkeys(listings, 1)
    # What visitor traffic leaves behind (answers and working marks, kept until TTL), and
    # another token's share links.
    with moto_table.table.batch_writer() as batch:
        for i in range(VISITOR_ANSWERS):
            batch.put_item(
                Item={"pk": f"req#r{i}", "sk": "answer#c1", "a": b"x" * 64, "ttl": int(NOW)}
            )
            batch.put_item(Item={"pk": f"req#r{i}", "sk": "work", "ttl": int(NOW)})
    for i in range(20):
        store.put_share(share(f"other{i}", token="t2"))
    moto_table.operations.clear()
    assert items_examined() == dict.fromkeys(listings, 1)
    assert "Scan" not in moto_table.operations


def test_create_table_refuses_a_table_that_expires_items_by_another_attribute(
    moto_table: MotoTable,
) -> None:
    client = moto_table.client
    create_table(client, "theirs")
    client.update_time_to_live(
        TableName="theirs", TimeToLiveSpecification={"Enabled": False, "AttributeName": "ttl"}
    )
    client.update_time_to_live(
        TableName="theirs", TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiry"}
    )
    with pytest.raises(RuntimeError, match="'expiry'"):
        create_table(client, "theirs")


# ---------------------------------------------------------------------------------------------
# Reserved names


def test_reservations_belong_to_one_token(store: AdminStore) -> None:
    assert store.get_reservation("myapp") is None
    assert store.reserve_name("myapp", "t1") is True
    assert store.reserve_name("myapp", "t1") is True  # again by the same token: no change
    assert store.reserve_name("myapp", "t2") is False
    assert store.get_reservation("myapp") == "t1"
    assert store.release_reservation("myapp", "t2") is False
    assert store.release_reservation("myapp", "t1") is True
    assert store.get_reservation("myapp") is None
    assert store.reserve_name("myapp", "t2") is True


def test_a_reservation_and_a_claim_of_one_name_coexist(store: AdminStore) -> None:
    assert store.reserve_name("myapp", "t1")
    assert store.claim_name(claim(token="t1"), NOW)
    assert store.get_reservation("myapp") == "t1"
    assert store.release_claim("myapp", "c1")
    assert store.get_reservation("myapp") == "t1"


def test_claims_can_be_listed_for_the_operator(store: AdminStore) -> None:
    assert store.list_claims() == []
    store.claim_name(claim("a"), NOW)
    store.claim_name(claim("b", conn="c2", token="t2"), NOW)
    assert sorted(store.list_claims(), key=lambda c: c.name) == [
        claim("a"),
        claim("b", conn="c2", token="t2"),
    ]


def test_connections_can_be_listed_for_the_operator(store: AdminStore) -> None:
    assert store.list_connections() == []
    first = ConnectionRecord("c1", "t1", NOW, NOW + 7200, ("a",), "203.0.113.9")
    second = ConnectionRecord("c2", "t2", NOW + 1, NOW + 7201)
    store.put_connection(first)
    store.put_connection(second)
    assert sorted(store.list_connections(), key=lambda c: c.connection_id) == [first, second]


def test_only_the_holder_sets_the_served_count_when_it_renews(store: AdminStore) -> None:
    assert not store.renew_claim("myapp", "c1", NOW + 99, TunnelReport(1))  # no claim, no error
    assert store.get_claim("myapp") is None
    assert store.claim_name(claim(conn="c1"), NOW)
    assert store.renew_claim("myapp", "c1", NOW + 99, TunnelReport(3))
    assert not store.renew_claim("myapp", "c2", NOW + 99, TunnelReport(7))  # not the holder
    assert store.get_claim("myapp") == replace(claim(conn="c1"), expires_at=NOW + 99, served=3)
    assert store.renew_claim("myapp", "c1", NOW + 999)  # a renewal without a count keeps it
    assert store.get_claim("myapp").served == 3  # type: ignore[union-attr]
    # A new holder (the same token reconnecting) starts counting afresh.
    assert store.claim_name(claim(conn="c2"), NOW)
    assert store.get_claim("myapp") == claim(conn="c2")


def test_a_tokens_use_is_noted_and_a_revoked_token_stays_gone(store: AdminStore) -> None:
    token = TokenRecord("ab" * 32, "t1", "laptop", NOW, ("shop",))
    store.put_token(token)
    assert store.get_token("ab" * 32) == token  # never used yet: last_used is 0
    store.note_token_use("ab" * 32, NOW + 5)  # type: ignore[attr-defined]
    assert store.get_token("ab" * 32) == replace(token, last_used=NOW + 5)
    assert store.list_tokens() == [replace(token, last_used=NOW + 5)]
    store.delete_token("ab" * 32)
    store.note_token_use("ab" * 32, NOW + 9)  # type: ignore[attr-defined]
    assert store.get_token("ab" * 32) is None
    assert store.list_tokens() == []


REPORT = TunnelReport(9, (("local-app-refused", 2), ("app-5xx", 1)), 12, 80)
"""An agent's ping about one tunnel: 9 answered, 3 of them errors, latency 12/80 ms."""


def test_a_renewal_stores_the_holders_errors_and_latency_until_the_next_says_otherwise(
    store: AdminStore,
) -> None:
    assert store.claim_name(guarded(claim(conn="c1")), NOW)
    assert store.renew_claim("myapp", "c1", NOW + 99, REPORT)
    assert not store.renew_claim("myapp", "c2", NOW + 99, TunnelReport(1, (("app-5xx", 7),)))
    held = store.get_claim("myapp")
    assert held == replace(
        guarded(claim(conn="c1")),
        expires_at=NOW + 99,
        served=9,
        errors=(("app-5xx", 1), ("local-app-refused", 2)),  # by cause name, in every store
        latency_p50_ms=12,
        latency_p95_ms=80,
    )
    assert store.list_claims() == [held]
    assert store.renew_claim("myapp", "c1", NOW + 120)  # a renewal without a report keeps it
    assert store.get_claim("myapp") == replace(held, expires_at=NOW + 120)
    # A quiet minute and no errors: the next report clears both.
    assert store.renew_claim("myapp", "c1", NOW + 180, TunnelReport(9))
    quiet = store.get_claim("myapp")
    assert quiet is not None and quiet.served == 9
    assert (quiet.errors, quiet.latency_p50_ms, quiet.latency_p95_ms) == ((), None, None)
    assert store.renew_claim("myapp", "c1", NOW + 240, REPORT)
    # A new holder (the same token reconnecting) starts afresh.
    assert store.claim_name(claim(conn="c2"), NOW)
    assert store.get_claim("myapp") == claim(conn="c2")


def test_a_members_report_is_its_own_and_survives_others_joining(store: AdminStore) -> None:
    assert store.join_pool(pool("c1"), NOW)
    assert store.renew_member("myapp", "c1", NOW + 120, REPORT) == 1
    assert store.join_pool(pool("c2"), NOW)
    assert store.renew_member("myapp", "c2", NOW + 120, TunnelReport(4, (), 3, 5)) == 2
    held = store.get_claim("myapp")
    assert held is not None
    first, second = held.members
    assert first == PoolMember(
        "c1",
        "i-c1",
        NOW,
        NOW + 120,
        9,
        "203.0.113.7",
        (("app-5xx", 1), ("local-app-refused", 2)),
        12,
        80,
    )
    assert (second.served, second.errors, second.latency_p50_ms, second.latency_p95_ms) == (
        4,
        (),
        3,
        5,
    )
    # The claim's own fields say nothing for a pool: each member speaks for itself.
    assert (held.errors, held.latency_p50_ms) == ((), None)
    assert store.renew_member("myapp", "c1", NOW + 180) == 2  # without a report: kept
    assert store.get_claim("myapp").members[0] == replace(first, expires_at=NOW + 180)  # type: ignore[union-attr]
    assert store.renew_member("myapp", "c1", NOW + 240, TunnelReport(10)) == 2
    cleared = store.get_claim("myapp").members[0]  # type: ignore[union-attr]
    assert (cleared.served, cleared.errors, cleared.latency_p95_ms) == (10, (), None)


def test_dynamo_keeps_a_full_pools_reports_small(moto_table: MotoTable) -> None:
    """The largest report every member of the largest pool may send still leaves the claim
    item (rewritten by every ping) far below DynamoDB's 400 KB."""
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    causes = tuple(
        (f"c{i:0{protocol.MAX_CAUSE_LENGTH - 1}d}", protocol.MAX_REPORTED_COUNT)
        for i in range(protocol.MAX_ERROR_CAUSES)
    )
    largest = TunnelReport(
        protocol.MAX_REPORTED_COUNT, causes, protocol.MAX_LATENCY_MS, protocol.MAX_LATENCY_MS
    )
    members = [f"c{n:02d}" for n in range(protocol.MAX_POOL_MEMBERS)]
    for conn in members:
        assert store.join_pool(pool(conn), NOW)
    moto_table.operations.clear()
    for conn in members:
        assert store.renew_member("myapp", conn, NOW + 90, largest) == len(members)
    assert moto_table.operations == ["UpdateItem"] * len(members)  # no read, no extra write
    held = store.get_claim("myapp")
    assert held is not None and all(m.errors == causes for m in held.members)
    (item,) = [i for i in moto_table.table.scan()["Items"] if i["sk"] == "claim"]
    assert len(json.dumps(item, default=str)) < 32 * 1024


def guarded(base: Claim, password_hash: str = "pbkdf2-sha256$10000$c2FsdA$ZGlnZXN0") -> Claim:
    return replace(
        base, basic_auth=password_hash, webhook="stripe", webhook_secret="whsec_contract"
    )


def test_token_limits_round_trip_on_tokens_connections_and_claims(store: AdminStore) -> None:
    limits = TokenLimits(rate=2.5, burst=5, max_tunnels=3, requests_per_day=1000)
    token = TokenRecord("ab" * 32, "t1", limits=limits)
    store.put_token(token)
    assert store.get_token("ab" * 32) == token
    connection = ConnectionRecord("c1", "t1", NOW, NOW + 60, limits=limits)
    store.put_connection(connection)
    assert store.get_connection("c1") == connection
    held = replace(claim(), token_limits=limits)
    assert store.claim_name(held, NOW)
    assert store.get_claim("myapp") == held


def test_a_claims_access_rules_round_trip(store: AdminStore) -> None:
    rules = protocol.AccessRules(("203.0.113.0/24", "2001:db8::/32"), ("10.0.0.0/8",), 2.5, 7)
    held = replace(claim(), access=rules, large_responses="redirect", instance="i-1", gzip=False)
    assert store.claim_name(held, NOW)
    assert store.get_claim("myapp") == held


def test_a_claims_guards_round_trip_and_survive_renewal_and_counting(store: AdminStore) -> None:
    held = guarded(claim(conn="c1"))
    assert store.claim_name(held, NOW)
    assert store.get_claim("myapp") == held
    assert store.renew_claim("myapp", "c1", NOW + 999, TunnelReport(1))
    assert store.get_claim("myapp") == replace(held, expires_at=NOW + 999, served=1)
    assert store.list_claims() == [replace(held, expires_at=NOW + 999, served=1)]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(guarded(claim(conn="c1")), claim(conn="c2"), id="guards lifted"),
        pytest.param(claim(conn="c1"), guarded(claim(conn="c2")), id="guards added"),
        pytest.param(
            guarded(claim(conn="c1")), guarded(claim(conn="c2"), "other$hash"), id="guards changed"
        ),
    ],
)
def test_a_new_claim_never_inherits_the_guards_it_replaces(
    store: AdminStore, first: Claim, second: Claim
) -> None:
    assert store.claim_name(first, NOW)
    assert store.claim_name(second, NOW)  # the same token, reconnecting with other options
    assert store.get_claim("myapp") == second


def test_dynamo_stores_guards_as_claim_attributes_only_when_set(moto_table: MotoTable) -> None:
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    store.claim_name(guarded(claim("guarded")), NOW)
    store.claim_name(claim("plain"), NOW)
    items = {item["pk"]: item for item in moto_table.table.scan()["Items"] if item["sk"] == "claim"}
    assert items["name#guarded"]["webhook"] == "stripe"
    assert items["name#guarded"]["webhook_secret"] == "whsec_contract"
    assert not {"basic_auth", "webhook", "webhook_secret"} & set(items["name#plain"])


def test_dynamo_builds_its_own_expressions_so_threads_share_no_placeholders(
    moto_table: MotoTable, clock: FakeClock
) -> None:
    # boto3's per-client expression builder is shared by every thread using the client; the
    # adapter must hand it finished strings only.
    seen: list[tuple[str, str]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        for key in ("ConditionExpression", "FilterExpression", "KeyConditionExpression"):
            if key in params:
                seen.append((model.name, type(params[key]).__name__))

    moto_table.client.meta.events.register_first("before-parameter-build.dynamodb", record)
    store = DynamoStore(moto_table.table, clock)
    store.put_connection(ConnectionRecord("c1", "t1", NOW, NOW + 7200))
    store.set_connection_names("c1", ("myapp",))
    assert store.claim_name(claim(), NOW)
    assert store.renew_claim("myapp", "c1", NOW + 90, TunnelReport(2))
    assert store.reserve_name("myapp", "t1")
    assert store.list_claims() and store.list_connections()
    assert {operation for operation, _ in seen} >= {"PutItem", "UpdateItem", "Query"}
    assert {kind for _, kind in seen} == {"str"}


# ---------------------------------------------------------------------------------------------
# Pools: several agents of one token serving one name, one claim item listing them


def member(
    conn: str, instance: str = "", since: float = NOW, expires: float = NOW + 60
) -> PoolMember:
    return PoolMember(conn, instance or f"i-{conn}", since, expires, source_ip="203.0.113.7")


def pool(
    conn: str = "c1",
    token: str = "t1",
    name: str = "myapp",
    instance: str = "",
    since: float = NOW,
    expires: float = NOW + 60,
) -> Claim:
    """The claim one agent presents when it asks to join (or begin) the pool on ``name``."""
    joining = member(conn, instance, since, expires)
    return Claim(name, "", token, expires, pool=True, members=(joining,), pooled_since=since)


def connections_of(claim: Claim | None) -> list[str]:
    assert claim is not None and claim.pool
    return [m.connection_id for m in claim.members]


def test_agents_of_one_token_join_one_pool_and_each_is_listed(store: AdminStore) -> None:
    assert store.join_pool(pool("c1"), NOW)
    assert store.join_pool(pool("c2", since=NOW + 1, expires=NOW + 61), NOW + 1)
    held = store.get_claim("myapp")
    assert held == Claim(
        "myapp",
        "",
        "t1",
        NOW + 61,
        pool=True,
        members=(member("c1"), member("c2", since=NOW + 1, expires=NOW + 61)),
        pooled_since=NOW,
    )
    assert held.alive(NOW + 30) and held.holders(NOW + 30) == ("c1", "c2")
    assert held.holders(NOW + 60.5) == ("c2",)  # c1's lease ran out: not routed to
    assert store.list_claims() == [held]


@pytest.mark.parametrize(
    ("held", "wanted", "joins"),
    [
        pytest.param(pool("c1"), pool("c2", token="t2"), False, id="another token's pool"),
        pytest.param(claim(conn="c1"), pool("c2"), False, id="one agent of the token, no pool"),
        pytest.param(claim(conn="c1", token="t2"), pool("c2"), False, id="another token"),
        pytest.param(
            pool("c1"),
            replace(pool("c2"), basic_auth="pbkdf2-sha256$10000$c2FsdA$ZGlnZXN0"),
            False,
            id="other options",
        ),
        pytest.param(
            replace(pool("c1"), basic_auth="pbkdf2-sha256$10000$c2FsdA$ZGlnZXN0"),
            replace(pool("c2"), basic_auth="pbkdf2-sha256$10000$b3RoZXI$ZGlnZXN0"),
            True,
            id="a password of its own (salted apart) joins; the pool keeps the first",
        ),
        pytest.param(
            pool("c1", expires=NOW - 1), pool("c2", token="t2"), True, id="an expired pool"
        ),
        pytest.param(claim(expires=NOW - 1), pool("c2"), True, id="an expired single claim"),
    ],
)
def test_pool_join_conditions(store: AdminStore, held: Claim, wanted: Claim, joins: bool) -> None:
    if held.pool:
        assert store.join_pool(held, NOW - 10)
    else:
        assert store.claim_name(held, NOW - 10)
    assert store.join_pool(wanted, NOW) is joins
    after = store.get_claim("myapp")
    assert after is not None
    if not joins:
        assert after == held
    elif held.alive(NOW) and held.token_id == wanted.token_id:
        assert connections_of(after) == ["c1", "c2"]
        assert after.basic_auth == held.basic_auth
    else:
        assert after == wanted  # a fresh pool


def test_a_single_agent_never_takes_a_live_pool_of_its_own_token(store: AdminStore) -> None:
    assert store.join_pool(pool("c1", instance="a1"), NOW)
    for instance in ("", "a1", "a2"):
        assert not store.claim_name(replace(claim(conn="c2"), instance=instance), NOW)
    assert connections_of(store.get_claim("myapp")) == ["c1"]


def test_the_same_instance_reconnecting_replaces_its_old_connection(store: AdminStore) -> None:
    assert store.join_pool(pool("c1", instance="a1"), NOW)
    assert store.join_pool(pool("c2", instance="a2"), NOW)
    assert store.join_pool(pool("c3", instance="a1", since=NOW + 5, expires=NOW + 65), NOW + 5)
    assert connections_of(store.get_claim("myapp")) == ["c2", "c3"]
    assert store.renew_member("myapp", "c1", NOW + 99) == 0  # the replaced connection is out
    assert not store.release_claim("myapp", "c1")


def test_a_pool_holds_at_most_max_pool_members(store: AdminStore) -> None:
    for n in range(protocol.MAX_POOL_MEMBERS):
        assert store.join_pool(pool(f"c{n}"), NOW)
    assert not store.join_pool(pool("one-more"), NOW)
    # A member's own next connection still gets in: it replaces the old one.
    assert store.join_pool(pool("c0-again", instance="i-c0"), NOW)
    held = store.get_claim("myapp")
    assert held is not None and len(held.members) == protocol.MAX_POOL_MEMBERS
    assert "c0" not in connections_of(held) and "c0-again" in connections_of(held)


def test_a_member_renews_its_own_lease_and_count_and_learns_the_pool_size(
    store: AdminStore,
) -> None:
    assert store.renew_member("myapp", "c1", NOW + 99) == 0  # nothing to renew
    assert store.join_pool(pool("c1"), NOW)
    assert store.join_pool(pool("c2"), NOW)
    assert store.renew_member("myapp", "c1", NOW + 120, TunnelReport(7)) == 2
    assert store.renew_member("myapp", "c9", NOW + 120, TunnelReport(1)) == 0  # not a member
    assert not store.renew_claim("myapp", "c1", NOW + 120)  # a member renews as a member
    held = store.get_claim("myapp")
    assert held is not None and held.expires_at == NOW + 120
    assert held.members == (
        PoolMember("c1", "i-c1", NOW, NOW + 120, 7, "203.0.113.7"),
        member("c2"),
    )
    assert store.renew_member("myapp", "c1", NOW + 180) == 2  # without a count: kept
    assert store.get_claim("myapp").members[0].served == 7  # type: ignore[union-attr]
    # A single holder's claim has no members to renew.
    assert store.claim_name(claim("solo"), NOW)
    assert store.renew_member("solo", "c1", NOW + 99) == 0


def test_members_leave_one_by_one_and_the_last_deletes_the_claim(store: AdminStore) -> None:
    for conn in ("c1", "c2", "c3"):
        assert store.join_pool(pool(conn), NOW)
    assert store.release_claim("myapp", "c2")
    assert connections_of(store.get_claim("myapp")) == ["c1", "c3"]
    assert not store.release_claim("myapp", "c2")  # twice: nothing
    assert not store.release_claim("myapp", "c9")  # never a member
    assert store.release_claim("myapp", "c1")
    assert store.release_claim("myapp", "c3")
    assert store.get_claim("myapp") is None
    assert store.list_claims() == []
    # The name is free again, for anyone.
    assert store.claim_name(claim(conn="c4", token="t2"), NOW)


def test_a_pool_may_take_over_a_single_holder_found_dead(store: AdminStore) -> None:
    assert store.claim_name(claim(conn="c1"), NOW)
    assert not store.join_pool(pool("c2"), NOW, takeover_from="c9")
    assert store.join_pool(pool("c2"), NOW, takeover_from="c1")
    assert connections_of(store.get_claim("myapp")) == ["c2"]


def test_connections_remember_which_names_they_serve_as_pool_members(store: AdminStore) -> None:
    store.put_connection(ConnectionRecord("c1", "t1", NOW, NOW + 7200))
    store.set_connection_names("c1", ("shop", "api"), ("shop",))
    record = store.get_connection("c1")
    assert record is not None and (record.names, record.pooled) == (("shop", "api"), ("shop",))


@pytest.mark.usefixtures("frequent_thread_switches")
def test_many_agents_joining_at_once_all_get_in(store: AdminStore) -> None:
    joiners = [f"c{n}" for n in range(8)]
    assert race(*(partial(store.join_pool, pool(c), NOW) for c in joiners)) == [True] * 8
    assert sorted(connections_of(store.get_claim("myapp"))) == sorted(joiners)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_many_members_leaving_at_once_leave_no_claim_behind(store: AdminStore) -> None:
    leavers = [f"c{n}" for n in range(8)]
    for conn in leavers:
        assert store.join_pool(pool(conn), NOW)
    assert race(*(partial(store.release_claim, "myapp", c) for c in leavers)) == [True] * 8
    assert store.get_claim("myapp") is None


@pytest.mark.usefixtures("frequent_thread_switches")
def test_a_join_racing_the_last_leave_is_never_lost(store: AdminStore) -> None:
    for round_ in range(10):
        name = f"race-{round_}"
        assert store.join_pool(pool("old", name=name), NOW)
        results = race(
            partial(store.release_claim, name, "old"),
            partial(store.join_pool, pool("new", name=name), NOW),
        )
        assert results == [True, True]
        # Whichever came first, the joiner serves the name (an emptied pool is joinable, and
        # the last leaver deletes only an empty item).
        assert connections_of(store.get_claim(name)) == ["new"]


# ---------------------------------------------------------------------------------------------
# Leaving: an agent that stops takes no new requests; a lone one's name waits for its restart

HOLD = NOW + 10
"""The end of the restart hold in these tests."""


def test_a_lone_holder_leaving_keeps_its_claim_marked_until_the_hold_ends(
    store: AdminStore,
) -> None:
    assert store.claim_name(replace(claim(conn="c1"), instance="a1"), NOW - 10)
    assert store.leave_claim("myapp", "c2", NOW, HOLD) is False  # not the holder
    assert store.leave_claim("myapp", "c1", NOW, HOLD) is True
    held = store.get_claim("myapp")
    assert held == replace(claim(conn="c1", expires=HOLD), instance="a1", left_at=NOW)
    assert held.leaving(NOW) and held.leaving(HOLD - 0.001) and not held.leaving(HOLD)
    assert store.leave_claim("elsewhere", "c1", NOW, HOLD) is False  # nothing held there


@pytest.mark.parametrize(
    ("wanted", "at", "wins"),
    [
        pytest.param(replace(claim(conn="c2"), instance="a2"), NOW, True, id="restart, same token"),
        pytest.param(pool("c2"), NOW, True, id="restart as a pool, same token"),
        pytest.param(claim(conn="c2", token="t2"), NOW, False, id="another token, during hold"),
        pytest.param(pool("c2", token="t2"), NOW, False, id="another token's pool, during hold"),
        pytest.param(claim(conn="c2", token="t2"), HOLD, True, id="another token, hold over"),
    ],
)
def test_who_may_claim_a_name_its_lone_agent_left(
    store: AdminStore, wanted: Claim, at: float, wins: bool
) -> None:
    assert store.claim_name(replace(claim(conn="c1"), instance="a1"), NOW - 10)
    assert store.leave_claim("myapp", "c1", NOW, HOLD)
    left = store.get_claim("myapp")
    write = store.join_pool if wanted.pool else store.claim_name
    assert write(wanted, at) is wins
    after = store.get_claim("myapp")
    assert after == (wanted if wins else left)
    assert after is not None and after.leaving(at) is not wins  # a new claim serves


def test_a_pool_member_leaving_leaves_at_once_and_the_last_marks_the_pool_left(
    store: AdminStore,
) -> None:
    for conn in ("c1", "c2"):
        assert store.join_pool(pool(conn), NOW - 10)
    assert store.leave_claim("myapp", "c1", NOW, HOLD)
    held = store.get_claim("myapp")
    assert connections_of(held) == ["c2"] and not held.left_at  # the other serves on
    assert held.holders(NOW) == ("c2",)
    assert store.leave_claim("myapp", "c1", NOW, HOLD) is False  # twice: nothing
    assert store.leave_claim("myapp", "c2", NOW + 1, HOLD + 1)
    left = store.get_claim("myapp")
    assert left is not None and left.members == () and left.leaving(NOW + 1)
    assert left.expires_at == HOLD + 1 and left.holders(NOW + 1) == ()
    # Emptied by leaving, the pool is not free for anyone: only its token restarts it.
    assert not store.claim_name(claim(conn="c3", token="t2"), NOW + 1)
    assert store.join_pool(pool("c3"), NOW + 1)
    assert connections_of(store.get_claim("myapp")) == ["c3"]


def test_a_pool_whose_other_members_lapsed_is_left_as_a_lone_agent_would_leave_it(
    store: AdminStore,
) -> None:
    assert store.join_pool(pool("frozen", expires=NOW - 1), NOW - 10)  # no heartbeats lately
    assert store.join_pool(pool("c1"), NOW - 10)
    assert store.leave_claim("myapp", "c1", NOW, HOLD)
    left = store.get_claim("myapp")
    assert left is not None and left.leaving(NOW) and left.holders(NOW) == ()
    # The frozen member heartbeats again: it serves, and nobody waits any more.
    assert store.renew_member("myapp", "frozen", NOW + 60) == 1
    back = store.get_claim("myapp")
    assert back is not None and not back.leaving(NOW) and back.holders(NOW) == ("frozen",)


def test_dynamo_leaves_with_single_item_updates_and_no_read(moto_table: MotoTable) -> None:
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    assert store.claim_name(claim("solo"), NOW - 10)
    for conn in ("c1", "c2"):
        assert store.join_pool(pool(conn), NOW - 10)
    moto_table.operations.clear()
    assert store.leave_claim("solo", "c1", NOW, HOLD)
    assert moto_table.operations == ["UpdateItem"]
    moto_table.operations.clear()
    assert store.leave_claim("myapp", "c1", NOW, HOLD)  # a member: tried as a holder first
    assert moto_table.operations == ["UpdateItem", "UpdateItem"]
    moto_table.operations.clear()
    assert store.leave_claim("myapp", "c2", NOW, HOLD)  # the last: the pool is marked left
    assert moto_table.operations == ["UpdateItem", "UpdateItem", "UpdateItem"]


@pytest.mark.usefixtures("frequent_thread_switches")
def test_a_join_racing_the_last_member_leaving_always_serves(store: AdminStore) -> None:
    for round_ in range(10):
        name = f"race-{round_}"
        assert store.join_pool(pool("old", name=name), NOW - 10)
        results = race(
            partial(store.leave_claim, name, "old", NOW, HOLD),
            partial(store.join_pool, pool("new", name=name), NOW),
        )
        assert results == [True, True]
        # Whichever came first, the joiner serves and visitors are not held.
        held = store.get_claim(name)
        assert connections_of(held) == ["new"] and not held.leaving(NOW)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_joins_renewals_and_leaves_at_once_keep_every_member_they_should(
    store: AdminStore,
) -> None:
    for conn in ("a", "b", "c"):
        assert store.join_pool(pool(conn), NOW)
    results = race(
        partial(store.release_claim, "myapp", "a"),
        partial(store.join_pool, pool("d"), NOW),
        partial(store.renew_member, "myapp", "b", NOW + 300, TunnelReport(5)),  # type: ignore[arg-type]
        partial(store.release_claim, "myapp", "c"),
        partial(store.join_pool, pool("e"), NOW),
    )
    assert all(results)
    held = store.get_claim("myapp")
    assert sorted(connections_of(held)) == ["b", "d", "e"]
    assert held is not None and [m.served for m in held.members if m.connection_id == "b"] == [5]


def test_dynamo_keeps_a_pool_in_one_claim_item_with_single_item_writes(
    moto_table: MotoTable,
) -> None:
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    moto_table.operations.clear()
    assert store.join_pool(pool("c1"), NOW)
    assert store.join_pool(pool("c2"), NOW)
    assert store.renew_member("myapp", "c1", NOW + 90, TunnelReport(3)) == 2
    assert store.release_claim("myapp", "c1")
    assert store.release_claim("myapp", "c2")
    assert not {"Scan", "Query", "TransactWriteItems", "BatchWriteItem"} & set(
        moto_table.operations
    )
    assert set(moto_table.operations) <= {"GetItem", "PutItem", "UpdateItem", "DeleteItem"}
    store.join_pool(pool("c3"), NOW)
    items = [item for item in moto_table.table.scan()["Items"] if item["sk"] == "claim"]
    assert len(items) == 1 and set(items[0]["members"]) == {"c3"}
    assert items[0]["pool"] is True and "connection_id" not in items[0]
    assert items[0]["ttl"] > items[0]["expires_at"]


def test_dynamo_renews_a_member_with_one_update_and_no_read(moto_table: MotoTable) -> None:
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    store.join_pool(pool("c1"), NOW)
    moto_table.operations.clear()
    assert store.renew_member("myapp", "c1", NOW + 90, TunnelReport(3)) == 1
    assert moto_table.operations == ["UpdateItem"]


# ---------------------------------------------------------------------------------------------
# Visitors' WebSockets: each paired with the agent connection that carries it

SOCKET = "L0SM9cOFvHcCIhw="
"""What an API Gateway connection id looks like: base64, so ``+``, ``/`` and ``=`` occur."""


def visitor_socket(socket_id: str = SOCKET, conn: str = "c1", token: str = "t1") -> SocketRecord:
    return SocketRecord(socket_id, conn, token, "myapp", NOW + 0.25, NOW + 7200.123456)


def ended(store: AdminStore, socket_id: str) -> bool:
    """Whether this call to ``delete_socket`` is the one that ended the socket."""
    return store.delete_socket(socket_id) is not None


def connect(store: AdminStore, *conns: str, token: str = "t1") -> None:
    for conn in conns:
        store.put_connection(ConnectionRecord(conn, token, NOW, NOW + 7200))


@pytest.mark.parametrize("socket_id", [SOCKET, "a+b/c=", "+/==", "plain-id_01"])
def test_a_socket_round_trips_whatever_its_id_holds(store: AdminStore, socket_id: str) -> None:
    connect(store, "c1")
    store.put_socket(visitor_socket(socket_id))
    assert store.get_socket(socket_id) == visitor_socket(socket_id)
    assert store.sockets_of("c1") == [socket_id]
    assert store.get_socket(socket_id + "x") is None
    assert store.get_socket("unknown") is None


@pytest.mark.parametrize(
    ("token", "to", "gone", "moved"),
    [
        pytest.param("t1", "c2", False, True, id="its token, to another connection"),
        pytest.param("t1", "c1", False, True, id="its token, to the connection it is on"),
        pytest.param("t2", "c3", False, False, id="another token"),
        pytest.param("t2", "c1", False, False, id="another token, to the connection it is on"),
        pytest.param("t1", "c2", True, False, id="a socket already gone"),
    ],
)
def test_move_conditions(store: AdminStore, token: str, to: str, gone: bool, moved: bool) -> None:
    connect(store, "c1", "c2")
    connect(store, "c3", token="t2")
    store.put_socket(visitor_socket())
    if gone:
        assert store.delete_socket(SOCKET) is not None
    assert store.move_socket(SOCKET, token, to) is moved
    if moved:
        assert store.get_socket(SOCKET) == visitor_socket(conn=to)
    else:
        assert store.get_socket(SOCKET) == (None if gone else visitor_socket())
    on = to if moved else ("" if gone else "c1")
    for conn in ("c1", "c2", "c3"):
        assert store.sockets_of(conn) == ([SOCKET] if conn == on else []), conn


def test_a_socket_is_deleted_once_and_its_record_comes_back_from_that_delete(
    store: AdminStore,
) -> None:
    connect(store, "c1")
    store.put_socket(visitor_socket())
    store.put_socket(visitor_socket("s2"))
    assert store.delete_socket(SOCKET) == visitor_socket()
    assert store.delete_socket(SOCKET) is None
    assert store.get_socket(SOCKET) is None
    assert store.sockets_of("c1") == ["s2"]
    assert store.move_socket(SOCKET, "t1", "c1") is False  # gone stays gone
    assert store.sockets_of("c1") == ["s2"]


@pytest.mark.parametrize(
    ("noted", "seq", "passes"),
    [
        pytest.param((), 1, True, id="the first message"),
        pytest.param((1,), 2, True, id="the next one"),
        pytest.param((1, 2), 2, False, id="the last one again"),
        pytest.param((1, 2, 3), 2, False, id="an earlier one again"),
        pytest.param((1,), 5, True, id="a later one"),
    ],
)
def test_an_apps_message_is_passed_on_once_by_its_number(
    store: AdminStore, noted: tuple[int, ...], seq: int, passes: bool
) -> None:
    connect(store, "c1")
    store.put_socket(visitor_socket())
    for earlier in noted:
        assert store.pass_socket_message(SOCKET, earlier)
    assert store.pass_socket_message(SOCKET, seq) is passes


def test_a_socket_keeps_its_message_count_through_a_move_and_not_past_its_end(
    store: AdminStore,
) -> None:
    connect(store, "c1", "c2")
    store.put_socket(visitor_socket())
    assert store.pass_socket_message(SOCKET, 1)
    assert store.move_socket(SOCKET, "t1", "c2")
    assert store.get_socket(SOCKET) == visitor_socket(conn="c2")
    assert store.pass_socket_message(SOCKET, 1) is False
    assert store.pass_socket_message(SOCKET, 2)
    assert store.delete_socket(SOCKET) == visitor_socket(conn="c2")
    assert store.pass_socket_message(SOCKET, 3) is False  # gone: nothing to pass it to
    assert store.get_socket(SOCKET) is None  # and nothing brought back
    assert store.pass_socket_message("never-opened", 1) is False


@pytest.mark.usefixtures("frequent_thread_switches")
def test_of_two_passes_of_one_message_at_once_exactly_one_wins(store: AdminStore) -> None:
    connect(store, "c1")
    store.put_socket(visitor_socket())
    for seq in range(1, 6):
        results = race(*[partial(store.pass_socket_message, SOCKET, seq)] * 2)
        assert sorted(results) == [False, True], seq


def test_the_sockets_of_two_connections_are_kept_apart(store: AdminStore) -> None:
    connect(store, "c1", "c2")
    connect(store, "c3", token="t2")
    for socket_id, conn, token in [("a", "c1", "t1"), ("b", "c2", "t1"), ("c", "c1", "t1")]:
        store.put_socket(visitor_socket(socket_id, conn, token))
    store.put_socket(visitor_socket("d", "c3", "t2"))
    assert sorted(store.sockets_of("c1")) == ["a", "c"]
    assert store.sockets_of("c2") == ["b"]
    assert store.sockets_of("c3") == ["d"]
    assert store.sockets_of("c4") == []
    assert store.move_socket("a", "t1", "c2")
    assert store.move_socket("d", "t1", "c2") is False  # another token's socket stays put
    assert store.sockets_of("c1") == ["c"]
    assert sorted(store.sockets_of("c2")) == ["a", "b"]
    assert store.sockets_of("c3") == ["d"]


def test_socket_writes_never_bring_back_a_deleted_connection(store: AdminStore) -> None:
    connect(store, "c1", "c2")
    for socket_id in ("a", "b"):
        store.put_socket(visitor_socket(socket_id))
    store.delete_connection("c1")
    store.put_socket(visitor_socket("c"))  # the agent left as the visitor came
    assert store.move_socket("a", "t1", "c2")  # moved off it: nothing to take off
    assert store.delete_socket("b") == visitor_socket("b")
    assert store.get_connection("c1") is None
    assert store.sockets_of("c2") == ["a"]
    store.delete_connection("c2")
    assert store.delete_socket("a") == visitor_socket("a", "c2")
    assert store.get_connection("c2") is None


@pytest.mark.usefixtures("frequent_thread_switches")
def test_of_two_closers_at_once_exactly_one_gets_the_socket(store: AdminStore) -> None:
    connect(store, "c1")
    for round_ in range(10):
        socket_id = f"s{round_}"
        store.put_socket(visitor_socket(socket_id))
        results = race(partial(ended, store, socket_id), partial(ended, store, socket_id))
        assert sorted(results) == [False, True]
    assert store.sockets_of("c1") == []


@pytest.mark.usefixtures("frequent_thread_switches")
def test_a_move_racing_the_sockets_end_leaves_it_listed_nowhere(store: AdminStore) -> None:
    connect(store, "c1", "c2")
    for round_ in range(10):
        socket_id = f"s{round_}"
        store.put_socket(visitor_socket(socket_id))
        results = race(
            partial(store.move_socket, socket_id, "t1", "c2"), partial(ended, store, socket_id)
        )
        assert results[1] is True  # a move never hides a socket from its closer
        assert store.get_socket(socket_id) is None
        assert store.sockets_of("c1") == store.sockets_of("c2") == []


def test_dynamo_keeps_a_socket_in_its_item_and_its_id_in_its_connections_set(
    moto_table: MotoTable,
) -> None:
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    connect(store, "c1")
    store.put_socket(visitor_socket())
    store.put_socket(visitor_socket("s2"))
    items = {(i["pk"], i["sk"]): i for i in moto_table.table.scan()["Items"]}
    assert set(items) == {("conn#c1", "conn"), (f"vsock#{SOCKET}", "vsock"), ("vsock#s2", "vsock")}
    socket_item = items[f"vsock#{SOCKET}", "vsock"]
    assert "listing" not in socket_item  # live traffic stays out of the listings index
    assert socket_item["ttl"] > socket_item["expires_at"]  # collected only after its end
    assert items["conn#c1", "conn"]["sockets"] == {SOCKET, "s2"}
    # The set rides on the connection item without changing how it reads, lists or goes.
    assert store.get_connection("c1") == ConnectionRecord("c1", "t1", NOW, NOW + 7200)
    assert store.list_connections() == [ConnectionRecord("c1", "t1", NOW, NOW + 7200)]
    store.set_connection_names("c1", ("myapp",))
    assert store.sockets_of("c1") == sorted([SOCKET, "s2"])
    for socket_id in (SOCKET, "s2"):
        store.delete_socket(socket_id)
    assert "sockets" not in moto_table.table.get_item(Key={"pk": "conn#c1", "sk": "conn"})["Item"]
    store.delete_connection("c1")
    assert moto_table.table.scan()["Items"] == []


def test_dynamo_pairs_sockets_with_single_item_writes_and_reads_them_consistently(
    moto_table: MotoTable,
) -> None:
    reads = consistent_reads(moto_table)
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    connect(store, "c1", "c2")
    moto_table.operations.clear()
    store.put_socket(visitor_socket())
    assert moto_table.operations == ["UpdateItem", "PutItem"]  # listed before it names c1
    moto_table.operations.clear()
    assert store.get_socket(SOCKET) is not None
    assert store.sockets_of("c1") == [SOCKET]
    assert moto_table.operations == ["GetItem", "GetItem"] and reads == [True, True]
    moto_table.operations.clear()
    assert store.move_socket(SOCKET, "t1", "c2")  # listed on c2, moved, taken off c1
    assert moto_table.operations == ["UpdateItem", "UpdateItem", "UpdateItem"]
    moto_table.operations.clear()
    assert store.delete_socket(SOCKET) is not None
    assert moto_table.operations == ["DeleteItem", "UpdateItem"]


def test_dynamo_refuses_to_move_a_socket_to_a_connection_already_gone(
    moto_table: MotoTable,
) -> None:
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    connect(store, "c1", "c2")
    store.put_socket(visitor_socket())
    store.delete_connection("c2")
    # It stays where the end of c1 will find it and close it.
    assert store.move_socket(SOCKET, "t1", "c2") is False
    assert store.get_socket(SOCKET) == visitor_socket()
    assert store.sockets_of("c1") == [SOCKET]
    assert store.get_connection("c2") is None
    assert ("conn#c2", "conn") not in {(i["pk"], i["sk"]) for i in moto_table.table.scan()["Items"]}


def test_dynamo_lists_a_socket_too_often_never_too_rarely_when_a_write_is_cut_short(
    moto_table: MotoTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DynamoStore(moto_table.table, FakeClock(NOW))
    connect(store, "c1", "c2")
    store.put_socket(visitor_socket())
    store.put_socket(visitor_socket("s2"))

    def cut_short(connection_id: str, socket_id: str) -> None:
        raise TimeoutError("the function stopped between two writes")

    monkeypatch.setattr(store, "_unlist", cut_short)
    with pytest.raises(TimeoutError):
        store.move_socket(SOCKET, "t1", "c2")
    with pytest.raises(TimeoutError):
        store.delete_socket("s2")
    # Both are still listed on c1: a caller that re-checks each finds where they really are.
    assert store.sockets_of("c1") == sorted([SOCKET, "s2"])
    assert store.sockets_of("c2") == [SOCKET]
    found = {socket_id: store.get_socket(socket_id) for socket_id in store.sockets_of("c1")}
    assert found == {SOCKET: visitor_socket(conn="c2"), "s2": None}


# ---------------------------------------------------------------------------------------------
# SqliteStore only: what an operator creates outlives the process


def test_sqlite_keeps_tokens_reservations_and_share_links_across_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hatchway" / "local.db"
    first = SqliteStore(path, FakeClock(NOW))
    limits = TokenLimits(rate=2.0, burst=4, max_tunnels=3, requests_per_day=100)
    first.put_token(TokenRecord("ab" * 32, "t1", "laptop", NOW, ("myapp",), limits))
    first.put_token(TokenRecord("cd" * 32, "t2", "revoked soon"))
    first.delete_token("cd" * 32)
    first.note_token_use("ab" * 32, NOW + 60)
    assert first.reserve_name("myapp", "t1") and first.reserve_name("gone", "t1")
    assert first.release_reservation("gone", "t1")
    first.put_share(share("s1", max_uses=2))
    assert first.use_share("s1", NOW)
    first.put_share(share("s2"))
    assert first.revoke_share("s2", "t1")
    first.put_connection(ConnectionRecord("c1", "t1", NOW, NOW + 7200))
    first.claim_name(claim(), NOW)
    first.close()  # as a kill -9 would leave it: every write was committed when it returned

    again = SqliteStore(path, FakeClock(NOW))
    token = again.get_token("ab" * 32)
    assert token is not None and (token.label, token.reserved, token.limits) == (
        "laptop",
        ("myapp",),
        limits,
    )
    assert token.last_used == NOW + 60
    assert again.get_token("cd" * 32) is None
    assert (again.get_reservation("myapp"), again.get_reservation("gone")) == ("t1", None)
    used, revoked = again.get_share("s1"), again.get_share("s2")
    assert used is not None and used.uses == 1 and used.usable(NOW)
    assert revoked is not None and revoked.revoked
    # What lives only as long as a connection does not come back: agents reconnect.
    assert again.get_connection("c1") is None and again.get_claim("myapp") is None


def test_sqlite_refuses_a_file_of_another_schema(tmp_path: Path) -> None:
    path = tmp_path / "local.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        SqliteStore(path)
