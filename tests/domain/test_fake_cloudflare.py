"""The fake Cloudflare API answers the real SDK the way Cloudflare does for the calls we make, and
refuses loudly what it does not implement."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import cloudflare
import pytest
from certbot_dns_cloudflare._internal.dns_cloudflare import _CloudflareClient

from support.fake_cloudflare import FakeCloudflare

ZONE = "example.test"
ZONE_ID = "023e105f4ecef8ad9ca31a8372d0c353"
OTHER_ZONE = "other.test"
OTHER_ZONE_ID = "9a7806061c88ada191ed06f989cc3dac"
TOKEN = "cf-test-token-7d41"


@pytest.fixture
def fake() -> Iterator[FakeCloudflare]:
    with FakeCloudflare({ZONE: ZONE_ID, OTHER_ZONE: OTHER_ZONE_ID}, token=TOKEN) as api:
        yield api


@pytest.fixture
def client(fake: FakeCloudflare) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(api_token=TOKEN, base_url=fake.base_url, max_retries=0)


def raw(fake: FakeCloudflare, method: str, path: str, token: str | None = TOKEN) -> Any:
    """An answer as status and JSON envelope, bypassing the SDK (to see what it would hide)."""
    request = urllib.request.Request(fake.base_url + path, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("token", ["wrong-token", None], ids=["wrong", "missing"])
def test_a_request_without_the_right_bearer_token_is_refused(
    fake: FakeCloudflare, token: str | None
) -> None:
    status, body = raw(fake, "GET", "/zones", token=token)

    assert status == 403
    assert body["success"] is False
    assert body["errors"][0]["code"] == 9109


def test_the_sdk_sees_a_wrong_token_as_a_permission_error(fake: FakeCloudflare) -> None:
    client = cloudflare.Cloudflare(api_token="wrong", base_url=fake.base_url, max_retries=0)

    with pytest.raises(cloudflare.PermissionDeniedError):
        client.zones.get(zone_id=ZONE_ID)
    assert fake.store.records() == []


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/accounts", 404, 7000),
        ("GET", f"/zones/{ZONE_ID}/dns_records/export", 404, 81044),
        ("GET", "/zones/no-such-zone/dns_records", 404, 7003),
        ("DELETE", f"/zones/{ZONE_ID}", 405, 7001),
        ("GET", f"/zones/{ZONE_ID}/dns_records?search=x", 400, 99999),
        ("GET", f"/zones/{ZONE_ID}/dns_records?order=name", 400, 99999),
        ("GET", f"/zones/{ZONE_ID}/dns_records?name.contains=x", 400, 99999),
        ("GET", f"/zones/{ZONE_ID}/dns_records?per_page=0", 400, 1004),
        ("GET", "/zones?account.id=1", 400, 99999),
    ],
)
def test_what_the_fake_does_not_implement_is_an_error_in_the_envelope(
    fake: FakeCloudflare, method: str, path: str, status: int, code: int
) -> None:
    answer_status, body = raw(fake, method, path)

    assert (answer_status, body["success"], body["errors"][0]["code"]) == (status, False, code)


def test_unsupported_record_fields_fail_through_the_sdk(client: cloudflare.Cloudflare) -> None:
    with pytest.raises(cloudflare.BadRequestError, match="not supported by the fake"):
        client.dns.records.create(
            zone_id=ZONE_ID, type="CNAME", name="x", content="y.test", ttl=1, tags=["team:a"]
        )


def test_records_round_trip_through_create_get_update_edit_delete(
    fake: FakeCloudflare, client: cloudflare.Cloudflare
) -> None:
    created = client.dns.records.create(
        zone_id=ZONE_ID,
        type="CNAME",
        name="*.t.example.test",
        content="d-one.example.test",
        ttl=1,
        proxied=False,
        comment="managed by hatchway stack test",
    )
    assert created is not None
    fetched = client.dns.records.get(created.id, zone_id=ZONE_ID)
    assert fetched is not None
    assert (fetched.name, fetched.type, fetched.content, fetched.comment) == (
        "*.t.example.test",
        "CNAME",
        "d-one.example.test",
        "managed by hatchway stack test",
    )

    # PUT replaces the record: the comment it leaves out is gone.
    client.dns.records.update(
        created.id, zone_id=ZONE_ID, type="CNAME", name="*.t.example.test",
        content="d-two.example.test", ttl=300,
    )  # fmt: skip
    assert fake.store.get(created.id) == {
        **fake.store.records()[0],
        "content": "d-two.example.test",
        "ttl": 300,
        "comment": None,
    }
    # PATCH changes only what it names.
    client.dns.records.edit(
        created.id, zone_id=ZONE_ID, type="CNAME", name="*.t.example.test", ttl=300, proxied=True
    )
    record = fake.store.records()[0]
    assert (record["content"], record["ttl"], record["proxied"]) == (
        "d-two.example.test",
        300,
        True,
    )

    client.dns.records.delete(created.id, zone_id=ZONE_ID)
    assert fake.store.records() == []
    assert [call[0] for call in fake.calls] == ["POST", "GET", "PUT", "PATCH", "DELETE"]


def test_listing_pages_through_the_zone_and_filters_exactly(
    fake: FakeCloudflare, client: cloudflare.Cloudflare
) -> None:
    for number in range(12):
        fake.store.add(ZONE_ID, "TXT", f"r{number}.example.test", f"value-{number}")
    fake.store.add(OTHER_ZONE_ID, "TXT", "r0.other.test", "value-0")

    first = client.dns.records.list(zone_id=ZONE_ID, per_page=5)
    everything = list(client.dns.records.list(zone_id=ZONE_ID, per_page=5))
    one = list(
        client.dns.records.list(
            zone_id=ZONE_ID, type="TXT", name={"exact": "R3.example.test"}, per_page=5
        )
    )

    assert len(first.result) == 5
    assert first.result_info is not None and first.result_info.per_page == 5
    assert [r.content for r in everything] == [f"value-{n}" for n in range(12)]
    assert [r.content for r in one] == ["value-3"]


@pytest.mark.parametrize(
    ("existing", "new", "code"),
    [
        (("TXT", "a.example.test", "v"), ("TXT", "a.example.test", "v"), 81058),
        (("A", "a.example.test", "192.0.2.1"), ("CNAME", "a.example.test", "b.test"), 81053),
        (("CNAME", "a.example.test", "b.test"), ("CNAME", "a.example.test", "c.test"), 81053),
        (("CNAME", "a.example.test", "b.test"), ("AAAA", "a.example.test", "2001:db8::2"), 81054),
        (None, ("A", "a.example.test", "not-an-address"), 1004),
        (None, ("TXT", "a.example.test", ""), 1004),
    ],
)
def test_records_cloudflare_would_refuse_are_refused(
    fake: FakeCloudflare,
    client: cloudflare.Cloudflare,
    existing: tuple[str, str, str] | None,
    new: tuple[Any, str, str],
    code: int,
) -> None:
    if existing:
        fake.store.add(ZONE_ID, *existing)
    kind, name, content = new

    with pytest.raises(cloudflare.BadRequestError) as refused:
        client.dns.records.create(zone_id=ZONE_ID, type=kind, name=name, content=content, ttl=1)

    assert isinstance(refused.value.body, dict)
    assert refused.value.body["errors"][0]["code"] == code
    assert len(fake.store.records()) == (1 if existing else 0)


def test_a_name_outside_the_zone_is_read_as_relative_like_cloudflare_does(
    fake: FakeCloudflare, client: cloudflare.Cloudflare
) -> None:
    client.dns.records.create(
        zone_id=ZONE_ID, type="TXT", name="api.other.test", content="v", ttl=1
    )

    assert [r["name"] for r in fake.store.records()] == ["api.other.test.example.test"]


def test_certbot_dns_cloudflare_calls_work_through_the_real_sdk(
    fake: FakeCloudflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    # certbot's client builds its own SDK client: the base URL reaches it through the environment.
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", fake.base_url)
    certbot = _CloudflareClient(api_token=TOKEN)
    name = "_acme-challenge.t.example.test"

    certbot.add_txt_record("t.example.test", name, "validation-1", 120)
    certbot.add_txt_record("t.example.test", name, "validation-1", 120)  # a replayed challenge
    certbot.add_txt_record("t.example.test", name, "validation-2", 120)
    served = [(r["name"], r["content"], r["ttl"]) for r in fake.store.records(ZONE_ID)]
    ids = {r["content"]: r["id"] for r in fake.store.records()}
    certbot.del_txt_record("t.example.test", name, "validation-1")

    assert served == [(name, "validation-1", 120), (name, "validation-2", 120)]
    assert [r["content"] for r in fake.store.records()] == ["validation-2"]
    records = f"/zones/{ZONE_ID}/dns_records"
    # Exactly the surface noted in the toolchain notes: zone lookup, TXT create, find, delete.
    assert set(fake.calls) == {
        ("GET", "/zones"),
        ("POST", records),
        ("GET", records),
        ("DELETE", f"{records}/{ids['validation-1']}"),
    }
