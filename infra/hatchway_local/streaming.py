"""A streamed reply written to its visitor as the agent passes the app's body on: what a Lambda
function URL in response-streaming mode does, and API Gateway's HTTP API cannot.

The relay's body steps (``replies.BodySteps``) wait on the store for each chunk; they run on a
worker thread, as the store may block (DynamoDB), and each piece is written from the loop with
backpressure from the visitor's socket. A body the relay cuts (``StreamCut``) closes the
visitor's connection before the chunked body's last chunk, so no client takes it as whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from aiohttp import web

from hatchway_relay.replies import AwaitChunk, BodySteps, StreamCut

log = logging.getLogger("hatchway.local")


class ChunkSource(Protocol):
    """The relay's store, as a streamed body reads it (``Store.wait_chunk``)."""

    def wait_chunk(self, request_id: str, seq: int, until: float) -> bytes | None: ...


def _next_piece(steps: BodySteps, chunks: ChunkSource) -> bytes | None:
    """Run ``steps`` to the next piece of the body (None at its end), waiting for chunks."""
    sent: bytes | None = None
    try:
        while True:
            step = steps.send(sent)
            if isinstance(step, AwaitChunk):
                sent = chunks.wait_chunk(step.request_id, step.seq, step.until)
            else:
                return step
    except StopIteration:
        return None


async def write_streamed(
    request: web.BaseRequest,
    response: web.StreamResponse,
    steps: BodySteps,
    chunks: ChunkSource,
) -> web.StreamResponse:
    """Send ``response``'s head, then each piece ``steps`` gives as it comes, chunked."""
    loop = asyncio.get_running_loop()
    response.enable_chunked_encoding()
    steps.send(None)  # started (an empty piece, no wait): closing it now cleans up
    try:
        await response.prepare(request)
        while (piece := await loop.run_in_executor(None, _next_piece, steps, chunks)) is not None:
            await response.write(piece)
        await response.write_eof()
    except StreamCut as cut:
        log.warning("cut a streamed response to %s: %s", request.path, cut)
        if request.transport is not None:
            request.transport.close()
    finally:
        # The steps forget the stream in their own cleanup (a visitor who left ends it too).
        # A worker still inside them (the visitor's task was cancelled) leaves that to the
        # collector, which closes a suspended generator the same way.
        with contextlib.suppress(ValueError):
            await loop.run_in_executor(None, steps.close)
    return response
