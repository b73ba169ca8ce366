"""hatchway-local's admin API: only its own user (holding the key from the admin file) may call
it, only the operator's store calls exist, and it listens on loopback alone."""

from __future__ import annotations

import http.client
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hatchway.protocol import AccessRules
from hatchway_local.admin_api import AdminError, AdminServer, RemoteStore, decode, encode
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.ports import Claim, ConnectionRecord, PoolMember, TokenLimits, TokenRecord


@pytest.fixture
def server() -> Iterator[AdminServer]:
    admin = AdminServer(MemoryStore(), key="the-admin-key").start()
    yield admin
    admin.close()


def post(server: AdminServer, path: str, body: bytes, key: str | None) -> tuple[int, dict]:
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    connection.request("POST", path, body, headers)
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


@pytest.mark.parametrize(
    ("path", "body", "key", "status", "says"),
    [
        ("/store/list_tokens", b"[]", None, 401, "admin key"),
        ("/store/list_tokens", b"[]", "a-wrong-key", 401, "admin key"),
        ("/store/claim_name", b"[]", "the-admin-key", 400, "unknown admin call"),
        ("/store/put_response", b'["r", "answer", 1]', "the-admin-key", 400, "unknown admin call"),
        ("/store/get_token", b'{"not": "a list"}', "the-admin-key", 400, "JSON list"),
        ("/store/get_token", b"[not json", "the-admin-key", 400, "Expecting value"),
        ("/store/list_tokens", b"[]", "the-admin-key", 200, ""),
    ],
)
def test_requests_are_checked(
    server: AdminServer, path: str, body: bytes, key: str | None, status: int, says: str
) -> None:
    code, answer = post(server, path, body, key)
    assert code == status
    assert says in answer.get("error", "")


def test_it_listens_on_loopback_only(server: AdminServer) -> None:
    assert urlsplit(server.url).hostname == "127.0.0.1"
    with pytest.raises(AdminError, match="loopback"):
        RemoteStore("http://192.0.2.1:8080", "key")


@pytest.mark.parametrize(
    "record",
    [
        TokenRecord("ab" * 32, "abababababab", "laptop", 1.5, ("shop", "blog")),
        ConnectionRecord("c1", "t1", 1.0, 7201.0, ("a",), "203.0.113.9"),
        Claim("myapp", "c1", "t1", 600.25, served=7),
        [Claim("a", "c", "t", 1.0), None, "text", 3],
        Claim("guarded", "c2", "t2", 9.0, access=AccessRules(("10.0.0.0/8",), (), 5.0, 10)),
        TokenRecord("cd" * 32, "cdcdcdcdcdcd", limits=TokenLimits(5.0, 10, 3, 1000)),
        Claim(
            "shop",
            "",
            "t1",
            60.0,
            pool=True,
            members=(PoolMember("c1", "i1", 1.0, 60.0, 4), PoolMember("c2", "i2", 2.0, 61.0)),
            pooled_since=1.0,
        ),
    ],
)
def test_records_cross_the_wire_unchanged(record: object) -> None:
    assert decode(json.loads(json.dumps(encode(record)))) == record


def test_the_admin_file_is_private_and_removed_only_by_its_writer(
    server: AdminServer, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "local-admin.json"
    server.write_admin_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = RemoteStore.from_admin_file(path)
    assert store.list_tokens() == []

    other = AdminServer(MemoryStore()).start()
    try:
        other.write_admin_file(path)  # a second hatchway-local took over the file
        server.remove_admin_file(path)
        assert path.exists()
        other.remove_admin_file(path)
        assert not path.exists()
    finally:
        other.close()


def test_a_missing_admin_file_says_to_start_hatchway_local(tmp_path: Path) -> None:
    with pytest.raises(AdminError, match="start it first"):
        RemoteStore.from_admin_file(tmp_path / "nothing.json")


def test_a_stopped_server_is_reported_as_such(tmp_path: Path) -> None:
    admin = AdminServer(MemoryStore()).start()
    store = RemoteStore(admin.url, admin.key)
    admin.close()
    with pytest.raises(AdminError, match="still running"):
        store.list_tokens()


def test_forgetting_a_connection_is_reported_to_the_gateway() -> None:
    forgotten: list[str] = []
    memory = MemoryStore()
    memory.put_connection(ConnectionRecord("c1", "t1", 1.0, 7201.0))
    admin = AdminServer(memory, on_forget=forgotten.append).start()
    try:
        RemoteStore(admin.url, admin.key).delete_connection("c1")
    finally:
        admin.close()
    assert forgotten == ["c1"] and memory.get_connection("c1") is None
