"""The answer item: where an agent's answer to one visitor request is stored, and by whom.

API Gateway writes it, not a Lambda: template.yaml's answer integration turns each agent
message of type ``response`` or ``working`` into one DynamoDB ``UpdateItem`` on the item of
(request id, sending connection). The key names the connection, which only API Gateway sets, so
a connection can write answers only under its own id; the waiting HTTP function reads the item
of the connection it posted the request to. ``DynamoStore`` reads these items; the local
gateway's in-memory store is handed the same requests.
"""

from __future__ import annotations

from typing import Any

ANSWER_PK_PREFIX = "req#"
ANSWER_SK_PREFIX = "answer#"
"""The item's key: ``req#<request id>`` / ``answer#<connection id>``."""

ANSWER = "a"
"""Binary attribute: the answer's stored form (``codec.stored_answer``); the first one stays."""

WORKING = "w"
"""Boolean attribute: the agent said it is still on the request (``protocol.Working``)."""


CHUNK_SK_PREFIX = "chunk#"
CHUNK = "c"
"""A streamed body's chunk (on a relay whose front streams): ``req#<request id>`` /
``chunk#<connection id>#<number>``, the ``Chunk`` message as it came in binary attribute ``c``.
The WebSocket function writes these; only ``hatchway-local`` streams, so none exist on AWS."""


def chunk_key(request_id: str, connection_id: str, seq: int) -> dict[str, str]:
    """The key of the item holding chunk ``seq`` of ``connection_id``'s streamed answer."""
    return {"pk": ANSWER_PK_PREFIX + request_id, "sk": f"{CHUNK_SK_PREFIX}{connection_id}#{seq}"}


def answer_key(request_id: str, connection_id: str) -> dict[str, str]:
    """The key of the item holding ``connection_id``'s answer to ``request_id``."""
    return {"pk": ANSWER_PK_PREFIX + request_id, "sk": ANSWER_SK_PREFIX + connection_id}


def parse_answer_key(key: dict[str, Any]) -> tuple[str, str] | None:
    """(request id, connection id) of an answer item's key in DynamoDB's typed form, or None
    for any other key."""
    if set(key) != {"pk", "sk"}:
        return None
    pk = key["pk"].get("S", "") if isinstance(key["pk"], dict) else ""
    sk = key["sk"].get("S", "") if isinstance(key["sk"], dict) else ""
    if not pk.startswith(ANSWER_PK_PREFIX) or not sk.startswith(ANSWER_SK_PREFIX):
        return None
    return pk[len(ANSWER_PK_PREFIX) :], sk[len(ANSWER_SK_PREFIX) :]
