"""``DynamoStore``: the relay's state in one DynamoDB table (boto3), for AWS and for the local
gateway's ``--store dynamodb`` mode.

Single-table layout, ``pk``/``sk`` strings:

    token#<hash>  / token     agent token (only the hash is ever stored)
    conn#<id>     / conn      live connection, the names it holds and (``sockets``, a string
                              set) the ids of the visitor sockets it carries
    name#<name>   / claim     who serves a tunnel name, until expires_at, and its guards; a
                              pool's members in one map attribute, keyed by connection id
    name#<name>   / reserved  the token that alone may claim the name
    req#<id>      / answer#<connection>
                              the answer to visitor request <id> from that agent connection
                              (``a``: its stored form) and its mark that it is still on a slow
                              request (``w``); written by API Gateway's integration, not a Lambda
    vsock#<id>    / vsock     a visitor's WebSocket (its id on the visitor-socket API): the
                              connection carrying it, its token and tunnel, until expires_at
    seen#<key>    / seen      something that may happen once (a webhook signature), until ttl
    share#<id>    / share     a share link (its secret only hashed), until it expires
    relay         / key       the relay's random key (binds request ids to connections)

Every item but a token (which lives until revoked) and the key has a ``ttl`` for garbage
collection only; readers check expiry in code because TTL deletes late. Claims, responses and
sockets use conditional single-item writes, never transactions: DynamoDB cancels concurrent
transactions on one item. A pool changes one member at a time with an ``UpdateItem`` on its
claim item (join, renew, leave); the last member to leave deletes the item, on condition that
it is still empty. Nothing on the request path deletes (TTL deletes for free) but a visitor
socket's end: one delete decides which of two closers ends it (``dynamo_sockets`` says how a
socket's item and its connection's set stay in step, and what ``sockets_of`` may over-report).

Nothing scans. Every request path reads by key; the listings (the operator's tokens,
connections and tunnels, an agent's share links) query the sparse global secondary index
``Listings``. Its partition key, ``listing``, is written only on long-lived items:

    listing = tokens             every token item
    listing = connections        every connection item
    listing = claims             every claim item (single holder or pool)
    listing = shares#<token id>  the share links that token made

Its sort key is the item's ``pk``. Answers, working marks, sightings, reservations and the key
have no ``listing`` and are not in the index at all, so no listing ever reads the ``req#`` items
that visitor traffic leaves behind until TTL (one per request, up to two days). One index
partition per kind of item is a hot key only far beyond these sizes: an index partition takes
1,000 writes a second, and the busiest, ``claims``, is written once per agent ping. The
projection is ALL, so a listing is one paged Query; renewing a claim then also writes its
index copy (as many write units again), which is what a listing without reads costs.
The index is eventually consistent: a listing may miss an item written within the last second.
Items written before the index existed carry no ``listing`` and are not listed: nothing
deployed holds such items (pre-release), so there is nothing to backfill.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from boto3.dynamodb.conditions import Attr, ConditionBase, Key
from botocore.exceptions import ClientError

from hatchway import protocol
from hatchway.protocol import codec
from hatchway_relay.adapters.dynamo_items import TTL_MARGIN_SECONDS as TTL_MARGIN_SECONDS
from hatchway_relay.adapters.dynamo_items import (
    binary_value,
    dec,
    limits,
    limits_attribute,
    member,
    member_item,
    num,
    report_fields,
    report_update,
)
from hatchway_relay.adapters.dynamo_items import ttl as _ttl
from hatchway_relay.adapters.dynamo_requests import condition_failed as _condition_failed
from hatchway_relay.adapters.dynamo_requests import expressions as _expressions
from hatchway_relay.adapters.dynamo_requests import update_expression as _update_expression
from hatchway_relay.adapters.dynamo_sockets import DynamoSockets
from hatchway_relay.adapters.dynamo_table import (
    CLAIMS_LISTING,
    CONNECTIONS_LISTING,
    LISTING_INDEX,
    LISTING_KEY,
    SHARES_LISTING_PREFIX,
    TOKENS_LISTING,
)
from hatchway_relay.adapters.dynamo_table import create_table as create_table
from hatchway_relay.answer_items import ANSWER, CHUNK, WORKING, answer_key, chunk_key
from hatchway_relay.ports import (
    Claim,
    Clock,
    ConnectionRecord,
    ShareRecord,
    SystemClock,
    TokenRecord,
    TunnelReport,
    pool_options,
)

FIRST_POLL_SECONDS = 0.01
POLL_BACKOFF = 1.5
MAX_POLL_SECONDS = 0.2
"""Response polling: first look after 10 ms (or the caller's hint), then 1.5x further apart,
capped at 200 ms, for the whole of one visitor's wait. Each look is one strongly consistent
GetItem of one small item (1 RRU)."""

RELAY_KEY_BYTES = 32

REFUSED_PREFIX = "refused:"
"""Claim-item attributes counting what the relay answered itself, one per cause."""

CLAIM_GUARDS = ("basic_auth", "webhook", "webhook_secret", "large_responses", "instance")
"""``Claim`` string fields stored as claim-item attributes of the same names (absent when
empty or default); the access rules travel as one JSON attribute, ``access``."""

JOIN_ATTEMPTS = 2 * protocol.MAX_POOL_MEMBERS
"""Reads and conditional writes a join may make: each failed write means another member
joined or left in between (one of them succeeded), so a full pool's worth of simultaneous
joiners all get through."""


@dataclasses.dataclass
class _Poll:
    """A visitor's wait for one answer: the connection it must come from, and the sleeps left
    between looks (kept across the waiter's calls)."""

    connection_id: str
    delays: Iterator[float]


def _poll_delays(hint: float) -> Iterator[float]:
    """Sleeps between looks: the hint when there is one, then 10 ms growing 1.5x to 200 ms.
    Each miss costs what about 19 ms of the waiting function costs at 512 MB."""
    if hint > FIRST_POLL_SECONDS:
        yield hint
    delay = FIRST_POLL_SECONDS
    while True:
        yield delay
        delay = min(delay * POLL_BACKOFF, MAX_POLL_SECONDS)


class DynamoStore(DynamoSockets):
    """The ``Store`` port over one DynamoDB table (a boto3 ``Table`` resource)."""

    def __init__(self, table: Any, clock: Clock | None = None) -> None:
        self.table = table
        self.client = table.meta.client
        self._clock = clock or SystemClock()
        self._awaited: dict[str, _Poll] = {}

    @staticmethod
    def _conditionally(write: Callable[..., Any], **request: Any) -> bool:
        """One conditional write; False when DynamoDB says its condition failed."""
        try:
            write(**_expressions(request))
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def _get(self, pk: str, sk: str, consistent: bool = True) -> dict[str, Any] | None:
        """One item by key, strongly consistent (a read that decides is never stale) unless
        ``consistent`` is False: half the price, for a look whose miss only means looking again."""
        item: dict[str, Any] | None = self.table.get_item(
            Key={"pk": pk, "sk": sk}, ConsistentRead=consistent
        ).get("Item")
        return item

    # Tokens

    def put_token(self, record: TokenRecord) -> None:
        self.table.put_item(
            Item={
                "pk": f"token#{record.token_hash}",
                "sk": "token",
                LISTING_KEY: TOKENS_LISTING,
                "token_id": record.token_id,
                "label": record.label,
                "created_at": dec(record.created_at),
                "reserved": list(record.reserved),
                **limits_attribute("limits", record.limits),
                **({"last_used": dec(record.last_used)} if record.last_used else {}),
            }
        )

    def note_token_use(self, token_hash: str, now: float) -> None:
        # The authorizer may update this one attribute of token items and nothing else
        # (template.yaml); the condition keeps a revoked token from coming back as a stub.
        self._conditionally(
            self.table.update_item,
            Key={"pk": f"token#{token_hash}", "sk": "token"},
            UpdateExpression="SET last_used = :now",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": dec(now)},
        )

    def get_token(self, token_hash: str) -> TokenRecord | None:
        item = self._get(f"token#{token_hash}", "token")
        return None if item is None else self._token(item)

    @staticmethod
    def _token(item: dict[str, Any]) -> TokenRecord:
        return TokenRecord(
            token_hash=item["pk"].removeprefix("token#"),
            token_id=item["token_id"],
            label=item.get("label", ""),
            created_at=num(item.get("created_at", 0)),
            reserved=tuple(item.get("reserved", ())),
            limits=limits(item.get("limits")),
            last_used=num(item.get("last_used", 0)),
        )

    def list_tokens(self) -> list[TokenRecord]:
        return [self._token(i) for i in self._listing(TOKENS_LISTING)]

    def _listing(self, listing: str) -> list[dict[str, Any]]:
        """Every item of one listing (all pages of one index partition): it reads the items
        listed and nothing else, however many answers visitor traffic has left in the table."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "IndexName": LISTING_INDEX,
            "KeyConditionExpression": Key(LISTING_KEY).eq(listing),
        }
        while True:
            page = self.table.query(**_expressions(kwargs))
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def delete_token(self, token_hash: str) -> None:
        self.table.delete_item(Key={"pk": f"token#{token_hash}", "sk": "token"})

    # Connections

    def put_connection(self, record: ConnectionRecord) -> None:
        self.table.put_item(
            Item={
                "pk": f"conn#{record.connection_id}",
                "sk": "conn",
                LISTING_KEY: CONNECTIONS_LISTING,
                "token_id": record.token_id,
                "connected_at": dec(record.connected_at),
                "expires_at": dec(record.expires_at),
                "names": list(record.names),
                "source_ip": record.source_ip,
                "ttl": _ttl(record.expires_at),
                **limits_attribute("limits", record.limits),
            }
        )

    def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        item = self._get(f"conn#{connection_id}", "conn")
        return None if item is None else self._connection(item)

    @staticmethod
    def _connection(item: dict[str, Any]) -> ConnectionRecord:
        return ConnectionRecord(
            connection_id=item["pk"].removeprefix("conn#"),
            token_id=item["token_id"],
            connected_at=num(item["connected_at"]),
            expires_at=num(item["expires_at"]),
            names=tuple(item.get("names", ())),
            source_ip=item.get("source_ip", ""),
            limits=limits(item.get("limits")),
            pooled=tuple(item.get("pooled", ())),
        )

    def set_connection_names(
        self, connection_id: str, names: tuple[str, ...], pooled: tuple[str, ...] = ()
    ) -> None:
        # A connection that is already gone has nothing to name: the refusal is the answer.
        self._conditionally(
            self.table.update_item,
            Key={"pk": f"conn#{connection_id}", "sk": "conn"},
            UpdateExpression="SET #names = :names, pooled = :pooled",
            ConditionExpression=Attr("pk").exists(),
            ExpressionAttributeNames={"#names": "names"},
            ExpressionAttributeValues={":names": list(names), ":pooled": list(pooled)},
        )

    def list_connections(self) -> list[ConnectionRecord]:
        # Connections that ended without $disconnect stay listed until TTL; callers check
        # ``alive(now)``.
        return [self._connection(i) for i in self._listing(CONNECTIONS_LISTING)]

    def delete_connection(self, connection_id: str) -> None:
        self.table.delete_item(Key={"pk": f"conn#{connection_id}", "sk": "conn"})

    # Claims

    @staticmethod
    def _replaceable(now: float, takeover_from: str | None, token_id: str) -> ConditionBase:
        """A new claim of ``token_id`` may replace the item: there is none, its lease ran out
        (a pool's: the latest it gave), it is an emptied pool, its agent of the same token left
        it (a restart), or its single holder is the connection ``takeover_from`` that the
        caller found dead."""
        condition = (
            Attr("pk").not_exists()
            | Attr("expires_at").lte(dec(now))
            | (
                Attr("members").exists()
                & Attr("members").size().eq(0)
                & Attr("left_at").not_exists()
            )
            | (Attr("left_at").exists() & Attr("token_id").eq(token_id))
        )
        if takeover_from is not None:
            condition = condition | Attr("connection_id").eq(takeover_from)
        return condition

    def claim_name(self, claim: Claim, now: float, takeover_from: str | None = None) -> bool:
        # A pool is never taken over by the same token's single agent: it asks to join.
        same_agent = (
            Attr("token_id").eq(claim.token_id)
            & Attr("pool").not_exists()
            & (
                Attr("instance").eq(claim.instance)
                if claim.instance
                else Attr("instance").not_exists()
            )
        )
        condition = self._replaceable(now, takeover_from, claim.token_id) | same_agent
        item = self._claim_item(claim)
        return self._conditionally(self.table.put_item, Item=item, ConditionExpression=condition)

    @staticmethod
    def _claim_item(claim: Claim) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": f"name#{claim.name}",
            "sk": "claim",
            LISTING_KEY: CLAIMS_LISTING,
            "token_id": claim.token_id,
            "expires_at": dec(claim.expires_at),
            "ttl": _ttl(claim.expires_at),
        }
        if claim.pool:
            item["pool"] = True
            item["pooled_since"] = dec(claim.pooled_since)
            item["members"] = {m.connection_id: member_item(m) for m in claim.members}
        else:
            item["connection_id"] = claim.connection_id
        # The tunnel's guards, only when set. The whole item is replaced, so a new claim never
        # inherits the guards of the one it replaces.
        for guard in CLAIM_GUARDS:
            if getattr(claim, guard) and getattr(claim, guard) != "refuse":
                item[guard] = getattr(claim, guard)
        if claim.access:
            item["access"] = json.dumps(codec.access_to_dict(claim.access))
        if not claim.gzip:
            item["gzip"] = False
        if claim.stream:
            item["stream"] = True
        item.update(limits_attribute("token_limits", claim.token_limits))
        if claim.left_at:
            item["left_at"] = dec(claim.left_at)
        return item

    def list_claims(self) -> list[Claim]:
        return [self._claim(i) for i in self._listing(CLAIMS_LISTING)]

    def get_claim(self, name: str) -> Claim | None:
        item = self._get(f"name#{name}", "claim")
        return None if item is None else self._claim(item)

    @staticmethod
    def _claim(item: dict[str, Any]) -> Claim:
        members = tuple(
            sorted(
                (member(connection_id, m) for connection_id, m in item.get("members", {}).items()),
                key=lambda m: (m.since, m.connection_id),
            )
        )
        return Claim(
            item["pk"].removeprefix("name#"),
            item.get("connection_id", ""),
            item["token_id"],
            num(item["expires_at"]),
            int(item.get("served", 0)),
            basic_auth=item.get("basic_auth", ""),
            webhook=item.get("webhook", ""),
            webhook_secret=item.get("webhook_secret", ""),
            large_responses=item.get("large_responses", "refuse"),
            gzip=bool(item.get("gzip", True)),
            stream=bool(item.get("stream", False)),
            instance=item.get("instance", ""),
            access=codec.access_from_dict(json.loads(item["access"]), "claim")
            if "access" in item
            else protocol.AccessRules(),
            token_limits=limits(item.get("token_limits")),
            pool=bool(item.get("pool", False)),
            members=members,
            pooled_since=num(item.get("pooled_since", 0)),
            left_at=num(item.get("left_at", 0)),
            refused=tuple(
                sorted(
                    (key.removeprefix(REFUSED_PREFIX), int(count))
                    for key, count in item.items()
                    if key.startswith(REFUSED_PREFIX)
                )
            ),
            **report_fields(item),
        )

    def renew_claim(
        self, name: str, connection_id: str, expires_at: float, report: TunnelReport | None = None
    ) -> bool:
        # The agent's report rides on the write a ping makes anyway.
        names = {"#ttl": "ttl"}
        values: dict[str, Any] = {":e": dec(expires_at), ":t": _ttl(expires_at)}
        sets = ["expires_at = :e", "#ttl = :t"]
        removes: list[str] = []
        if report is not None:
            more, removes = report_update(report, "", names, values)
            sets += more
        return self._conditionally(
            self.table.update_item,
            Key={"pk": f"name#{name}", "sk": "claim"},
            UpdateExpression=_update_expression(sets, removes),
            ConditionExpression=Attr("connection_id").eq(connection_id),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def count_refusals(self, name: str, counts: Mapping[str, int]) -> None:
        # One numeric attribute per cause (REFUSED_PREFIX + cause): ADD creates it at 0, and
        # a claim written afresh (a new holder) starts without them.
        if not counts:
            return
        names = {f"#c{i}": REFUSED_PREFIX + cause for i, cause in enumerate(counts)}
        values = {f":n{i}": count for i, count in enumerate(counts.values())}
        self._conditionally(
            self.table.update_item,
            Key={"pk": f"name#{name}", "sk": "claim"},
            UpdateExpression="ADD " + ", ".join(f"#c{i} :n{i}" for i in range(len(counts))),
            ConditionExpression=Attr("pk").exists(),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def release_claim(self, name: str, connection_id: str) -> bool:
        key = {"pk": f"name#{name}", "sk": "claim"}
        if self._conditionally(
            self.table.delete_item,
            Key=key,
            ConditionExpression=Attr("connection_id").eq(connection_id),
        ):
            return True
        # Not a single holder: perhaps a pool member (releases are rare; a second write is fine).
        left = self._remove_member(key, connection_id)
        if left is None:
            return False
        if not left.get("members"):
            # The last member left. Delete the item only while it is still empty: a member that
            # joined meanwhile keeps the pool (no transaction: one conditional delete).
            self._conditionally(
                self.table.delete_item,
                Key=key,
                ConditionExpression=Attr("members").exists() & Attr("members").size().eq(0),
            )
        return True

    def leave_claim(self, name: str, connection_id: str, now: float, hold_until: float) -> bool:
        key = {"pk": f"name#{name}", "sk": "claim"}
        left = {":now": dec(now), ":e": dec(hold_until), ":t": _ttl(hold_until)}
        mark = "SET left_at = :now, expires_at = :e, #ttl = :t"
        if self._conditionally(
            self.table.update_item,
            Key=key,
            UpdateExpression=mark,
            ConditionExpression=Attr("connection_id").eq(connection_id),
            ExpressionAttributeNames={"#ttl": "ttl"},
            ExpressionAttributeValues=left,
        ):
            return True
        # Not a single holder: perhaps a pool member, which leaves at once.
        item = self._remove_member(key, connection_id)
        if item is None:
            return False
        rest = self._claim(item)
        if not rest.holders(now):
            # It was the last live member: visitors wait for a restart, unless a member joined
            # since (the condition: the pool is still the one just written).
            self._conditionally(
                self.table.update_item,
                Key=key,
                UpdateExpression=mark,
                ConditionExpression="pooled_since = :since AND size(#members) = :count",
                ExpressionAttributeNames={"#ttl": "ttl", "#members": "members"},
                ExpressionAttributeValues={
                    **left,
                    ":since": dec(rest.pooled_since),
                    ":count": len(rest.members),
                },
            )
        return True

    def _remove_member(self, key: dict[str, str], connection_id: str) -> dict[str, Any] | None:
        """Remove one pool member with one conditional ``UpdateItem``: the item as it is then,
        or None if ``connection_id`` was no member."""
        try:
            item: dict[str, Any] = self.table.update_item(
                Key=key,
                UpdateExpression="REMOVE #members.#conn",
                ConditionExpression="attribute_exists(#members.#conn)",
                ExpressionAttributeNames={"#members": "members", "#conn": connection_id},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise
        return item

    # Pools

    def join_pool(self, claim: Claim, now: float, takeover_from: str | None = None) -> bool:
        (joining,) = claim.members
        key = {"pk": f"name#{claim.name}", "sk": "claim"}
        for _ in range(JOIN_ATTEMPTS):
            item = self._get(key["pk"], key["sk"])
            held = None if item is None else self._claim(item)
            if (
                held is None
                or now >= held.expires_at
                or (held.pool and not held.members and not held.left_at)
                or (held.left_at and held.token_id == claim.token_id)
                or (not held.pool and held.connection_id == takeover_from)
            ):
                if self._conditionally(
                    self.table.put_item,
                    Item=self._claim_item(claim),
                    ConditionExpression=self._replaceable(now, takeover_from, claim.token_id),
                ):
                    return True
                continue  # someone else wrote the name first: look again
            if (
                not held.pool
                or held.token_id != claim.token_id
                or pool_options(held) != pool_options(claim)
            ):
                return False
            # The same agent instance's earlier connection leaves as this one joins.
            stale = [
                m.connection_id
                for m in held.members
                if joining.instance
                and m.instance == joining.instance
                and m.connection_id != joining.connection_id
            ]
            staying = sum(
                m.connection_id != joining.connection_id and m.connection_id not in stale
                for m in held.members
            )
            if staying >= protocol.MAX_POOL_MEMBERS:
                return False
            names = {"#members": "members", "#ttl": "ttl", "#join": joining.connection_id}
            names.update({f"#stale{i}": c for i, c in enumerate(stale)})
            update = "SET #members.#join = :member, expires_at = :e, #ttl = :t"
            if stale:
                update += " REMOVE " + ", ".join(f"#members.#stale{i}" for i in range(len(stale)))
            # Only this incarnation of the pool (its options cannot change), and only while the
            # member count is what was read: a join or leave in between means look again.
            if self._conditionally(
                self.table.update_item,
                Key=key,
                UpdateExpression=update,
                ConditionExpression="pooled_since = :since AND token_id = :token "
                "AND size(#members) = :count",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    ":member": member_item(joining),
                    ":e": dec(joining.expires_at),
                    ":t": _ttl(joining.expires_at),
                    ":since": dec(held.pooled_since),
                    ":token": claim.token_id,
                    ":count": len(held.members),
                },
            ):
                return True
        return False

    def renew_member(
        self, name: str, connection_id: str, expires_at: float, report: TunnelReport | None = None
    ) -> int:
        # The member's lease and the item's (the latest any member got, which TTL follows).
        names = {"#members": "members", "#conn": connection_id, "#ttl": "ttl"}
        values: dict[str, Any] = {":e": dec(expires_at), ":t": _ttl(expires_at)}
        sets = ["#members.#conn.lease = :e", "expires_at = :e", "#ttl = :t"]
        removes: list[str] = []
        if report is not None:
            more, removes = report_update(report, "#members.#conn.", names, values)
            sets += more
        removes.append("left_at")  # a member alive again serves again
        try:
            item = self.table.update_item(
                Key={"pk": f"name#{name}", "sk": "claim"},
                UpdateExpression=_update_expression(sets, removes),
                ConditionExpression="attribute_exists(#members.#conn)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                # The pool's size comes back with the write: no read for the agent's pong.
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if _condition_failed(exc):
                return 0
            raise
        return len(item.get("members", {}))

    # Share links

    def put_share(self, record: ShareRecord) -> None:
        self.table.put_item(
            Item={
                "pk": f"share#{record.share_id}",
                "sk": "share",
                LISTING_KEY: SHARES_LISTING_PREFIX + record.token_id,
                "token_id": record.token_id,
                "tunnel": record.tunnel,
                "secret_hash": record.secret_hash,
                "methods": list(record.methods),
                "path": record.path,
                "expires_at": dec(record.expires_at),
                "max_uses": record.max_uses,
                "uses": record.uses,
                "revoked": record.revoked,
                "ttl": _ttl(record.expires_at),
            }
        )

    def get_share(self, share_id: str) -> ShareRecord | None:
        item = self._get(f"share#{share_id}", "share")
        return None if item is None else self._share(item)

    @staticmethod
    def _share(item: dict[str, Any]) -> ShareRecord:
        return ShareRecord(
            share_id=item["pk"].removeprefix("share#"),
            token_id=item["token_id"],
            tunnel=item["tunnel"],
            secret_hash=item["secret_hash"],
            methods=tuple(item.get("methods", ())),
            path=item.get("path", "/"),
            expires_at=num(item["expires_at"]),
            max_uses=int(item.get("max_uses", 0)),
            uses=int(item.get("uses", 0)),
            revoked=bool(item.get("revoked", False)),
        )

    def list_shares(self, token_id: str) -> list[ShareRecord]:
        # The token's own index partition: the WebSocket function may query no other.
        return [self._share(item) for item in self._listing(SHARES_LISTING_PREFIX + token_id)]

    def use_share(self, share_id: str, now: float) -> bool:
        usable = (
            Attr("revoked").eq(False)
            & Attr("expires_at").gt(dec(now))
            & (Attr("max_uses").eq(0) | Attr("uses").lt(Attr("max_uses")))
        )
        return self._conditionally(
            self.table.update_item,
            Key={"pk": f"share#{share_id}", "sk": "share"},
            UpdateExpression="ADD uses :one",
            ConditionExpression=usable,
            ExpressionAttributeValues={":one": 1},
        )

    def revoke_share(self, share_id: str, token_id: str) -> bool:
        return self._conditionally(
            self.table.update_item,
            Key={"pk": f"share#{share_id}", "sk": "share"},
            UpdateExpression="SET revoked = :yes",
            ConditionExpression=Attr("token_id").eq(token_id),
            ExpressionAttributeValues={":yes": True},
        )

    # Things seen once

    def first_sighting(self, key: str, expires_at: float) -> bool:
        return self._conditionally(
            self.table.put_item,
            Item={"pk": f"seen#{key}", "sk": "seen", "ttl": _ttl(expires_at)},
            ConditionExpression=Attr("pk").not_exists() | Attr("ttl").lt(int(self._clock.now())),
        )

    # The relay's own key

    def relay_key(self) -> bytes:
        item = self._get("relay", "key")
        if item is None:
            # Every function may race to create it: the first write wins, all read that one.
            self._conditionally(
                self.table.put_item,
                Item={"pk": "relay", "sk": "key", "key": secrets.token_bytes(RELAY_KEY_BYTES)},
                ConditionExpression=Attr("pk").not_exists(),
            )
            item = self._get("relay", "key")
        assert item is not None, "the relay key was just written"
        return binary_value(item["key"])

    # Reserved names

    def reserve_name(self, name: str, token_id: str) -> bool:
        return self._conditionally(
            self.table.put_item,
            Item={"pk": f"name#{name}", "sk": "reserved", "token_id": token_id},
            ConditionExpression=Attr("pk").not_exists() | Attr("token_id").eq(token_id),
        )

    def get_reservation(self, name: str) -> str | None:
        item = self._get(f"name#{name}", "reserved")
        return None if item is None else str(item["token_id"])

    def release_reservation(self, name: str, token_id: str) -> bool:
        return self._conditionally(
            self.table.delete_item,
            Key={"pk": f"name#{name}", "sk": "reserved"},
            ConditionExpression=Attr("token_id").eq(token_id),
        )

    # Responses

    def expect_response(self, request_id: str, connection_id: str, expires_at: float) -> None:
        """Nothing to write: the answer's item is keyed by the connection the request goes to,
        which only that connection can write (API Gateway sets it)."""
        self._awaited[request_id] = _Poll(connection_id, _poll_delays(0.0))

    def is_working(self, request_id: str) -> bool:
        awaited = self._awaited.get(request_id)
        if awaited is None:
            return False
        key = answer_key(request_id, awaited.connection_id)
        item = self._get(key["pk"], key["sk"])
        return bool(item and item.get(WORKING))

    def wait_response(self, request_id: str, until: float, hint: float = 0.0) -> bytes | None:
        """Poll one item: after ``hint`` (or 10 ms), then 1.5x further apart up to 200 ms, and
        at ``until``; the backoff goes on across calls (one per liveness check). Every miss is
        billed, at half price: a stale look only misses an answer (which never changes), and
        the last look, after which the waiter may give up, is strongly consistent."""
        awaited = self._awaited.get(request_id)
        if awaited is None:
            return None
        if hint > FIRST_POLL_SECONDS:
            awaited.delays = _poll_delays(hint)
        return self._poll(
            answer_key(request_id, awaited.connection_id), ANSWER, until, awaited.delays
        )

    def _poll(
        self, key: dict[str, str], attribute: str, until: float, delays: Iterator[float]
    ) -> bytes | None:
        """Look at one item until it holds ``attribute`` (which never changes once there),
        sleeping ``delays`` between looks: eventually consistent but the last, at ``until``."""
        while True:
            self._clock.sleep(min(next(delays), max(until - self._clock.now(), 0.0)))
            last = self._clock.now() >= until
            item = self._get(key["pk"], key["sk"], consistent=last)
            if item is not None and attribute in item:
                return binary_value(item[attribute])
            if last:
                return None

    def forget_response(self, request_id: str) -> None:
        """TTL removes the item for free; an explicit delete would be billed by its size."""
        self._awaited.pop(request_id, None)

    # Streamed bodies

    def put_chunk(self, request_id: str, connection_id: str, seq: int, data: bytes) -> None:
        """One item per chunk, keyed by the sending connection, so only the connection a
        request went to can write what its waiter reads; the first copy stays."""
        try:
            self.table.put_item(
                Item={
                    **chunk_key(request_id, connection_id, seq),
                    CHUNK: data,
                    "ttl": _ttl(self._clock.now() + protocol.STREAM_MAX_SECONDS),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if not _condition_failed(exc):  # else a second delivery of the same chunk
                raise

    def wait_chunk(self, request_id: str, seq: int, until: float) -> bytes | None:
        """Poll the chunk's one item as an answer's is, 10 ms growing to 200 ms apart."""
        awaited = self._awaited.get(request_id)
        if awaited is None:
            return None
        key = chunk_key(request_id, awaited.connection_id, seq)
        return self._poll(key, CHUNK, until, _poll_delays(0.0))
