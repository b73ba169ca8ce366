"""An agent's stored answer turned into the visitor's reply: checked once, as API Gateway
stored it; a fault as the relay's error page; the body inline (gzipped for a visitor that takes
gzip), fetched from the blob store, redirected to it, or streamed chunk by chunk."""

from __future__ import annotations

import logging
from typing import Protocol

from hatchway import protocol
from hatchway.protocol import ProtocolError, codec
from hatchway_relay import guards, visitor_gzip
from hatchway_relay.config import RelayConfig
from hatchway_relay.ports import BlobStore, BlobTooLarge, Claim, Clock, Store
from hatchway_relay.replies import (
    AgentReply,
    AwaitChunk,
    BodySteps,
    Reply,
    StreamCut,
    StreamedReply,
    error_reply,
)

log = logging.getLogger("hatchway.relay")

BLOB_URL_SECONDS = 60.0
"""Lifetime of the presigned URLs a request hands the agent (it uses them within the request's
deadline) and of a redirect to a large response (the visitor follows it at once)."""

STREAM_LIMITS = {
    "max": f"the stream ran past {protocol.STREAM_MAX_SECONDS:g} s, the longest one may run",
    "idle": f"the local app sent nothing for {protocol.STREAM_IDLE_SECONDS:g} s",
}
"""Why a streamed body was cut by the relay's own limits."""


class AnswerParts(Protocol):
    """What reading answers uses of the relay."""

    store: Store
    clock: Clock
    config: RelayConfig
    blobs: BlobStore | None


def forget_blob(relay: AnswerParts, key: str) -> None:
    """Delete a body the relay is done with: free on S3, memory back on the local gateway.
    Best effort: the bucket's lifecycle rule removes whatever is left within a day."""
    if relay.blobs is None:
        return
    try:
        relay.blobs.delete(key)
    except Exception as exc:  # never fail a visitor over housekeeping
        log.warning("could not delete blob %s: %s", key.split("/", 1)[0], exc)


class AnswerReader:
    """Replies from stored answers, for one relay."""

    def __init__(self, relay: AnswerParts) -> None:
        self.relay = relay

    def reply_from(
        self, request: protocol.Request, claim: Claim, answer: bytes, connection_id: str
    ) -> Reply:
        try:
            # API Gateway stored the agent's message as it came: it is checked here, once.
            message, zlib_stream = codec.unpack_stored(answer)
        except ProtocolError as exc:
            return error_reply(
                502, "agent-bad-response", f"The agent sent a malformed response: {exc}."
            )
        if not isinstance(message, protocol.Response) or message.id != request.id:
            return error_reply(502, "agent-bad-response", "The agent answered something else.")
        if message.fault is not None:
            status = message.status if message.status in protocol.FAULT_CODES else 502
            code = protocol.FAULT_CODES.get(status) or (
                "local-app-error" if message.fault.side == "local app" else "agent-error"
            )
            page = error_reply(
                status,
                code,
                f"The {message.fault.side} failed for tunnel {request.tunnel!r}: "
                f"{message.fault.message}",
            )
            return AgentReply(page.status, page.headers, page.body)
        headers = protocol.strip_hop_by_hop(message.headers)
        if message.streamed:
            if not (claim.stream and self.relay.config.streams):
                return error_reply(
                    502,
                    "agent-bad-response",
                    f"The agent streamed a response for tunnel {request.tunnel!r}, which was not "
                    "started with --stream.",
                )
            return StreamedReply(
                message.status, headers, body_steps=self._body_steps(request, connection_id)
            )
        if request.method == "HEAD":
            # No body follows, so the app's Content-Length is the only place its size shows.
            headers += tuple((n, v) for n, v in message.headers if n.lower() == "content-length")
        if message.uploaded is not None:
            return self._uploaded_reply(request, claim, message, headers)
        headers, body = visitor_gzip.for_visitor(
            enabled=claim.gzip,
            method=request.method,
            accept_encoding=guards.header(request.headers, "accept-encoding"),
            status=message.status,
            headers=headers,
            body=message.body,
            zlib_stream=zlib_stream,
        )
        return Reply(message.status, headers, body)

    def _body_steps(self, request: protocol.Request, connection_id: str) -> BodySteps:
        """A streamed body: each chunk the agent sent for ``request``, in order, as it lands;
        cut (``StreamCut``) when the agent says the app failed, when it goes, or when nothing
        comes for ``STREAM_IDLE_SECONDS`` or the stream passes ``STREAM_MAX_SECONDS``."""
        store, clock = self.relay.store, self.relay.clock
        ends_by = clock.now() + protocol.STREAM_MAX_SECONDS
        seq = 0
        try:
            yield b""  # started: from here closing the steps runs the cleanup below
            while True:
                idle_until = min(clock.now() + protocol.STREAM_IDLE_SECONDS, ends_by)
                stored = None
                while stored is None:
                    now = clock.now()
                    if now >= idle_until:
                        limit = "max" if idle_until >= ends_by else "idle"
                        raise StreamCut(STREAM_LIMITS[limit])
                    until = min(idle_until, now + self.relay.config.liveness_check_seconds)
                    stored = yield AwaitChunk(request.id, seq, until)
                    if stored is None:
                        connection = store.get_connection(connection_id)
                        if connection is None or not connection.alive(clock.now()):
                            raise StreamCut("the agent disconnected mid-stream")
                try:
                    chunk = codec.decode(stored)
                except ProtocolError as exc:
                    raise StreamCut(f"the agent sent a malformed chunk: {exc}") from None
                if not isinstance(chunk, protocol.Chunk) or (chunk.id, chunk.seq) != (
                    request.id,
                    seq,
                ):
                    raise StreamCut("the agent sent a chunk of something else")
                if chunk.body:
                    yield chunk.body
                if chunk.fault is not None:
                    raise StreamCut(chunk.fault)
                if chunk.end:
                    return
                seq += 1
        finally:
            store.forget_response(request.id)

    def _uploaded_reply(
        self,
        request: protocol.Request,
        claim: Claim,
        message: protocol.Response,
        headers: protocol.Headers,
    ) -> Reply:
        """A response whose body the agent put in the blob store."""
        key = f"resp/{request.id}"
        if self.relay.blobs is None:
            return error_reply(502, "agent-bad-response", "The agent uploaded to no blob store.")
        if message.uploaded is not None and message.uploaded > protocol.MAX_BODY_BYTES:
            if claim.large_responses == "redirect":
                location = self.relay.blobs.download_url(key, BLOB_URL_SECONDS)
                return Reply(302, (("location", location), ("cache-control", "no-store")))
            return self._too_large(request.tunnel, message.uploaded)
        try:
            body = self.relay.blobs.get(key, protocol.MAX_BODY_BYTES)
        except BlobTooLarge as exc:
            return self._too_large(request.tunnel, exc.size)
        finally:
            forget_blob(self.relay, key)
        if body is None or len(body) != message.uploaded:
            return error_reply(
                502,
                "agent-bad-response",
                f"The agent serving tunnel {request.tunnel!r} said it uploaded the response "
                "body, but the relay's blob store does not hold it.",
            )
        return Reply(message.status, headers, body)

    def _too_large(self, tunnel: str, size: int) -> Reply:
        return error_reply(
            413,
            "response-too-large",
            f"The local app behind tunnel {tunnel!r} answered with {size} bytes; the relay "
            f"returns at most {protocol.MAX_BODY_BYTES} bytes through its functions (Lambda's "
            "6 MB limit). Start the tunnel with --large-responses redirect to send larger "
            "responses as a redirect to a short-lived download link.",
        )
